"""Publishing, weight commit–reveal, finalisation (stake-weighted median consensus over the epoch's snapshotted
stake) and claims."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from base.commitments import report_commitment
from contracts.client import TrainingRunClient, pack_weights
from contracts.types import CommitStatus

from .cids import cid
from .conftest import (
    ETH,
    POOL,
    Chain,
    finalize,
    make_run,
    publish_epoch,
    reverts,
    settle,
    to_epoch_end,
    vote,
    weight_salt,
)

TRAINER_SHARE = 8 * ETH  # reward_per_epoch 10 ETH, validator_share_bps 2000
VALIDATOR_SHARE = 2 * ETH


def setup_run(chain: Chain, validator_stakes: Sequence[int], trainers: int = 3) -> int:
    rid = make_run(chain)
    for trainer in chain.trainers[:trainers]:
        trainer.register_trainer(rid, ETH)
    for validator, stake in zip(chain.validators, validator_stakes, strict=False):
        validator.register_validator(rid, stake)
    return rid


def by_index(chain: Chain, weights: dict[int, list[int]]) -> dict[TrainingRunClient, list[int]]:
    return {chain.validators[i]: w for i, w in weights.items()}


def claimable(chain: Chain, rid: int, clients: Sequence[TrainingRunClient]) -> list[int]:
    return [chain.sponsor.claimable(rid, c.account.address) for c in clients]


def assert_shares(amounts: list[int], expected: list[float], total: int) -> None:
    for amount, share in zip(amounts, expected, strict=True):
        assert amount == pytest.approx(share * total, rel=1e-4, abs=10**12)


def test_one_validator_sets_the_consensus(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    settle(chain, rid, 0, by_index(chain, {0: [1, 2, 1]}))
    assert_shares(claimable(chain, rid, chain.trainers[:3]), [0.25, 0.5, 0.25], TRAINER_SHARE)
    assert claimable(chain, rid, chain.validators[:1]) == [VALIDATOR_SHARE]
    info = chain.sponsor.epoch_info(rid, 0)
    assert info.finalized and info.submissions == 1 and not info.skipped
    assert [chain.sponsor.consensus_weight(rid, 0, i) for i in range(3)] == [32767, 65535, 32767]
    assigned = sum(claimable(chain, rid, chain.trainers[:3] + chain.validators[:1]))
    assert chain.sponsor.get_run(rid).pool == POOL - assigned  # rounding dust stays in the pool
    assert 0 <= 10 * ETH - assigned < 131069


def test_two_equal_validators_consensus_is_the_minimum(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH, 2 * ETH])
    settle(chain, rid, 0, by_index(chain, {0: [1, 1, 1], 1: [3, 0, 0]}))  # validator 1 favours trainer 0
    assert_shares(claimable(chain, rid, chain.trainers[:3]), [1.0, 0.0, 0.0], TRAINER_SHARE)
    honest, liar = claimable(chain, rid, chain.validators[:2])
    assert honest == liar  # with two equal stakes neither can be told apart, and neither inflates anyone


def test_two_validators_the_larger_stake_decides_and_the_liar_earns_less(chain: Chain) -> None:
    rid = setup_run(chain, [3 * ETH, 2 * ETH])
    settle(chain, rid, 0, by_index(chain, {0: [1, 1, 1], 1: [3, 0, 0]}))
    assert_shares(claimable(chain, rid, chain.trainers[:3]), [1 / 3, 1 / 3, 1 / 3], TRAINER_SHARE)
    honest, liar = claimable(chain, rid, chain.validators[:2])
    # agreement: honest 1, liar 1/3; split by stake × agreement = 3 : 2/3
    assert_shares([honest, liar], [3 / (3 + 2 / 3), (2 / 3) / (3 + 2 / 3)], VALIDATOR_SHARE)


def test_three_validators_median_ignores_one_liar(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH, 2 * ETH, 2 * ETH])
    settle(chain, rid, 0, by_index(chain, {0: [1, 2, 3], 1: [2, 4, 6], 2: [6, 0, 0]}))
    assert_shares(claimable(chain, rid, chain.trainers[:3]), [1 / 6, 2 / 6, 3 / 6], TRAINER_SHARE)
    honest_a, honest_b, liar = claimable(chain, rid, chain.validators[:3])
    assert honest_a == honest_b > liar > 0
    assert_shares([honest_a, liar], [1 / (2 + 1 / 6), (1 / 6) / (2 + 1 / 6)], VALIDATOR_SHARE)


def test_a_silent_validator_counts_as_voting_zero(chain: Chain) -> None:
    """The median is over the epoch's whole snapshotted stake: one of three equal validators alone is no majority
    (nothing is paid), two of three are, and the consensus is then the smaller of their values."""
    rid = setup_run(chain, [2 * ETH, 2 * ETH, 2 * ETH])
    settle(chain, rid, 0, by_index(chain, {0: [1, 1, 1]}))
    assert claimable(chain, rid, chain.trainers[:3] + chain.validators[:1]) == [0, 0, 0, 0]
    assert chain.sponsor.get_run(rid).pool == POOL
    settle(chain, rid, 1, by_index(chain, {0: [1, 1, 2], 1: [1, 1, 1]}))
    # per trainer min(1/4, 1/3), min(1/4, 1/3), min(1/2, 1/3) = 1/4, 1/4, 1/3 → 0.3, 0.3, 0.4 of the reward
    assert_shares(claimable(chain, rid, chain.trainers[:3]), [0.3, 0.3, 0.4], TRAINER_SHARE)


def test_weight_phases_and_finalisation_timing(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH, 2 * ETH])
    a, b = chain.validators[:2]
    publish_epoch(chain, rid, 0, [a, b])
    state = chain.sponsor.settlement_of(rid, 0)
    assert state.opens_at == chain.sponsor.epoch_end_block(rid, 0)
    assert (state.reveals_from, state.closes_at) == (state.opens_at + 20, state.opens_at + 40)
    with reverts("EpochNotFinalizable", commits=0, reveals=0, closesAt=state.closes_at):
        chain.sponsor.finalize_epoch(rid, 0)  # the commit phase is open: ballots may still come
    a.commit_weights(rid, 0, [1, 1, 1], weight_salt(a, 0))
    with reverts("RevealPhaseNotOpen", opensAt=state.reveals_from):  # b has not committed
        a.reveal_weights(rid, 0, [1, 1, 1], weight_salt(a, 0))
    with reverts("EpochOutOfOrder", expected=0):
        chain.sponsor.finalize_epoch(rid, 1)
    chain.mine_to(state.reveals_from)
    with reverts("CommitPhaseOver", closedAt=state.reveals_from):
        b.commit_weights(rid, 0, [1, 1, 1], weight_salt(b, 0))
    with reverts("EpochNotFinalizable", commits=1, reveals=0):
        chain.sponsor.finalize_epoch(rid, 0)
    a.reveal_weights(rid, 0, [1, 1, 1], weight_salt(a, 0))
    chain.trainers[5].finalize_epoch(rid, 0)  # every commit revealed, commits closed: anyone may finalise
    assert chain.sponsor.epoch_info(rid, 0).finalized
    with reverts("EpochOutOfOrder", expected=1):
        chain.sponsor.finalize_epoch(rid, 0)
    # a stays alone: half the stake is no majority
    assert claimable(chain, rid, chain.trainers[:3]) == [0, 0, 0]


def test_reveals_open_early_once_every_vote_is_committed(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH, 2 * ETH])
    a, b = chain.validators[:2]
    publish_epoch(chain, rid, 0, [a, b])
    to_epoch_end(chain, rid, 0)
    state = chain.sponsor.settlement_of(rid, 0)
    a.commit_weights(rid, 0, [1, 2, 3], weight_salt(a, 0))
    b.commit_weights(rid, 0, [1, 2, 3], weight_salt(b, 0))
    assert chain.node.block_number() < state.reveals_from
    a.reveal_weights(rid, 0, [1, 2, 3], weight_salt(a, 0))
    with reverts("EpochNotFinalizable", commits=2, reveals=1):
        chain.sponsor.finalize_epoch(rid, 0)
    b.reveal_weights(rid, 0, [1, 2, 3], weight_salt(b, 0))
    chain.sponsor.finalize_epoch(rid, 0)
    assert chain.node.block_number() < state.reveals_from  # settled well before the deadline
    assert_shares(claimable(chain, rid, chain.trainers[:3]), [1 / 6, 2 / 6, 3 / 6], TRAINER_SHARE)


def test_epoch_without_votes_assigns_nothing(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    to_epoch_end(chain, rid, 0)
    finalize(chain, rid, 0, after_deadline=True)
    assert chain.sponsor.get_run(rid).pool == POOL
    assert claimable(chain, rid, chain.trainers[:3]) == [0, 0, 0]


def test_commit_and_reveal_weights_reverts(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    validator = chain.validators[0]
    salt = weight_salt(validator, 0)
    with reverts("ReportsMissing", epoch=0):  # it has not published the epoch's windows
        validator.commit_weights(rid, 0, [1, 1, 1], salt)
    publish_epoch(chain, rid, 0, [validator])
    with reverts("NotEligible"):
        chain.trainers[0].commit_weights(rid, 0, [1, 1, 1], salt)
    with reverts("NotEligible"):
        chain.validators[2].commit_weights(rid, 0, [1, 1, 1], salt)
    with reverts("NoWeightsCommitment"):
        validator.reveal_weights(rid, 0, [1, 1, 1], salt)
    validator.commit_weights(rid, 0, [1, 1, 1, 1], salt)
    with reverts("WeightsAlreadyCommitted"):
        validator.commit_weights(rid, 0, [1, 1, 1], salt)
    with reverts("InvalidWeights", length=10, trainerCount=3):  # payout + a vector longer than the trainers
        validator.reveal_weights(rid, 0, [1, 1, 1, 1], salt)
    with reverts("WeightsMismatch"):
        validator.reveal_weights(rid, 0, [1, 1, 2], salt)
    odd = validator.contract.functions.revealWeights(rid, 0, b"\x00\x01\x00", salt)
    with reverts("InvalidWeights", length=3):
        validator._tx(odd, "revealWeights")
    headless = validator.contract.functions.revealWeights(rid, 0, b"", salt)
    with reverts("InvalidWeights", length=0):  # not even the payout header
        validator._tx(headless, "revealWeights")
    with pytest.raises(ValueError):
        validator.commit_weights(rid, 0, [70_000], salt)
    to_epoch_end(chain, rid, 1)
    with reverts("EpochOutOfOrder", epoch=1, expected=0):  # epoch 0 is not settled yet
        validator.commit_weights(rid, 1, [1, 1, 1], salt)


def test_finalize_checks_the_revealed_vectors(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH, 2 * ETH])
    a, b = chain.validators[:2]
    publish_epoch(chain, rid, 0, [a, b])
    to_epoch_end(chain, rid, 0)
    vote(chain, rid, 0, {a: [1, 2, 3], b: [3, 2]})
    assert chain.sponsor.ballot_of(rid, a.account.address).status == CommitStatus.REVEALED
    revealed = chain.sponsor.revealed_weights(rid, 0)
    assert [(r.validator, r.slot, r.weights) for r in revealed] == [
        (a.account.address, 0, pack_weights([1, 2, 3])), (b.account.address, 1, pack_weights([3, 2]))]
    fn = chain.sponsor.contract.functions
    with reverts("WrongRevealCount", given=1, expected=2):
        chain.sponsor._tx(fn.finalizeEpoch(rid, 0, [revealed[0].weights]), "finalizeEpoch")
    with reverts("RevealedWeightsMismatch", slot=0):  # swapped: each vector must sit in its own slot
        chain.sponsor._tx(fn.finalizeEpoch(rid, 0, [revealed[1].weights, revealed[0].weights]), "finalizeEpoch")
    chain.sponsor.finalize_epoch(rid, 0)
    assert chain.sponsor.epoch_info(rid, 0).submissions == 2


def test_publish_window(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    validator = chain.validators[0]
    bounds = validator.window_bounds(rid, 0)
    model, report = cid("model-0"), cid("report-0")
    with reverts("RevealPeriodNotOver", endsAt=bounds.reveal_end):
        validator.publish_window(rid, 0, model, report)
    chain.mine_to(bounds.reveal_end)
    with reverts("NotValidator"):
        chain.trainers[0].publish_window(rid, 0, model, report)
    with reverts("InvalidCid", length=0):
        validator.publish_window(rid, 0, "", report)
    with reverts("InvalidCid"):  # a model must be a CID: the canonical model is compared by multihash
        validator.publish_window(rid, 0, "bafy-model-0", report)
    validator.publish_window(rid, 0, model, report)
    with reverts("AlreadyPublished"):
        validator.publish_window(rid, 0, cid("model-0b"), report)
    published = validator.publications(rid, 0)
    assert published[validator.account.address].model_cid == model
    assert published[validator.account.address].report_cid is None  # sealed until the epoch's commits close
    sealed = report_commitment(report, validator.address_of_account)
    assert published[validator.account.address].report_commitment == sealed
    assert not validator.reports_complete(rid, validator.account.address, 0)  # window 1 is missing
    chain.mine_to(validator.window_bounds(rid, 1).reveal_end)
    validator.publish_window(rid, 1, model, report)
    assert validator.reports_complete(rid, validator.account.address, 0)


def test_claim_pays_once_and_rejects_nothing_due(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    trainer, validator = chain.trainers[0], chain.validators[0]
    with reverts("NothingToClaim"):
        trainer.claim(rid)
    with reverts("NothingToClaim"):
        chain.trainers[5].claim(rid)  # not a participant at all
    settle(chain, rid, 0, {validator: [1, 0, 1]})
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
    settle(chain, rid, 1, {validator: [1, 0, 1]})
    assert trainer.claim(rid) == pytest.approx(due, rel=1e-9)


def test_claim_settles_several_epochs_at_once(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    v = chain.validators[0]
    settle(chain, rid, 0, {v: [1, 1, 0]})
    settle(chain, rid, 1, {v: [1, 0, 0]})
    assert chain.trainers[0].claim(rid) == pytest.approx(TRAINER_SHARE * 1.5, rel=1e-4)
    assert chain.trainers[1].claim(rid) == pytest.approx(TRAINER_SHARE * 0.5, rel=1e-4)


def test_late_trainer_is_not_paid_for_earlier_epochs(chain: Chain) -> None:
    rid = setup_run(chain, [2 * ETH])
    settle(chain, rid, 0, {chain.validators[0]: [1, 1, 1]})
    late = chain.trainers[3]
    late.register_trainer(rid, ETH)
    assert chain.sponsor.trainer_info(rid, late.account.address).next_claim_epoch == 1
    assert late.claimable(rid, late.account.address) == 0
