"""Publishing, weight submission, finalisation (stake-weighted median consensus) and claims."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from contracts.client import TrainingRunClient

from .conftest import ETH, POOL, Chain, make_run, reverts, to_epoch_end

TRAINER_SHARE = 8 * ETH  # reward_per_epoch 10 ETH, validator_share_bps 2000
VALIDATOR_SHARE = 2 * ETH


def setup_run(chain: Chain, validator_stakes: Sequence[int], trainers: int = 3) -> int:
    rid = make_run(chain)
    for trainer in chain.trainers[:trainers]:
        trainer.register_trainer(rid, ETH)
    for validator, stake in zip(chain.validators, validator_stakes, strict=False):
        validator.register_validator(rid, stake)
    return rid


def settle(chain: Chain, rid: int, epoch: int, weights: dict[int, list[int]]) -> None:
    to_epoch_end(chain, rid, epoch)
    for index, vector in weights.items():
        chain.validators[index].submit_weights(rid, epoch, vector)
    chain.sponsor.finalize_epoch(rid, epoch)


def claimable(chain: Chain, rid: int, clients: Sequence[TrainingRunClient]) -> list[int]:
    return [chain.sponsor.claimable(rid, c.account.address) for c in clients]


def assert_shares(amounts: list[int], expected: list[float], total: int) -> None:
    for amount, share in zip(amounts, expected, strict=True):
        assert amount == pytest.approx(share * total, rel=1e-4, abs=10**12)


def test_one_validator_sets_the_consensus(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    settle(chain, rid, 0, {0: [1, 2, 1]})
    assert_shares(claimable(chain, rid, chain.trainers[:3]), [0.25, 0.5, 0.25], TRAINER_SHARE)
    assert claimable(chain, rid, chain.validators[:1]) == [VALIDATOR_SHARE]
    info = chain.sponsor.epoch_info(rid, 0)
    assert info.finalized and info.submissions == 1
    assert [chain.sponsor.consensus_weight(rid, 0, i) for i in range(3)] == [32767, 65535, 32767]
    assigned = sum(claimable(chain, rid, chain.trainers[:3] + chain.validators[:1]))
    assert chain.sponsor.get_run(rid).pool == POOL - assigned  # rounding dust stays in the pool
    assert 0 <= 10 * ETH - assigned < 131069


def test_two_equal_validators_consensus_is_the_minimum(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH, 2 * ETH])
    settle(chain, rid, 0, {0: [1, 1, 1], 1: [3, 0, 0]})  # validator 1 favours trainer 0
    assert_shares(claimable(chain, rid, chain.trainers[:3]), [1.0, 0.0, 0.0], TRAINER_SHARE)
    honest, liar = claimable(chain, rid, chain.validators[:2])
    assert honest == liar  # with two equal stakes neither can be told apart, and neither inflates anyone


def test_two_validators_the_larger_stake_decides_and_the_liar_earns_less(chain: Chain) -> None:
    rid = setup_run(chain, [3 * ETH, 2 * ETH])
    settle(chain, rid, 0, {0: [1, 1, 1], 1: [3, 0, 0]})
    assert_shares(claimable(chain, rid, chain.trainers[:3]), [1 / 3, 1 / 3, 1 / 3], TRAINER_SHARE)
    honest, liar = claimable(chain, rid, chain.validators[:2])
    # agreement: honest 1, liar 1/3; split by stake × agreement = 3 : 2/3
    assert_shares([honest, liar], [3 / (3 + 2 / 3), (2 / 3) / (3 + 2 / 3)], VALIDATOR_SHARE)


def test_three_validators_median_ignores_one_liar(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH, 2 * ETH, 2 * ETH])
    settle(chain, rid, 0, {0: [1, 2, 3], 1: [2, 4, 6], 2: [6, 0, 0]})
    assert_shares(claimable(chain, rid, chain.trainers[:3]), [1 / 6, 2 / 6, 3 / 6], TRAINER_SHARE)
    honest_a, honest_b, liar = claimable(chain, rid, chain.validators[:3])
    assert honest_a == honest_b > liar > 0
    assert_shares([honest_a, liar], [1 / (2 + 1 / 6), (1 / 6) / (2 + 1 / 6)], VALIDATOR_SHARE)


def test_finalize_waits_for_all_validators_or_the_grace_period(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH, 2 * ETH])
    end = chain.sponsor.epoch_end_block(rid, 0)
    with reverts("EpochNotOver", endsAt=end):
        chain.sponsor.finalize_epoch(rid, 0)
    to_epoch_end(chain, rid, 0)
    chain.validators[0].submit_weights(rid, 0, [1, 1, 1])
    with reverts("EpochNotFinalizable", submissions=1, required=2, graceEndsAt=end + 8):
        chain.sponsor.finalize_epoch(rid, 0)
    with reverts("EpochOutOfOrder", expected=0):
        chain.sponsor.finalize_epoch(rid, 1)
    chain.mine_to(end + 8)
    chain.trainers[5].finalize_epoch(rid, 0)  # anyone
    assert_shares(claimable(chain, rid, chain.trainers[:3]), [1 / 3] * 3, TRAINER_SHARE)
    with reverts("EpochOutOfOrder", expected=1):
        chain.sponsor.finalize_epoch(rid, 0)


def test_epoch_without_submissions_assigns_nothing(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    chain.mine_to(chain.sponsor.epoch_end_block(rid, 0) + 8)
    chain.sponsor.finalize_epoch(rid, 0)
    assert chain.sponsor.get_run(rid).pool == POOL
    assert claimable(chain, rid, chain.trainers[:3]) == [0, 0, 0]


def test_submit_weights_reverts(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    validator = chain.validators[0]
    with reverts("EpochNotOver"):
        validator.submit_weights(rid, 0, [1, 1, 1])
    to_epoch_end(chain, rid, 0)
    with reverts("NotValidator"):
        chain.trainers[0].submit_weights(rid, 0, [1, 1, 1])
    with reverts("NotValidator"):
        chain.validators[2].submit_weights(rid, 0, [1, 1, 1])
    with reverts("InvalidWeights", length=8, trainerCount=3):
        validator.submit_weights(rid, 0, [1, 1, 1, 1])
    odd = validator.contract.functions.submitWeights(rid, 0, b"\x00\x01\x00")
    with reverts("InvalidWeights", length=3):
        validator._tx(odd, "submitWeights")
    validator.submit_weights(rid, 0, [1, 1])  # trailing trainers may be omitted
    with reverts("AlreadySubmitted"):
        validator.submit_weights(rid, 0, [1, 1, 1])
    with pytest.raises(ValueError):
        validator.submit_weights(rid, 0, [70_000])
    to_epoch_end(chain, rid, 1)
    with reverts("EpochOutOfOrder", epoch=1, expected=0):  # epoch 0 is not settled yet
        validator.submit_weights(rid, 1, [1, 1, 1])


def test_publish_window(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    validator = chain.validators[0]
    assert validator.latest_model_cid(rid, validator.account.address) is None
    bounds = validator.window_bounds(rid, 0)
    with reverts("RevealPeriodNotOver", endsAt=bounds.reveal_end):
        validator.publish_window(rid, 0, "bafy-model-0", "bafy-report-0")
    chain.mine_to(bounds.reveal_end)
    with reverts("NotValidator"):
        chain.trainers[0].publish_window(rid, 0, "m", "r")
    with reverts("InvalidCid", length=0):
        validator.publish_window(rid, 0, "", "r")
    validator.publish_window(rid, 0, "bafy-model-0", "bafy-report-0")
    with reverts("AlreadyPublished"):
        validator.publish_window(rid, 0, "bafy-model-0b", "bafy-report-0b")
    published = validator.publications(rid, 0)
    assert published[validator.account.address].model_cid == "bafy-model-0"
    assert published[validator.account.address].report_cid == "bafy-report-0"
    assert validator.latest_model_cid(rid, validator.account.address) == ("bafy-model-0", 0)


def test_claim_pays_once_and_rejects_nothing_due(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    trainer, validator = chain.trainers[0], chain.validators[0]
    with reverts("NothingToClaim"):
        trainer.claim(rid)
    with reverts("NothingToClaim"):
        chain.trainers[5].claim(rid)  # not a participant at all
    settle(chain, rid, 0, {0: [1, 0, 1]})
    due = trainer.claimable(rid, trainer.account.address)
    before = chain.balance(trainer)
    paid = trainer.claim(rid)
    assert paid == due > 0
    assert chain.balance(trainer) > before + due - ETH // 100  # minus gas
    with reverts("NothingToClaim"):
        trainer.claim(rid)  # claim twice
    with reverts("NothingToClaim"):
        chain.trainers[1].claim(rid)  # weight 0
    assert validator.claim(rid) == VALIDATOR_SHARE
    with reverts("NothingToClaim"):
        validator.claim(rid)
    # a second epoch accumulates again
    settle(chain, rid, 1, {0: [1, 0, 1]})
    assert trainer.claim(rid) == pytest.approx(due, rel=1e-9)


def test_claim_settles_several_epochs_at_once(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    settle(chain, rid, 0, {0: [1, 1, 0]})
    settle(chain, rid, 1, {0: [1, 0, 0]})
    assert chain.trainers[0].claim(rid) == pytest.approx(TRAINER_SHARE * 1.5, rel=1e-4)
    assert chain.trainers[1].claim(rid) == pytest.approx(TRAINER_SHARE * 0.5, rel=1e-4)


def test_late_trainer_is_not_paid_for_earlier_epochs(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    settle(chain, rid, 0, {0: [1, 1, 1]})
    late = chain.trainers[3]
    late.register_trainer(rid, ETH)
    assert chain.sponsor.trainer_info(rid, late.account.address).next_claim_epoch == 1
    assert late.claimable(rid, late.account.address) == 0
