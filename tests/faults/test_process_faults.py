"""Process-kill faults on real processes (issue 8): the validator and trainers SIGKILLed at random points of
their windows and restarted, on the demo's launcher with the gated block clock (bench/faults/killnet.py).
A few kills per test; `python -m bench.faults --only validator_sigkill trainer_sigkill` runs many more.

Each outcome is judged against ground truth (chain events, the parties' state files, and for the validator an
uninterrupted validator of the same run), so these tests fail when a kill loses or doubles anything."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.faults import summarise
from bench.faults.processes import trainer_sigkill, validator_sigkill

pytestmark = pytest.mark.slow


def test_killed_validator_republishes_the_reference_reports_and_weights(tmp_path: Path) -> None:
    outcomes = validator_sigkill(2, random.Random(11), tmp_path)
    figures = summarise(outcomes)
    details = [o.detail for o in outcomes]
    # Two kills, each followed by a restart from SQLite that published the window it was working on; every
    # window's model CID and sealed report CID and every epoch's weight bytes equal the uninterrupted validator's,
    # and every epoch it voted on has its reports revealed (else its share is lost).
    assert figures["faults_injected"] == 2, details
    assert figures["lost"] == 0 and figures["double_applied"] == 0, details
    assert figures["recovered"] == 2, details


def test_killed_trainers_reveal_or_record_the_miss_and_never_commit_twice(tmp_path: Path) -> None:
    outcomes = trainer_sigkill(4, random.Random(5), tmp_path)
    figures = summarise(outcomes)
    details = [o.detail for o in outcomes]
    # One kill of each kind (during training, between commit and reveal, during publish, late restart).
    assert sorted(o.fault.removeprefix("SIGKILL trainer ") for o in outcomes) == [
        "commit_to_reveal", "during_publish", "during_training", "late_restart"], details
    assert figures["lost"] == 0 and figures["double_applied"] == 0, details
    assert figures["recovered"] == 4, details
    late = next(o for o in outcomes if o.fault.endswith("late_restart"))
    assert "reveal period closed" in late.detail, late.detail  # the miss is in the journal, with its reason
