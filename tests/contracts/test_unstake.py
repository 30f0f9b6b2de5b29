"""Leaving a run: requestUnstake, the unbonding delay, withdrawStake; stake stays slashable while unbonding."""

from __future__ import annotations

from .conftest import ETH, Chain, commit_cid, make_run, reverts


def test_trainer_unstake_flow(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    with reverts("NotUnbonding"):
        trainer.withdraw_stake(run_id)
    trainer.request_unstake(run_id)
    info = chain.sponsor.trainer_info(run_id, trainer.account.address)
    assert info.unbonding and info.unbonding_at == chain.node.block_number() + 6
    with reverts("Unbonding"):
        trainer.request_unstake(run_id)
    with reverts("UnbondingNotOver", availableAt=info.unbonding_at):
        trainer.withdraw_stake(run_id)
    chain.mine_to(info.unbonding_at)
    before = chain.balance(trainer)
    receipt = trainer.withdraw_stake(run_id)
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert chain.balance(trainer) == before + ETH - gas_cost
    assert chain.sponsor.trainer_info(run_id, trainer.account.address).stake == 0
    with reverts("NothingToWithdraw"):
        trainer.withdraw_stake(run_id)


def test_validator_unstake_leaves_the_active_set(chain: Chain, run_id: int) -> None:
    validator = chain.validators[0]
    assert chain.sponsor.get_run(run_id).validator_count == 2
    validator.request_unstake(run_id)
    assert chain.sponsor.get_run(run_id).validator_count == 1
    assert not chain.sponsor.validator_info(run_id, validator.account.address).active
    with reverts("Unbonding"):
        validator.request_unstake(run_id)
    with reverts("NotValidator"):
        validator.submit_weights(run_id, 0, [1])
    chain.node.mine(6)
    validator.withdraw_stake(run_id)
    assert chain.sponsor.validator_info(run_id, validator.account.address).stake == 0


def test_unstake_by_a_stranger_reverts(chain: Chain, run_id: int) -> None:
    with reverts("NotTrainer"):
        chain.trainers[5].request_unstake(run_id)
    with reverts("NotTrainer"):
        chain.trainers[5].withdraw_stake(run_id)
    with reverts("UnknownRun"):
        chain.trainers[0].request_unstake(run_id + 1)


def test_unbonding_stake_is_still_slashable(chain: Chain) -> None:
    rid = make_run(chain, miss_threshold=1, unbonding_blocks=100)
    trainer = chain.trainers[0]
    trainer.register_trainer(rid, ETH)
    commit_cid(chain, trainer, rid, 0, "cid")
    trainer.request_unstake(rid)
    chain.mine_to(trainer.window_bounds(rid, 0).reveal_end)
    chain.trainers[5].report_missed_reveal(rid, 0, trainer.account.address)
    assert chain.sponsor.trainer_info(rid, trainer.account.address).stake == ETH - ETH // 10
