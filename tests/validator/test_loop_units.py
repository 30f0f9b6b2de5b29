"""Pure parts of the loop and the audit on hand-made inputs: which base models a window accepts, which model
it is evaluated against, reading a signed tx's nonce and hash, and the report comparison the audit prints."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from eth_account import Account

from base.report import AggregateInfo, ContributionScore, Rejection, RejectReason, WindowReport, WindowReportInputs
from base.run_config import RunConfig
from contracts.tx import nonce_of, tx_hash_of
from node.data import build_dataset
from validator.audit import AuditResult, compare_reports, render
from validator.scoring import ScoringError, epoch_payout, epoch_weights, to_u16
from validator.settlement import ballot_numbers, weight_vector
from validator.window_inputs import MONITOR_SEQS, base_models, current_base_model, monitor_batch

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


def test_base_models_are_the_latest_produced_with_their_staleness() -> None:
    assert base_models({}, "init", 0, 1) == {"init": 0}
    assert base_models({0: "m0"}, "init", 1, 1) == {"m0": 0, "init": 1}
    assert base_models({0: "m0", 1: "m1"}, "init", 2, 1) == {"m1": 0, "m0": 1}
    assert base_models({0: "m0", 1: "m1", 2: "m2"}, "init", 3, 2) == {"m2": 0, "m1": 1, "m0": 2}
    assert base_models({0: "m0", 1: "m1"}, "init", 2, 0) == {"m1": 0}
    # A validator that started late: staleness counts the models it produced, not window numbers.
    assert base_models({3: "m3", 4: "m4"}, "init", 5, 2) == {"m4": 0, "m3": 1, "init": 2}


def test_models_of_later_windows_are_never_bases() -> None:
    history = {0: "m0", 1: "m1", 2: "m2"}
    assert base_models(history, "init", 2, 2) == {"m1": 0, "m0": 1, "init": 2}  # m2 is later: never a base
    assert current_base_model(history, "init", 2) == "m1"
    assert current_base_model(history, "init", 0) == "init"
    assert current_base_model({0: "m0"}, "init", 5) == "m0"  # the most recent one produced


def test_monitor_batch_is_fixed_for_the_run_and_held_out() -> None:
    text = bytes(range(256)) * 2_000
    built = build_dataset([("t", text)], shard_bytes=50_000, heldout_fraction=0.2)
    ds = built.to_dataset()
    config = RunConfig(seq_len=32, run_seed=7)
    batch = monitor_batch(ds, config)
    assert batch.shape == (MONITOR_SEQS, 33)
    assert torch.equal(batch, monitor_batch(ds, config))  # every window, every validator: the same rows
    assert not torch.equal(batch, monitor_batch(ds, RunConfig(seq_len=32, run_seed=8)))
    assert set(batch.flatten().tolist()) <= set(ds.heldout.tolist())


@pytest.mark.parametrize("typed", [False, True])
def test_nonce_and_hash_of_a_signed_transaction(typed: bool) -> None:
    tx: dict[str, object] = {"to": "0x" + "11" * 20, "value": 1, "gas": 21000, "nonce": 47, "chainId": 31337}
    if typed:
        tx.update(maxFeePerGas=2 * 10**9, maxPriorityFeePerGas=10**9, type=2)
    else:
        tx["gasPrice"] = 10**9
    signed = Account.from_key(KEY).sign_transaction(tx)
    raw = bytes(signed.raw_transaction)
    assert nonce_of(raw) == 47
    assert tx_hash_of(raw) == "0x" + bytes(signed.hash).hex()


def _score(trainer: str, s_i: float) -> ContributionScore:
    return ContributionScore(
        trainer=trainer, cid=f"bafk{trainer}", loss_before_own=5.0, loss_after_own=4.9, loss_before_random=5.0,
        loss_after_random=5.0 - s_i * 5, s_i=s_i, own_gain=0.02, random_gain=s_i, b_i=1, binary_avg=0.05,
        mu=25.0, sigma=8.0, ordinal=1.0, sync=1.0, penalty=1.0, final=0.05, weight=0.5,
    )


def _report() -> WindowReport:
    return WindowReport(
        window=3,
        inputs=WindowReportInputs(cids={"0xa": "bafka", "0xb": "bafkb"}, block_hash="0x00", base_model_cid="bafkm",
                                  eval_step_size=1.0, strategy={"aggregator": "median_norm_clip_mean"}),
        scores=(_score("0xa", 0.01), _score("0xb", 0.02)),
        rejections=(Rejection("0xc", 3, RejectReason.MALFORMED, "undecodable", "bafkc"),),
        accepted=("0xa", "0xb"),
        aggregate=AggregateInfo(method="m", contributors=("0xa", "0xb"), clip_norm=1.0, update_norm=0.5,
                                learning_rate=0.7),
        model_cid="bafknew",
    )


def test_identical_reports_match_in_every_number() -> None:
    checks = compare_reports(_report(), _report())
    assert checks and all(c.ok for c in checks)
    assert "scores.0xb.s_i" in {c.path for c in checks}


def test_an_edited_score_is_the_only_mismatch() -> None:
    published = _report()
    edited = replace(published, scores=(published.scores[0], replace(published.scores[1], weight=0.9)))
    bad = [c for c in compare_reports(edited, published) if not c.ok]
    assert [(c.path, c.published, c.recomputed) for c in bad] == [("scores.0xb.weight", 0.9, 0.5)]


def test_missing_entries_and_changed_strings_are_mismatches() -> None:
    published = _report()
    dropped = replace(published, scores=published.scores[:1], model_cid="bafkother")
    bad = {c.path for c in compare_reports(dropped, published) if not c.ok}
    assert "model_cid" in bad and "scores.0xb.s_i" in bad


def test_float_tolerance_is_relative() -> None:
    published = _report()
    nudged = replace(published, scores=(replace(published.scores[0], s_i=0.01 * (1 + 1e-12)), published.scores[1]))
    assert all(c.ok for c in compare_reports(nudged, published, rtol=1e-9))
    assert not all(c.ok for c in compare_reports(nudged, published, rtol=0.0, atol=0.0))


def test_render_states_the_verdict() -> None:
    checks = tuple(compare_reports(replace(_report(), window=4), _report()))
    text = render(AuditResult(3, "0xv", 0, checks), only_mismatches=True)
    assert text.splitlines()[0].startswith("MISMATCH window")
    assert text.endswith("FAIL (1 mismatches)")


def test_epoch_weights_are_each_trainers_share_of_the_epochs_final_scores() -> None:
    first = _report()  # 0xa and 0xb with final 0.05 each
    second = replace(first, scores=(replace(first.scores[0], final=0.1),))  # only 0xa, final 0.1
    assert epoch_weights([first, second]) == pytest.approx({"0xa": 0.75, "0xb": 0.25})
    assert epoch_weights([second]) == {"0xa": 1.0}
    nobody = replace(first, scores=tuple(replace(s, final=0.0) for s in first.scores))
    assert epoch_weights([nobody]) == {} and epoch_weights([]) == {}


def test_weight_vector_follows_the_contracts_trainer_order() -> None:
    order = ["0xB", "0xC", "0xA"]  # index order on chain; checksum spelling differs from the report's
    assert weight_vector({"0xa": 0.75, "0xb": 0.25}, order) == [16384, 0, 49151]
    assert sum(weight_vector({"0xa": 0.5, "0xb": 0.5}, order)) == 65535


def test_epoch_payout_is_the_epochs_finals_over_its_potentials() -> None:
    first = _report()  # 0xa and 0xb with final 0.05 each
    thin = replace(first, scores=tuple(replace(s, potential=0.2) for s in first.scores))  # maturity 1/4
    assert epoch_payout([thin]) == pytest.approx(0.25)
    mature = replace(first, scores=tuple(replace(s, potential=s.final) for s in first.scores))
    assert epoch_payout([thin, mature]) == pytest.approx(0.2 / 0.5)
    # a newcomer's immature part is kept in the pool; it does not raise the incumbents' share of the reward
    newcomer = replace(mature, scores=(*mature.scores, replace(mature.scores[0], trainer="0xc", final=0.01,
                                                                 potential=0.05)))
    payout, weights = epoch_payout([newcomer]), epoch_weights([newcomer])
    assert payout * weights["0xa"] == pytest.approx(0.05 / 0.15)  # its final over everyone's potential
    assert payout * weights["0xc"] == pytest.approx(0.01 / 0.15)
    nobody = replace(first, scores=tuple(replace(s, final=0.0, potential=0.0) for s in first.scores))
    assert epoch_payout([nobody]) == 0.0 and epoch_payout([]) == 0.0
    assert epoch_payout([first]) == 1.0  # reports from before `potential` was recorded: the whole reward
    assert to_u16(0.25) == 16384 and to_u16(1.0) == 65535
    with pytest.raises(ScoringError):
        to_u16(1.5)


def test_a_ballot_with_weights_never_has_a_zero_payout() -> None:
    first = _report()
    faint = replace(first, scores=tuple(replace(s, potential=s.final * 1e6) for s in first.scores))
    _, vector, payout = ballot_numbers([faint], ["0xa", "0xb"])
    assert sum(vector) == 65535 and payout == 1  # 1e-6 of the reward rounds to 0; the smallest payout instead
    assert ballot_numbers([], ["0xa"])[2] == 0
