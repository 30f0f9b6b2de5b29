"""createRun, fund, registerTrainer, addStake, registerValidator: happy paths and every revert."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_account import Account
from eth_utils import keccak

from base.units import ETH

from .conftest import PARAMS, POOL, Chain, make_run, reverts


def test_create_run_stores_params_and_seeds_pool(chain: Chain) -> None:
    created = chain.node.block_number() + 1
    rid = make_run(chain)
    run = chain.sponsor.get_run(rid)
    assert (run.window_blocks, run.reveal_blocks, run.windows_per_epoch) == (10, 5, 2)
    assert run.start_block == created + PARAMS.start_delay_blocks
    assert (run.max_trainers, run.max_validators, run.publish_blocks) == (64, 16, 10)
    assert run.pool == POOL
    assert run.sponsor == chain.sponsor.account.address
    assert run.config_digest == PARAMS.config_digest
    assert run.trainer_count == run.validator_count == run.next_epoch == run.free_slots == 0
    assert not run.ended
    assert chain.sponsor.run_count() == rid + 1


# field, bad value, the bound it breaks (min, max) with PARAMS otherwise (window 10, reveal 5, 2 windows per
# epoch, grace 20): each bound is what protects something (contracts/README.md, "Parameters").
INVALID = [
    ("window_blocks", 0, (1, 2**32 - 1)),
    ("reveal_blocks", 0, (1, 20)),
    ("reveal_blocks", 21, (1, 20)),  # > (RING - 2) * window_blocks: no time left to report unavailability
    ("windows_per_epoch", 0, (1, 256)),
    ("windows_per_epoch", 257, (1, 256)),  # one revealReports carries every report CID of an epoch
    ("grace_period_blocks", 0, (2, 2**32 - 1)),  # grace 0: finalised in the block its settlement opens
    ("grace_period_blocks", 1, (2, 2**32 - 1)),
    ("unbonding_blocks", 64, (65, 2**32 - 1)),  # shorter than an epoch + its reveals + both settlement phases
    ("validator_share_bps", 10_001, (0, 10_000)),
    ("slash_bps", 10_001, (0, 10_000)),
    ("miss_threshold", 0, (1, 2**16 - 1)),
    ("min_trainer_stake", 0, (1, 2**88 - 1)),
    ("min_validator_stake", 0, (1, 2**96 - 1)),
    ("reward_per_epoch", 0, (1, 2**128 - 1)),
    ("max_validators", 0, (1, 16)),
    ("max_validators", 17, (1, 16)),
    ("max_trainers", 0, (1, 512)),
    ("max_trainers", 513, (1, 512)),  # 16 validators × 513 trainers > MAX_WEIGHT_ENTRIES (finalisation gas)
    ("publish_blocks", 0, (1, 2**32 - 1)),
]


@pytest.mark.parametrize(("field", "value", "bound"), INVALID, ids=[f"{f}={v}" for f, v, _ in INVALID])
def test_create_run_rejects_invalid_params(chain: Chain, field: str, value: int, bound: tuple[int, int]) -> None:
    camel = field.split("_")[0] + "".join(part.title() for part in field.split("_")[1:])
    params = replace(PARAMS, **{field: value})
    if field != "unbonding_blocks":
        params = replace(params, unbonding_blocks=10**6)
    with reverts("InvalidRunParams", field=camel, value=value, min=bound[0], max=bound[1]):
        chain.sponsor.create_run(params)


def test_fewer_validators_allow_more_trainers(chain: Chain) -> None:
    """The cap is on trainers × validators: 4 validators allow 2048 trainer slots, 8 allow 1024."""
    for validators, trainers in ((4, 2048), (8, 1024), (16, 512)):
        rid = chain.sponsor.create_run(replace(PARAMS, max_validators=validators, max_trainers=trainers))
        assert chain.sponsor.get_run(rid).max_trainers == trainers
    with reverts("InvalidRunParams", field="maxTrainers", max=1024):
        chain.sponsor.create_run(replace(PARAMS, max_validators=8, max_trainers=1025))


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


def test_trainer_slots_are_capped(chain: Chain) -> None:
    rid = make_run(chain, max_trainers=2)
    chain.trainers[0].register_trainer(rid, ETH)
    chain.trainers[1].register_trainer(rid, ETH)
    with reverts("RunFull", limit=2):
        chain.trainers[2].register_trainer(rid, ETH)


def test_register_validator_reverts_and_cap(chain: Chain) -> None:
    rid = make_run(chain)
    with reverts("StakeTooLow", required=2 * ETH):
        chain.validators[0].register_validator(rid, ETH)
    chain.validators[0].register_validator(rid, 2 * ETH)
    info = chain.sponsor.validator_info(rid, chain.validators[0].account.address)
    assert (info.stake, info.bond, info.active, info.credit) == (2 * ETH, 2 * ETH, True, 0)
    assert (info.from_epoch, info.until_epoch) == (0, 2**32 - 1)  # registered before the run started
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
