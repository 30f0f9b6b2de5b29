"""A run's life beyond one epoch: the sponsor ends it and reclaims what is left, an epoch nobody can settle is
skipped, a validator that stops serving is ejected (and one that serves is not), and claims are bounded."""

from __future__ import annotations

import pytest

from .conftest import (
    ETH,
    POOL,
    Chain,
    credited,
    finalize,
    make_run,
    publish_epoch,
    reverts,
    settle,
    settle_unvoted,
    to_epoch_end,
    to_start,
    vote,
    weight_salt,
)


def test_the_sponsor_ends_the_run_and_reclaims_the_pool(chain: Chain, run_id: int) -> None:
    sponsor, voters = chain.sponsor, chain.validators[:2]
    with reverts("EpochsPending"):  # not ended
        sponsor.reclaim(run_id)
    settle(chain, run_id, 0, {v: [1, 1, 1] for v in voters})
    sponsor.end_run(run_id)
    run = sponsor.get_run(run_id)
    assert run.ended and run.end_epoch == run.next_epoch + 1  # the current epoch (1) is the last
    with reverts("RunEnded", endEpoch=run.end_epoch):
        sponsor.end_run(run_id)
    with reverts("RunEnded"):
        chain.trainers[3].register_trainer(run_id, ETH)
    with reverts("RunEnded"):
        chain.trainers[3].fund(run_id, ETH)
    with reverts("EpochsPending", nextEpoch=1, endEpoch=2):
        sponsor.reclaim(run_id)
    settle(chain, run_id, 1, {v: [1, 1, 1] for v in voters})  # the last epoch still pays its trainers
    window = sponsor.current_window(run_id)
    assert window // 2 >= run.end_epoch
    with reverts("RunEnded"):  # windows of later epochs take no commits
        chain.trainers[0].commit(run_id, window, b"\x01" * 32)
    to_epoch_end(chain, run_id, 2)
    with reverts("RunEnded"):
        sponsor.finalize_epoch(run_id, 2)
    paid_out = sum(credited(chain, run_id, c.account.address) for c in chain.trainers[:3] + voters)
    left = sponsor.get_run(run_id).pool
    assert left == POOL - paid_out and paid_out > 0
    before = chain.balance(sponsor)
    assert sponsor.reclaim(run_id) == left
    assert chain.balance(sponsor) > before + left - ETH // 100
    assert sponsor.get_run(run_id).pool == 0
    with reverts("NothingToClaim"):
        sponsor.reclaim(run_id)
    # members still take out what is theirs
    assert chain.trainers[0].claim(run_id) > 0
    chain.trainers[0].request_unstake(run_id)
    chain.mine_to(sponsor.trainer_info(run_id, chain.trainers[0].account.address).unbonding_at)
    chain.trainers[0].withdraw_stake(run_id)  # its leave epoch is after the end: nothing left to settle


def test_an_epoch_is_skipped_only_after_everyone_could_have_finalised_it(chain: Chain, run_id: int) -> None:
    voters = chain.validators[:2]
    publish_epoch(chain, run_id, 0, voters)
    to_epoch_end(chain, run_id, 0)
    vote(chain, run_id, 0, {v: [1, 1, 1] for v in voters})
    state = chain.sponsor.settlement_of(run_id, 0)
    skippable = state.opens_at + 3 * 20
    with reverts("EpochNotSkippable", skippableAt=skippable):
        chain.trainers[5].skip_epoch(run_id, 0)
    chain.mine_to(skippable)
    chain.trainers[5].skip_epoch(run_id, 0)
    info = chain.sponsor.epoch_info(run_id, 0)
    assert info.finalized and info.skipped
    assert chain.sponsor.get_run(run_id).pool == POOL  # its reward stays in the pool
    assert chain.sponsor.claimable(run_id, chain.trainers[0].account.address) == 0
    settle(chain, run_id, 1, {v: [1, 1, 1] for v in voters})  # the run goes on
    assert chain.sponsor.claimable(run_id, chain.trainers[0].account.address) > 0


