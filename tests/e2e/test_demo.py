"""The marketplace end to end, as `make demo` runs it but smaller: real Anvil, real js-ipfs, two validator
processes and a crowd of honest and adversarial trainer processes. One run, many assertions."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from base.process import port_open
from trainmarket.demo.orchestrator import DemoSettings, run_demo

pytestmark = pytest.mark.slow

# Bounds sit near what the demo measured on 2 loaded cores, with the margin stated beside each. Since each epoch
# pays only the payout its evidence supports (issue 13: Σ final / Σ potential, 6% and 9% of the trainers' reward
# in the two epochs here), immature first windows no longer hand an epoch to one trainer. Two runs of this one (4
# honest): honest share 0.921 and 0.950, lowest honest 0.86 and 0.91 of the mean, the stale trainer 0.031 and
# 0.010, one Sybil 0.029 at most (the swarm does one trainer's real work), the copier 0, loss 4.66 -> 3.18 and
# -> 3.02 falling every window. Before the payout the same run gave honest 0.734 once, the stale trainer 0.255.
MIN_HONEST_SHARE = 0.85  # measured 0.921 and 0.950
MAX_STALE_SHARE = 0.10  # measured 0.031 and 0.010 (it trains for real on a stale base, paid while it is accepted)
MAX_SYBIL_SHARE = 0.08  # each identity; measured 0.029 at most (the swarm's total: copier + Sybils test)
# The copier trains honestly in its first window (there is nothing to copy yet) and may be paid for that window
# (0.044 of the rewards in one run before the payout); from its first copy on it is rejected (the verdict test).
MAX_COPIER_SHARE = 0.06
MAX_OTHER_ADVERSARY_SHARE = 0.01  # every other adversary identity: measured 0
MIN_LOSS_DROP = 0.8  # measured drops 1.41 and 1.77
# Measured 3.25 and 3.03 at the last window. The drop alone misses slow learning: with the outer learning rate
# cut to a fifth (two broken-build runs) the loss still fell every window, by 1.16 and 0.97 (5.26 -> 4.11 and
# -> 4.29), because the first window's loss is already after one small step; the final loss catches it.
MAX_FINAL_LOSS = 3.7
MIN_HONEST_PAY_OVER_MEAN = 0.6  # measured 0.86 and 0.91 (0.51 and 0.59 before the payout)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> dict[str, Any]:
    out: Path = tmp_path_factory.mktemp("demo")
    chain = pytestconfig.getoption("--chain")  # `pytest tests/e2e --chain ganache` runs it on Ganache
    path = run_demo(DemoSettings(honest=4, sybils=3, epochs=2, windows_per_epoch=3, out_dir=out, quiet=True,
                                 chain=chain, audit=True))
    assert path == out.resolve() / "report.json"
    assert (out / "report.md").exists() and (out / "report.png").stat().st_size > 0
    data: dict[str, Any] = json.loads(path.read_text())
    data["_out"] = str(out)
    return data


def _paid(report: dict[str, Any], role: str) -> list[int]:
    return [t["claimed_wei"] for t in report["trainers"] if t["role"] == role]


def test_honest_trainers_receive_most_of_the_rewards(report: dict[str, Any]) -> None:
    assert report["trainers_paid_wei"] > 0
    assert report["honest_reward_share"] >= MIN_HONEST_SHARE, report["reward_share_by_role"]


def test_identical_honest_work_is_paid_alike(report: dict[str, Any]) -> None:
    """Issue 13: five identical honest trainers were paid 11.93 to 0.0026 ETH under the old scoring."""
    honest = [t["claimed_wei"] for t in report["trainers"] if t["honest"]]
    assert report["honest_pay_min_over_mean"] >= MIN_HONEST_PAY_OVER_MEAN, honest


def test_every_adversary_gets_at_most_a_small_share(report: dict[str, Any]) -> None:
    paid = report["trainers_paid_wei"]
    for t in report["trainers"]:
        if not t["honest"]:
            bound = {"stale": MAX_STALE_SHARE, "sybil": MAX_SYBIL_SHARE, "copier": MAX_COPIER_SHARE}.get(
                t["role"], MAX_OTHER_ADVERSARY_SHARE)
            assert t["claimed_wei"] / paid <= bound, (t["name"], report["reward_share_by_role"])


def test_copier_and_sybils_together_earn_less_than_half_an_honest_trainer(report: dict[str, Any]) -> None:
    honest = _paid(report, "honest")  # measured 0.10 of an honest trainer: 5x margin
    assert sum(_paid(report, "copier")) + sum(_paid(report, "sybil")) <= 0.5 * sum(honest) / len(honest)


def _verdicts(report: dict[str, Any], name: str) -> list[dict[int, str]]:
    """Per validator: window -> what it decided about trainer `name` (validators' /windows/{w})."""
    return [{int(w): v for w, v in by_name.get(name, {}).items()} for by_name in report["verdicts_by_validator"]]


def _windows(report: dict[str, Any]) -> list[int]:
    return sorted(int(w) for w in report["loss_by_window"])


def test_the_copier_is_rejected_from_its_first_copy_on(report: dict[str, Any]) -> None:
    # The run's first window has no earlier reveal to copy, so the copier trains; from the second on it copies.
    windows = _windows(report)
    for verdicts in _verdicts(report, "copier"):
        assert {w: verdicts.get(w) for w in windows[1:]} == {w: "copy_of_earlier" for w in windows[1:]}, verdicts


def test_the_stale_trainer_is_rejected_as_stale_once_its_base_is_too_old(report: dict[str, Any]) -> None:
    # It trains from the initial model: the canonical base of its first window, one window old in the second
    # (max_stale_windows = 1, accepted with its age recorded), too old from the third on.
    windows = _windows(report)
    for verdicts in _verdicts(report, "stale"):
        assert {w: verdicts.get(w) for w in windows[2:]} == {w: "stale" for w in windows[2:]}, verdicts
        assert all(verdicts.get(w) in ("aggregated", "scored") for w in windows[:2]), verdicts


def test_poison_noise_and_zero_updates_never_enter_the_model(report: dict[str, Any]) -> None:
    for name in ("poisoner", "noise", "zero"):
        for verdicts in _verdicts(report, name):
            assert len(verdicts) == report["windows"] and "aggregated" not in verdicts.values(), (name, verdicts)


def test_at_most_one_sybil_enters_the_model_per_window(report: dict[str, Any]) -> None:
    sybils = [t["name"] for t in report["trainers"] if t["role"] == "sybil"]
    for v in range(len(report["verdicts_by_validator"])):
        for w in _windows(report):
            aggregated = [s for s in sybils if _verdicts(report, s)[v].get(w) == "aggregated"]
            assert len(aggregated) <= 1, (w, aggregated)


def test_the_free_rider_is_slashed(report: dict[str, Any]) -> None:
    rider = next(t for t in report["trainers"] if t["role"] == "freerider")
    assert rider["slashed"] and rider["stake_left_wei"] < rider["stake_at_start_wei"], rider
    assert report["slashed_wei"] == rider["stake_at_start_wei"] - rider["stake_left_wei"]  # nobody else


def test_every_validator_passes_the_audit(report: dict[str, Any]) -> None:
    assert len(report["audit"]) == len(report["verdicts_by_validator"]) == 2
    for name, audit in report["audit"].items():
        assert audit["ok"] and audit["mismatches"] == 0 and audit["exit_code"] == 0, (name, audit)


def test_global_model_loss_goes_down_despite_the_poisoner(report: dict[str, Any]) -> None:
    losses = [report["loss_by_window"][w] for w in sorted(report["loss_by_window"], key=int)]
    assert len(losses) == report["windows"]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses  # every window
    assert losses[-1] < losses[0] - MIN_LOSS_DROP, losses
    assert losses[-1] <= MAX_FINAL_LOSS, losses


def test_malformed_payloads_are_recorded_rejections(report: dict[str, Any]) -> None:
    malformed = {t["address"].lower() for t in report["trainers"] if t["role"] == "malformed"}
    reasons = [r["reason"] for r in report["rejections"] if r["trainer"] in malformed]
    # Every window it revealed in was refused as malformed (a window it was too slow to reveal in, on a loaded
    # machine, is a recorded miss instead); never scored, never a crash of the validators.
    assert reasons.count("malformed") >= report["windows"] - 1, reasons
    assert set(reasons) <= {"malformed", "nonfinite_loss", "missing_reveal"}, reasons
    assert not any(t["rating_ordinal"] is not None for t in report["trainers"] if t["role"] == "malformed")
    freerider = {t["address"].lower() for t in report["trainers"] if t["role"] == "freerider"}
    assert any(r["trainer"] in freerider and r["reason"] == "missing_reveal" for r in report["rejections"])


def test_no_reward_paid_twice_and_the_pool_balances(report: dict[str, Any]) -> None:
    assert report["unclaimed_after_claims_wei"] == 0
    deposited = report["pool_deposited_wei"] + report["slashed_wei"]
    spent = report["trainers_paid_wei"] + report["validators_paid_wei"]
    assert report["pool_left_wei"] + spent == deposited


def test_each_epoch_pays_trainers_the_payout_its_validators_voted(report: dict[str, Any]) -> None:
    """Issue 13: an epoch pays the trainers the payout its validators agree on (Σ final / Σ potential, the share
    of the reward the records' evidence supports), and the rest stays in the pool. Two validators of equal stake:
    the agreed payout is the smaller vote."""
    payouts = report["payout_by_epoch"]
    assert len(payouts) == report["epochs"]
    for epoch, p in payouts.items():
        assert len(p["voted"]) == 2, epoch
        assert p["credited_fraction"] == pytest.approx(min(p["voted"]), rel=1e-6), epoch
    # Six windows of the tiny model are far from a mature record (evidence prior 10): no epoch pays in full, but
    # the last one pays something.
    assert all(p["credited_fraction"] < 0.5 for p in payouts.values()), payouts
    assert payouts[max(payouts, key=int)]["credited_fraction"] > 0.0, payouts


def test_both_validators_published_every_window_and_agree(report: dict[str, Any]) -> None:
    assert report["windows_published_by_every_validator"] == report["windows"]
    assert report["validators_agree"] is True


def test_nothing_is_left_running(report: dict[str, Any]) -> None:
    deployment = json.loads((Path(report["_out"]) / "deployment.json").read_text())
    started = report["started"]
    assert int(deployment["rpc_url"].rsplit(":", 1)[1]) in started["ports"]
    assert len(started["pids"]) == len(report["verdicts_by_validator"]) + len(report["trainers"])
    assert [p for p in started["ports"] if port_open(p)] == []
    alive = []
    for pid in started["pids"]:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    assert alive == [], alive
