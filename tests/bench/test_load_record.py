"""bench.load's results file: every configuration kept once, the latest on top, the largest on-time run named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.load import record


def _run(trainers: int, windows: int, on_time: float, after_first: float | None = None) -> dict[str, Any]:
    return {"trainers": trainers, "validators": 2, "windows": windows, "window_blocks": 24,
            "on_time_fraction": on_time, "on_time_fraction_after_first_window": after_first,
            "reveal_success_fraction": 1.0}


def test_runs_accumulate_and_the_largest_on_time_run_is_named(tmp_path: Path) -> None:
    path = tmp_path / "load.json"
    record(_run(32, 10, 0.0), path)
    record(_run(16, 10, 1.0), path)
    record(_run(8, 10, 1.0), path)
    document = record(_run(16, 10, 0.9, 1.0), path)  # the same configuration again replaces the earlier entry
    assert json.loads(path.read_text()) == document
    assert [(r["trainers"], r["on_time_fraction"]) for r in document["runs"]] == [(8, 1.0), (16, 0.9), (32, 0.0)]
    assert document["trainers"] == 16 and document["on_time_fraction"] == 0.9
    assert document["largest_on_time"] == {"trainers": 8, "validators": 2, "windows": 10, "window_blocks": 24,
                                           "on_time_fraction": 1.0}
    assert document["largest_on_time_after_first_window"] == {
        "trainers": 16, "validators": 2, "windows": 10, "window_blocks": 24, "on_time_fraction_after_first_window": 1.0}


def test_no_run_on_time(tmp_path: Path) -> None:
    document = record(_run(32, 50, 0.5, 0.6), tmp_path / "load.json")
    assert document["largest_on_time"] is None and document["largest_on_time_after_first_window"] is None
