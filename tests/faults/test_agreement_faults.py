"""Validators agree on one model per window and cannot be forked, stalled or free-ridden (issue 14), on real
processes: a trainer withholding its payload from some validators, a validator frozen past whole windows, and a
validator copying the others' weights, each on the fault network (bench/faults/killnet.py). A few faults per
test; `python -m bench.faults --only withhold validator_lag weight_copier` runs many more.

Each test checks the scenario's own judgement (forks, stalled epochs, lost and double counts) and, directly on
the chain, the property it is about, so it fails when that property breaks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench.faults import consensus, lag, summarise, weight_copier, withhold
from bench.faults.agreement import VALIDATORS
from bench.faults.killnet import KillNet, KillNetSettings
from contracts.types import CommitStatus

pytestmark = pytest.mark.slow


def clean(outcomes: list) -> dict[str, int]:
    figures = summarise(outcomes)
    details = [o.detail for o in outcomes]
    for key in ("lost", "double_applied", "forks", "stalled_epochs"):
        assert figures[key] == 0, (key, details)
    assert figures["recovered"] == figures["faults_injected"], details
    return figures


def test_a_withheld_payload_is_a_miss_only_with_a_quorum_and_never_forks(tmp_path: Path) -> None:
    net = KillNet(KillNetSettings(trainers=3, validators=VALIDATORS, proxied=withhold.PROXIED, windows=6,
                                  run_seed=3), tmp_path).start()
    try:
        outcomes = withhold.scenario(4, net)
        assert clean(outcomes)["faults_injected"] == 4
        plan = withhold.schedule(net.first, 4)
        assert [w.kind for w in plan] == ["one_validator"] * 3 + ["two_validators"]
        victim = net.address(withhold.VICTIM).lower()
        missed = {int(g["args"]["window"]) for g in consensus.events(net, "PayloadUnavailable")
                  if str(g["args"]["trainer"]).lower() == victim}
        # Two of three validators could not fetch it: a miss, every such window; one of three: no miss.
        assert missed == {w.window for w in plan if w.kind == "one_validator"}
        slashed = [g for g in consensus.events(net, "TrainerSlashed") if str(g["args"]["trainer"]).lower() == victim]
        assert len(slashed) == 1  # three misses in a row reach the run's miss threshold (3)
        for w in plan:
            canonical = net.views.canonical_model(net.run_id, w.window)
            assert canonical.majority, w  # two validators agreed, whichever side the withholding took
            # Whoever published another model scored the next window on the canonical one (and recorded that).
            for name, base in consensus.published_bases(net, w.window + 1).items():
                assert base == canonical.cid, (w, name)
        adopters = {name for name, windows in consensus.audit(net).adopted.items()
                    if any(w.window + 1 in windows for w in plan)}
        assert adopters == {"validator-0", "validator-2"}  # each side of the rule lost once and followed
    finally:
        net.close()


def test_a_validator_frozen_past_a_window_catches_up_without_a_fork(tmp_path: Path) -> None:
    settings = KillNetSettings(trainers=2, validators=VALIDATORS, windows=8, run_seed=5)
    net = KillNet(settings, tmp_path).start()
    try:
        lags = lag.drive(net, 2, random.Random(5))
        net.wait_settled()
        assert clean(lag.judge(net, lags))["faults_injected"] == 2
        victim = net.address(lag.VICTIM).lower()
        for frozen in lags:
            window = frozen.window
            pub = next(p for v, p in net.views.publications(net.run_id, window).items() if v.lower() == victim)
            canonical = net.views.canonical_model(net.run_id, window)
            assert pub.block >= canonical.deadline  # it really missed the window: its publication did not count
            assert consensus.published_bases(net, window + 1)[lag.VICTIM] == canonical.cid
        for window in range(net.first, net.settle_through + 1):  # it published every window, once
            assert sum(v.lower() == victim for v in net.views.publications(net.run_id, window)) == 1
    finally:
        net.close()


def test_a_weight_copier_earns_nothing_and_stalls_nothing(tmp_path: Path) -> None:
    settings = KillNetSettings(trainers=2, validators=2, copiers=1, copier_modes=("wait", "guess"), windows=4,
                               run_seed=7)
    net = KillNet(settings, tmp_path).start()
    try:
        outcomes = weight_copier.scenario(net)
        assert clean(outcomes)["faults_injected"] == 2
        copier = net.address(weight_copier.COPIER)
        tried = weight_copier.attempts(net)
        results = [(e["mode"], e["action"], e["result"]) for epoch in sorted(tried) for e in tried[epoch]]
        # wait: the median is visible only once commits are closed; guess: a reveal must match its commitment.
        # (or the epoch is already settled by the time the copier sees the reveals)
        assert any(r[:2] == ("wait", "commit the median") and r[2] in ("reverted CommitPhaseOver",
                                                                         "reverted EpochOutOfOrder")
                   for r in results), results
        assert ("guess", "reveal the median", "reverted WeightsMismatch") in results, results
        assert not [g for g in consensus.events(net, "WeightsRevealed") if g["args"]["validator"] == copier]
        assert net.views.claimable(net.run_id, copier) == 0
        for i in range(settings.validators):
            assert net.views.claimable(net.run_id, net.address(f"validator-{i}")) > 0
        assert net.views.ballot_of(net.run_id, copier).status != CommitStatus.REVEALED
        assert json.dumps(results)  # the log is plain JSON (the scenario reads it back)
    finally:
        net.close()


def test_a_report_copier_earns_nothing_and_a_lagged_copier_is_disputed(tmp_path: Path) -> None:
    """`report`: the copier rebuilds an honest validator's ballot from its evaluation reports (before sealed
    reports, it was paid exactly an honest validator's share). Reports are sealed until the weight commits close,
    so it can commit nothing in time, and earns nothing. `lagged`: it commits the previous epoch's public
    consensus without evaluating and reveals junk reports of its own; its ballot is counted and credited (before
    disputes it kept 89% of an honest validator's share), then both honest validators find that its ballot does
    not follow from its reports and dispute it: their stake majority forfeits the credit before it is claimable,
    and neither honest validator is disputed."""
    settings = KillNetSettings(trainers=2, validators=2, copiers=1, copier_modes=("report", "lagged"), windows=4,
                               run_seed=7)
    net = KillNet(settings, tmp_path).start()
    try:
        outcomes = weight_copier.scenario(net)
        clean(outcomes)
        copier = net.address(weight_copier.COPIER)
        tried = weight_copier.attempts(net)
        wpe, first = settings.windows_per_epoch, net.first // settings.windows_per_epoch
        report_epoch, lagged_epoch = first, first + 1
        credited = {(int(g["args"]["epoch"]), str(g["args"]["validator"])): g["args"]
                    for g in consensus.events(net, "ValidatorCredited")}
        # report: any commit it tried came after the commit phase; it revealed no weights and was paid nothing
        report_tries = [(e["action"], e["result"]) for e in tried.get(report_epoch, [])]
        assert all(r in ("reverted CommitPhaseOver", "reverted EpochOutOfOrder") for a, r in report_tries
                   if a == "commit"), report_tries
        assert not [g for g in consensus.events(net, "WeightsRevealed")
                    if g["args"]["validator"] == copier and int(g["args"]["epoch"]) == report_epoch]
        assert (report_epoch, copier) not in credited or credited[(report_epoch, copier)]["amount"] == 0
        for i in range(settings.validators):
            honest = net.address(f"validator-{i}")
            assert credited[(report_epoch, honest)]["amount"] > 0
            assert all(net.views.publications(net.run_id, w)[honest].report_cid
                       for w in range(report_epoch * wpe, (report_epoch + 1) * wpe))  # revealed, on chain
        # lagged: its ballot and its (junk) reports were accepted and credited, then the credit was forfeited
        lagged = [o.detail for o in outcomes if "lagged" in o.fault or "lagged" in o.detail]
        assert any("lagged copier agreement" in d for d in lagged), [o.detail for o in outcomes]
        assert net.views.reports_revealed(net.run_id, copier, lagged_epoch)
        assert credited[(lagged_epoch, copier)]["amount"] > 0
        forfeits = {(int(g["args"]["epoch"]), str(g["args"]["validator"])): int(g["args"]["amount"])
                    for g in consensus.events(net, "ValidatorCreditForfeited")}
        assert forfeits == {(lagged_epoch, copier): credited[(lagged_epoch, copier)]["amount"]}
        disputes = {(str(g["args"]["disputer"]), str(g["args"]["accused"]))
                    for g in consensus.events(net, "BallotDisputed")}
        honest = {net.address(f"validator-{i}") for i in range(settings.validators)}
        assert disputes == {(v, copier) for v in honest}  # both honest validators, against the copier only
        for v in honest:
            assert credited[(lagged_epoch, v)]["amount"] > 0
        assert net.views.claimable(net.run_id, copier) == 0
        held = net.views.held_credit(net.run_id, copier)
        assert held.amount == 0 and held.forfeited
        print(json.dumps({"lagged": lagged, "forfeited": {f"{e}:{v}": a for (e, v), a in forfeits.items()},
                          "credited": {f"{e}:{v}": int(a["amount"]) for (e, v), a in credited.items()}}))
    finally:
        net.close()
