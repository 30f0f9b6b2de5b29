"""Leaving a run: requestUnstake, the unbonding delay, withdrawStake once every epoch the account took part in is
settled; stake stays slashable while unbonding; a trainer's slot is reused after it leaves."""

from __future__ import annotations

from .conftest import (
    ETH,
    Chain,
    commit_cid,
    finalize,
    make_run,
    populated_run,
    publish_epoch,
    reverts,
    to_epoch_end,
    to_start,
    vote,
)


def test_trainer_unstake_flow(chain: Chain) -> None:
    run_id = populated_run(chain)
    trainer = chain.trainers[0]
    with reverts("NotUnbonding"):
        trainer.withdraw_stake(run_id)
    trainer.request_unstake(run_id)
    info = chain.sponsor.trainer_info(run_id, trainer.account.address)
    assert info.unbonding and info.unbonding_at == chain.node.block_number() + 65
    assert info.until_epoch == 0  # asked before the run started: it works in no epoch
    with reverts("Unbonding"):
        trainer.request_unstake(run_id)
    with reverts("UnbondingNotOver", availableAt=info.unbonding_at):
        trainer.withdraw_stake(run_id)
    chain.mine_to(info.unbonding_at)
    before = chain.balance(trainer)
    receipt = trainer.withdraw_stake(run_id)
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert chain.balance(trainer) == before + ETH - gas_cost
    assert not chain.sponsor.trainer_info(run_id, trainer.account.address).registered  # it left the run
    with reverts("NotMember"):
        trainer.withdraw_stake(run_id)


def test_a_trainer_cannot_withdraw_before_its_last_epoch_is_settled(chain: Chain, run_id: int) -> None:
    """A trainer that worked in epoch 0 and left waits for epoch 0's settlement: its reward is paid with the
    stake, and its slot cannot be handed to someone else while the epoch still pays that slot."""
    trainer = chain.trainers[0]
    commit_cid(chain, trainer, run_id, 0, "w0")
    trainer.request_unstake(run_id)
    info = chain.sponsor.trainer_info(run_id, trainer.account.address)
    assert info.until_epoch == 1
    voters = chain.validators[:2]
    publish_epoch(chain, run_id, 0, voters)
    to_epoch_end(chain, run_id, 0)
    vote(chain, run_id, 0, {v: [1, 1, 1] for v in voters})
    chain.mine_to(max(info.unbonding_at, chain.node.block_number() + 1))
    with reverts("EpochsNotSettled", untilEpoch=1, nextEpoch=0):  # unbonded, but epoch 0 still pays its slot
        trainer.withdraw_stake(run_id)
    finalize(chain, run_id, 0)
    due = trainer.claimable(run_id, trainer.account.address)
    assert due > 0
    before = chain.balance(trainer)
    receipt = trainer.withdraw_stake(run_id)
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert chain.balance(trainer) == before + ETH + due - gas_cost  # stake and reward together


def test_a_freed_trainer_slot_is_reused(chain: Chain) -> None:
    rid = make_run(chain, max_trainers=2)
    first, second, newcomer = chain.trainers[:3]
    first.register_trainer(rid, ETH)
    second.register_trainer(rid, ETH)
    with reverts("RunFull", limit=2):
        newcomer.register_trainer(rid, ETH)
    first.request_unstake(rid)
    chain.mine_to(chain.sponsor.trainer_info(rid, first.account.address).unbonding_at)
    first.withdraw_stake(rid)
    assert chain.sponsor.get_run(rid).free_slots == 1
    newcomer.register_trainer(rid, ETH)
    info = chain.sponsor.trainer_info(rid, newcomer.account.address)
    assert info.index == 0 and chain.sponsor.trainers(rid) == [newcomer.account.address, second.account.address]
    assert chain.sponsor.get_run(rid).free_slots == 0
    with reverts("RunFull", limit=2):
        first.register_trainer(rid, ETH)


def test_validator_unstake_leaves_the_active_set(chain: Chain) -> None:
    run_id = populated_run(chain)
    validator = chain.validators[0]
    assert chain.sponsor.get_run(run_id).validator_count == 2
    validator.request_unstake(run_id)
    assert chain.sponsor.get_run(run_id).validator_count == 1
    info = chain.sponsor.validator_info(run_id, validator.account.address)
    assert not info.active and info.until_epoch == 0 and not info.votes_on(0)
    assert chain.sponsor.total_stake(run_id, 0) == 2 * ETH
    with reverts("Unbonding"):
        validator.request_unstake(run_id)
    chain.mine_to(info.unbonding_at)
    validator.withdraw_stake(run_id)  # it never voted on anything: nothing to wait for
    assert not chain.sponsor.validator_info(run_id, validator.account.address).registered


def test_a_validator_cannot_withdraw_before_the_epochs_it_votes_on_are_settled(chain: Chain, run_id: int) -> None:
    validator = chain.validators[0]
    validator.request_unstake(run_id)  # in epoch 0: it still votes on epoch 0
    info = chain.sponsor.validator_info(run_id, validator.account.address)
    assert info.until_epoch == 1 and info.votes_on(0)
    voters = chain.validators[:2]
    publish_epoch(chain, run_id, 0, voters)
    to_epoch_end(chain, run_id, 0)
    vote(chain, run_id, 0, {v: [1, 1, 1] for v in voters})
    chain.mine_to(max(info.unbonding_at, chain.node.block_number() + 1))
    with reverts("EpochsNotSettled", untilEpoch=1, nextEpoch=0):
        validator.withdraw_stake(run_id)
    finalize(chain, run_id, 0)
    credit = chain.sponsor.held_credit(run_id, validator.account.address).amount
    with reverts("CreditHeld", epoch=0):  # until epoch 0's ballots can no longer be disputed
        validator.withdraw_stake(run_id)
    publish_epoch(chain, run_id, 1, voters[1:])
    to_epoch_end(chain, run_id, 1)
    vote(chain, run_id, 1, {voters[1]: [1, 1, 1]})
    finalize(chain, run_id, 1)
    before = chain.balance(validator)
    receipt = validator.withdraw_stake(run_id)
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert credit > 0 and chain.balance(validator) == before + 2 * ETH + credit - gas_cost


def test_unstake_by_a_stranger_reverts(chain: Chain, run_id: int) -> None:
    with reverts("NotMember"):
        chain.trainers[5].request_unstake(run_id)
    with reverts("NotMember"):
        chain.trainers[5].withdraw_stake(run_id)
    with reverts("UnknownRun"):
        chain.trainers[0].request_unstake(run_id + 1)


def test_unbonding_stake_is_still_slashable(chain: Chain) -> None:
    rid = make_run(chain, miss_threshold=1, unbonding_blocks=100)
    trainer = chain.trainers[0]
    trainer.register_trainer(rid, ETH)
    to_start(chain, rid)
    commit_cid(chain, trainer, rid, 0, "cid")
    trainer.request_unstake(rid)
    chain.mine_to(trainer.window_bounds(rid, 0).reveal_end)
    chain.trainers[5].report_missed_reveal(rid, 0, trainer.account.address)
    assert chain.sponsor.trainer_info(rid, trainer.account.address).stake == ETH - ETH // 10