def test_a_validator_that_stops_serving_is_ejected_and_one_that_serves_is_not(chain: Chain, run_id: int) -> None:
    served, idle = chain.validators[:2]
    with reverts("NotEjectable", unservedEpochs=0, required=2):
        chain.trainers[5].eject_validator(run_id, idle.account.address)
    settle(chain, run_id, 0, {served: [1, 1, 1]}, publishers=[served])
    with reverts("NotEjectable", unservedEpochs=1, required=2):  # one missed epoch is no pattern
        chain.trainers[5].eject_validator(run_id, idle.account.address)
    settle(chain, run_id, 1, {served: [1, 1, 1]}, publishers=[served])
    with reverts("NotEjectable", unservedEpochs=0):
        chain.trainers[5].eject_validator(run_id, served.account.address)
    pool = chain.sponsor.get_run(run_id).pool
    chain.trainers[5].eject_validator(run_id, idle.account.address)
    info = chain.sponsor.validator_info(run_id, idle.account.address)
    assert not info.active and info.bond == 2 * ETH - 2 * ETH // 10
    assert chain.sponsor.get_run(run_id).pool == pool + 2 * ETH // 10
    assert chain.sponsor.get_run(run_id).validator_count == 1
    with reverts("Unbonding"):
        chain.trainers[5].eject_validator(run_id, idle.account.address)
    # it still votes on the epochs that began before it was ejected, and leaves after they are settled
    current = info.until_epoch - 1
    assert info.votes_on(current) and not info.votes_on(current + 1)
    assert chain.sponsor.total_stake(run_id, current + 1) == 2 * ETH


@pytest.mark.parametrize("epochs", [66])
def test_a_claim_pays_at_most_max_claim_epochs(chain: Chain, epochs: int) -> None:
    """A trainer away for long claims in bounded steps: 64 epochs per call, then the rest."""
    rid = make_run(chain, window_blocks=2, reveal_blocks=1, windows_per_epoch=1, grace_period_blocks=4,
                   start_delay_blocks=10)
    trainer, validator = chain.trainers[0], chain.validators[0]
    chain.sponsor.fund(rid, epochs * 10 * ETH)  # every epoch pays its whole reward
    trainer.register_trainer(rid, ETH)
    validator.register_validator(rid, 2 * ETH)
    to_start(chain, rid)
    for epoch in range(epochs):
        settle(chain, rid, epoch, {validator: [1]})
    per_epoch = chain.sponsor.claimable(rid, trainer.account.address) // 64
    assert per_epoch == pytest.approx(8 * ETH, rel=1e-9)
    first = trainer.claim(rid)
    assert first == 64 * per_epoch
    assert chain.sponsor.trainer_info(rid, trainer.account.address).next_claim_epoch == 64
    assert trainer.claim(rid) == (epochs - 64) * per_epoch
    with reverts("NothingToClaim"):
        trainer.claim(rid)


def test_finalising_after_the_deadline_with_part_of_the_votes(chain: Chain, run_id: int) -> None:
    """A validator that committed and never revealed holds nothing up: the epoch settles at its deadline."""
    a, b = chain.validators[:2]
    publish_epoch(chain, run_id, 0, [a, b])
    to_epoch_end(chain, run_id, 0)
    vote(chain, run_id, 0, {a: [1, 1, 1], b: [1, 1, 1]}, reveal=False)
    a.reveal_weights(run_id, 0, [1, 1, 1], weight_salt(a, 0))
    with reverts("EpochNotFinalizable", commits=2, reveals=1):
        chain.sponsor.finalize_epoch(run_id, 0)
    finalize(chain, run_id, 0, after_deadline=True)
    assert chain.sponsor.epoch_info(run_id, 0).submissions == 1
    settle_unvoted(chain, run_id, 2)
    assert chain.sponsor.get_run(run_id).next_epoch == 2
