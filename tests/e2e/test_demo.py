"""The marketplace end to end, as `make demo` runs it but smaller: real Anvil, real js-ipfs, two validator
processes and a crowd of honest and adversarial trainer processes. One run, many assertions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainmarket.demo.orchestrator import DemoSettings, run_demo
from trainmarket.process import port_open

pytestmark = pytest.mark.slow

# The bound this run reaches for any single adversary identity (see the closing note of the demo issue).
MAX_ADVERSARY_SHARE = 0.05


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> dict[str, Any]:
    out: Path = tmp_path_factory.mktemp("demo")
    chain = pytestconfig.getoption("--chain")  # `pytest tests/e2e --chain ganache` runs it on Ganache
    path = run_demo(DemoSettings(honest=4, sybils=3, epochs=2, windows_per_epoch=3, out_dir=out, quiet=True,
                                 chain=chain))
    assert path == out.resolve() / "report.json"
    assert (out / "report.md").exists() and (out / "report.png").stat().st_size > 0
    data: dict[str, Any] = json.loads(path.read_text())
    data["_out"] = str(out)
    return data


def _paid(report: dict[str, Any], role: str) -> list[int]:
    return [t["claimed_wei"] for t in report["trainers"] if t["role"] == role]


def test_honest_trainers_receive_at_least_90_percent(report: dict[str, Any]) -> None:
    assert report["trainers_paid_wei"] > 0
    assert report["honest_reward_share"] >= 0.9, report["reward_share_by_role"]


def test_identical_honest_work_is_paid_alike(report: dict[str, Any]) -> None:
    """Issue 13: five identical honest trainers were paid 11.93 to 0.0026 ETH under the old scoring."""
    assert report["honest_pay_min_over_mean"] >= 0.5, [t["claimed_wei"] for t in report["trainers"] if t["honest"]]


def test_every_adversary_gets_at_most_a_small_share(report: dict[str, Any]) -> None:
    assert report["max_adversary_share"] <= MAX_ADVERSARY_SHARE, report["reward_share_by_role"]


def test_copier_and_sybils_together_earn_less_than_one_honest_trainer(report: dict[str, Any]) -> None:
    honest = _paid(report, "honest")
    assert sum(_paid(report, "copier")) + sum(_paid(report, "sybil")) <= sum(honest) / len(honest)


def test_global_model_loss_goes_down_despite_the_poisoner(report: dict[str, Any]) -> None:
    losses = [report["loss_by_window"][w] for w in sorted(report["loss_by_window"], key=int)]
    assert len(losses) == report["windows"]
    assert report["loss_last"] < report["loss_first"]
    assert losses[-1] < losses[0] - 0.1


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


def test_both_validators_published_every_window_and_agree(report: dict[str, Any]) -> None:
    assert report["windows_published_by_every_validator"] == report["windows"]
    assert report["validators_agree"] is True


def test_nothing_is_left_running(report: dict[str, Any]) -> None:
    deployment = json.loads((Path(report["_out"]) / "deployment.json").read_text())
    port = int(deployment["rpc_url"].rsplit(":", 1)[1])
    assert not port_open(port)
