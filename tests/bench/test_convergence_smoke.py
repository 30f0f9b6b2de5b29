"""CI smoke of `python -m bench.convergence --small`: it runs end to end (real trainer, codec, payload and
validator paths) and writes its results file and plot. The targets are measured by the benchmark, not here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.convergence import GPU, dry_run, parallel_efficiency
from node.model import PRESETS

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("loss_ratio", "loss_ratio_adversarial", "parallel_efficiency", "single_node_loss", "compression_ratio",
             "device", "params", "tokens", "dense_loss_ratio", "bytes_per_trainer_window", "dense_bf16_bytes", "wall_s")


@pytest.mark.slow
def test_small_configuration_runs_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "convergence.json"
    subprocess.run([sys.executable, "-m", "bench.convergence", "--small", "--device", "cpu", "--windows", "2",
                    "--trainers", "2", "--inner-steps", "3", "--out", str(out)], cwd=REPO, check=True, timeout=600,
                   capture_output=True, text=True)
    report = json.loads(out.read_text())
    assert set(TOP_LEVEL) <= set(report)
    assert report["device"] == "cpu" and report["params"] > 0
    assert report["tokens"] == 2 * 3 * 2 * 8 * 64  # windows · inner steps · trainers · sequences · length
    for run in (report["marketplace"], report["marketplace_adversarial"], report["marketplace_dense"]):
        assert len(run["loss_per_window"]) == 2 and all(math.isfinite(x) for x in run["loss_per_window"])
    assert len(report["baseline"]["swept"]) >= 3  # the baseline's learning rate is swept, not guessed
    assert report["compression_ratio"] > 1
    assert out.with_suffix(".png").stat().st_size > 0
    # The dense reference aggregates every honest update (the copy filter must not cluster dense updates).
    assert report["marketplace_dense"]["aggregated_per_window"] == [2, 2]


def test_parallel_efficiency_definition() -> None:
    assert parallel_efficiency(single=3.0, market=2.5, central=2.5) == 1.0
    assert parallel_efficiency(single=3.0, market=3.0, central=2.5) == 0.0
    assert parallel_efficiency(single=3.0, market=3.5, central=2.5) == -1.0


@pytest.mark.slow
def test_gpu_setup_builds_and_runs_one_window_on_cpu() -> None:
    """The `--gpu` command's dry run: its ≥ 50M-parameter model, its data and one marketplace window."""
    report = dry_run(GPU, torch.device("cpu"))
    assert report["params"] >= 50_000_000
    assert GPU.preset in PRESETS and math.isfinite(report["loss_after_one_window"])
