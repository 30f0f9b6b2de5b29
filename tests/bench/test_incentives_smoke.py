"""CI smoke of `python -m bench.incentives --quick`: the tournament runs end to end (real trainer, codec, payload
and validator paths) and writes bench/results/incentives.json in the issue's schema. The full tournament's
bounds are measured by the benchmark itself, not here (5 windows are too few for them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.incentives import markets, settle
from bench.strategies import LIBRARY

REPO = Path(__file__).resolve().parents[2]


def test_markets_keep_honest_trainers_the_majority_of_every_market() -> None:
    groups = markets(LIBRARY)
    by_name = {s.name: s for s in LIBRARY}
    assert sorted(n for g in groups for n in g) == sorted(by_name)
    for group in groups:
        for passive in (True, False):
            assert sum(by_name[n].identities for n in group if by_name[n].passive == passive) <= 3


def test_settle_pays_each_epoch_its_payout_like_the_contract() -> None:
    """Each epoch pays Σ final / Σ potential of its reward (validator/scoring.epoch_payout), pro rata to finals:
    an epoch of immature finals (potential 100× the final) pays a hundredth of what a mature one pays, so a
    trainer that leads it by a hair no longer takes most of a whole epoch's reward."""
    run = {"roles": {"a": "honest", "b": "x"}, "scores": [
        {"window": 0, "trainer": "a", "final": 0.001, "potential": 0.1},
        {"window": 0, "trainer": "b", "final": 0.003, "potential": 0.3},
        {"window": 1, "trainer": "a", "final": 0.9, "potential": 0.9},
        {"window": 1, "trainer": "b", "final": 0.1, "potential": 0.1},
        {"window": 2, "trainer": "a", "final": 0.0, "potential": 0.0}]}
    # window 0 pays 0.004 / 0.4 = 1% of its reward; window 2: nobody scored above 0
    assert settle(run, 1) == pytest.approx({"a": 0.0025 + 0.9, "b": 0.0075 + 0.1})
    payout = 1.004 / 1.4  # two windows as one epoch: Σ final / Σ potential
    assert settle(run, 2) == pytest.approx({"a": payout * 0.901 / 1.004, "b": payout * 0.103 / 1.004})
    # The whole run as one epoch (the headline): pay in proportion to the summed finals.
    assert settle(run, 3)["b"] / settle(run, 3)["a"] == pytest.approx(0.103 / 0.901)


@pytest.mark.slow
def test_quick_tournament_writes_the_issue_schema(tmp_path: Path) -> None:
    out = tmp_path / "incentives.json"
    subprocess.run([sys.executable, "-m", "bench.incentives", "--quick", "--jobs", "1", "--out", str(out)],
                   cwd=REPO, check=True, timeout=600, capture_output=True, text=True)
    report = json.loads(out.read_text())
    assert set(report) == {"strategies", "honest", "windows", "seeds"}
    assert report["windows"] == 5 and report["seeds"] == [1]
    assert set(report["honest"]) == {"max_over_min", "cv"}
    for name, row in report["strategies"].items():
        assert set(row) == {"pay_vs_honest", "compute_fraction", "identities"}, name
        assert row["pay_vs_honest"] >= 0.0 and row["compute_fraction"] >= 0.0
    assert report["strategies"]["split_2"]["identities"] == 2
    assert report["strategies"]["half_steps"]["compute_fraction"] == pytest.approx(0.5)
    assert report["strategies"]["replay_step"]["compute_fraction"] == 0.0
    assert report["strategies"]["replay_step"]["pay_vs_honest"] <= 0.05  # a public step earns nothing
    detail = json.loads(out.with_name("incentives-detail.json").read_text())
    assert {"honest_false_negative_rate", "generic_false_positive_rate"} <= set(detail["indicator"])
