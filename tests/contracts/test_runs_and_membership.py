"""createRun, fund, registerTrainer, addStake, registerValidator: happy paths and every revert."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_account import Account
from eth_utils import keccak

from .conftest import ETH, PARAMS, POOL, Chain, make_run, reverts


def test_create_run_stores_params_and_seeds_pool(chain: Chain) -> None:
    rid = make_run(chain)
    run = chain.sponsor.get_run(rid)
    assert (run.window_blocks, run.reveal_blocks, run.windows_per_epoch) == (10, 5, 2)
    assert run.pool == POOL
    assert run.sponsor == chain.sponsor.account.address
    assert run.config_digest == PARAMS.config_digest
    assert run.trainer_count == run.validator_count == run.next_epoch == 0
    assert chain.sponsor.run_count() == rid + 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("window_blocks", 0),
        ("reveal_blocks", 0),
        ("reveal_blocks", 31),  # > (RING - 1) * window_blocks
        ("windows_per_epoch", 0),
        ("validator_share_bps", 10_001),
        ("slash_bps", 10_001),
        ("miss_threshold", 0),
        ("min_trainer_stake", 0),
        ("min_validator_stake", 0),
    ],
)
def test_create_run_rejects_invalid_params(chain: Chain, field: str, value: int) -> None:
    solidity_name = {
        "window_blocks": "windowBlocks",
        "reveal_blocks": "revealBlocks",
        "windows_per_epoch": "windowsPerEpoch",
        "validator_share_bps": "validatorShareBps",
        "slash_bps": "slashBps",
        "miss_threshold": "missThreshold",
        "min_trainer_stake": "minTrainerStake",
        "min_validator_stake": "minValidatorStake",
    }[field]
    with reverts("InvalidRunParams", field=solidity_name):
        chain.sponsor.create_run(replace(PARAMS, **{field: value}))


def test_fund_adds_to_pool_from_anyone(chain: Chain) -> None:
    rid = make_run(chain)
    chain.trainers[5].fund(rid, 3 * ETH)
    assert chain.sponsor.get_run(rid).pool == POOL + 3 * ETH


def test_fund_rejects_zero_and_unknown_run(chain: Chain) -> None:
    rid = make_run(chain)
    with reverts("ZeroValue"):
        chain.sponsor.fund(rid, 0)
    with reverts("UnknownRun", runId=rid + 1):
        chain.sponsor.fund(rid + 1, ETH)
    with reverts("UnknownRun"):
        chain.sponsor.get_run(rid + 1)


def test_trainers_are_indexed_in_registration_order(chain: Chain) -> None:
    rid = make_run(chain)
    for trainer in (chain.trainers[2], chain.trainers[0], chain.trainers[1]):
        trainer.register_trainer(rid, ETH)
    expected = [chain.trainers[i].account.address for i in (2, 0, 1)]
    assert chain.sponsor.trainers(rid) == expected
    info = chain.sponsor.trainer_info(rid, chain.trainers[1].account.address)
    assert (info.index, info.stake, info.registered, info.unbonding, info.slashed) == (2, ETH, True, False, False)


def test_register_trainer_reverts(chain: Chain) -> None:
    rid = make_run(chain)
    with reverts("StakeTooLow", required=ETH):
        chain.trainers[0].register_trainer(rid, ETH - 1)
    chain.trainers[0].register_trainer(rid, ETH)
    with reverts("AlreadyRegistered"):
        chain.trainers[0].register_trainer(rid, ETH)
    with reverts("AlreadyRegistered"):  # one role per account and run
        chain.trainers[0].register_validator(rid, 2 * ETH)
    with reverts("UnknownRun"):
        chain.trainers[1].register_trainer(rid + 7, ETH)


def test_add_stake(chain: Chain) -> None:
    rid = make_run(chain)
    chain.trainers[0].register_trainer(rid, ETH)
    chain.trainers[0].add_stake(rid, 2 * ETH)
    assert chain.sponsor.trainer_info(rid, chain.trainers[0].account.address).stake == 3 * ETH
    with reverts("ZeroValue"):
        chain.trainers[0].add_stake(rid, 0)
    with reverts("NotTrainer"):
        chain.trainers[1].add_stake(rid, ETH)


def test_register_validator_reverts_and_cap(chain: Chain) -> None:
    rid = make_run(chain)
    with reverts("StakeTooLow", required=2 * ETH):
        chain.validators[0].register_validator(rid, ETH)
    chain.validators[0].register_validator(rid, 2 * ETH)
    info = chain.sponsor.validator_info(rid, chain.validators[0].account.address)
    assert (info.stake, info.active, info.credit) == (2 * ETH, True, 0)
    with reverts("AlreadyRegistered"):
        chain.validators[0].register_validator(rid, 2 * ETH)
    with reverts("AlreadyRegistered"):
        chain.validators[0].register_trainer(rid, ETH)
    # fill up to MAX_VALIDATORS = 16 with fresh funded accounts
    extra = [Account.from_key(keccak(text=f"validator-{i}")) for i in range(16)]
    for account in extra:
        chain.node.set_balance(account.address, 10 * ETH)
    for account in extra[:15]:
        chain.sponsor.with_account(account).register_validator(rid, 2 * ETH)
    with reverts("RunFull", limit=16):
        chain.sponsor.with_account(extra[15]).register_validator(rid, 2 * ETH)
