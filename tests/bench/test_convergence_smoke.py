"""CI smoke of `python -m bench.convergence --small`: it runs end to end (real trainer, codec, payload and
validator paths) and writes its results file and plot. The targets are measured by the benchmark, not here."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from base.model import PRESETS, build_model
from bench.convergence import GPU, dry_run, main, parallel_efficiency

TOP_LEVEL = ("loss_ratio", "loss_ratio_adversarial", "parallel_efficiency", "single_node_loss", "compression_ratio",
             "device", "params", "tokens", "dense_loss_ratio", "bytes_per_trainer_window", "dense_bf16_bytes", "wall_s")


@pytest.mark.slow
def test_small_configuration_runs_and_writes_its_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """In this process (the command's own `main`; a subprocess only paid another torch import) and one inner step
    per window: what is smoked is that every part runs and reports, not how well it trains."""
    out = tmp_path / "convergence.json"
    main(["--small", "--device", "cpu", "--windows", "2", "--trainers", "2", "--inner-steps", "1", "--out", str(out)])
    assert '"loss_ratio"' in capsys.readouterr().out  # the summary it prints
    report = json.loads(out.read_text())
    assert set(TOP_LEVEL) <= set(report)
    assert report["device"] == "cpu" and report["params"] > 0
    assert report["tokens"] == 2 * 1 * 2 * 8 * 64  # windows · inner steps · trainers · sequences · length
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
    """The `--gpu` command's dry run: its ≥ 50M-parameter model is built, and one marketplace window runs on that
    model cut to one of its 8 layers. Every tensor shape of the GPU model is in that layer and the embeddings (the
    layers are alike), so the codec, payload and scoring paths see what the GPU run will. Measured on the shared
    2-core machine (pytest --durations): 241 s with all 8 layers, 19 s with one."""
    assert dict(GPU.overrides)["n_layer"] == 8
    one_layer = replace(GPU, overrides=(*(kv for kv in GPU.overrides if kv[0] != "n_layer"), ("n_layer", 1)))
    full, cut = build_model(GPU.config()), build_model(one_layer.config())
    assert full.num_params() >= 50_000_000
    assert {tuple(p.shape) for p in full.parameters()} == {tuple(p.shape) for p in cut.parameters()}
    del full
    report = dry_run(one_layer, torch.device("cpu"))
    assert GPU.preset in PRESETS and math.isfinite(report["loss_after_one_window"])
