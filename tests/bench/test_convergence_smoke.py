"""CI smoke of `python -m bench.convergence --small`: it runs end to end (real trainer, codec, payload and
validator paths) and writes its results file and plot. The targets are measured by the benchmark, not here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("loss_ratio", "loss_ratio_adversarial", "compression_ratio", "device", "params", "tokens",
             "loss_ratio_vs_single_node", "bytes_per_trainer_window", "dense_bf16_bytes", "wall_s")


def test_small_configuration_runs_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "convergence.json"
    subprocess.run([sys.executable, "-m", "bench.convergence", "--small", "--device", "cpu", "--windows", "2",
                    "--trainers", "2", "--inner-steps", "3", "--out", str(out)], cwd=REPO, check=True, timeout=600,
                   capture_output=True, text=True)
    report = json.loads(out.read_text())
    assert set(TOP_LEVEL) <= set(report)
    assert report["device"] == "cpu" and report["params"] > 0
    assert report["tokens"] == 2 * 3 * 2 * 8 * 64  # windows · inner steps · trainers · sequences · length
    for run in (report["marketplace"], report["marketplace_adversarial"]):
        assert len(run["loss_per_window"]) == 2 and all(math.isfinite(x) for x in run["loss_per_window"])
    assert len(report["baseline"]["swept"]) >= 3  # the baseline's learning rate is swept, not guessed
    assert report["compression_ratio"] > 1
    assert out.with_suffix(".png").stat().st_size > 0
