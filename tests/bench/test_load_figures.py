"""bench.load's scored fraction, read back from real validator stores: every revealed contribution is scored or
unscored for a reason, and what no reason covers is counted apart."""

from __future__ import annotations

import json
from pathlib import Path

from bench.load_figures import validator_figures
from validator.store import ValidatorStore


def _store(path: Path, stats: dict[int, dict[str, object]]) -> Path:
    with ValidatorStore(path) as store:
        for window, values in stats.items():
            store.set_value(f"window:{window}:stats", json.dumps(values))
    return path


def test_unscored_contributions_are_counted_by_reason(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.sqlite3", {
        3: {"revealed": 4, "well_formed": 4, "scored": 4, "unscored": {}},
        4: {"revealed": 4, "well_formed": 3, "scored": 2, "unscored": {"malformed": 1, "unreliable": 1}},
    })
    b = _store(tmp_path / "b.sqlite3", {
        3: {"revealed": 4, "well_formed": 4, "scored": 4, "unscored": {}},
        4: {"revealed": 4, "well_formed": 4, "scored": 3, "unscored": {}},  # one revealed, unscored, no reason
    })
    figures = validator_figures([a, b], 3, 4)
    assert figures["contributions_revealed"] == 16 and figures["contributions_scored"] == 13
    assert figures["scored_fraction"] == round(13 / 16, 4)
    assert figures["unscored_by_reason"] == {"malformed": 1, "unreliable": 1}
    assert figures["unscored_unaccounted"] == 1
    assert [v["scored_fraction"] for v in figures["scored_by_validator"]] == [0.75, 0.875]
