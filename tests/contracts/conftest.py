"""One Anvil and one deployment per test session; every test runs inside evm_snapshot/evm_revert, so tests
see a fresh chain without paying for a restart. Time is blocks: helpers mine, nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest
from eth_account import Account
from eth_utils import keccak
from web3 import Web3

from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient, commitment_hash
from contracts.deploy import Deployment, deploy
from contracts.errors import ContractReverted
from contracts.tx import NONCES
from contracts.types import RunParams

ETH = 10**18
PARAMS = RunParams(
    config_digest=keccak(b"test-run"),
    window_blocks=10,
    reveal_blocks=5,
    windows_per_epoch=2,
    grace_period_blocks=8,
    unbonding_blocks=6,
    validator_share_bps=2000,
    slash_bps=1000,
    miss_threshold=2,
    min_trainer_stake=ETH,
    min_validator_stake=2 * ETH,
    reward_per_epoch=10 * ETH,
)
POOL = 100 * ETH


@dataclass
class Chain:
    node: AnvilNode
    web3: Web3
    deployment: Deployment
    sponsor: TrainingRunClient
    validators: list[TrainingRunClient]  # dev accounts 1..3
    trainers: list[TrainingRunClient]  # dev accounts 4..9

    def mine_to(self, block: int) -> None:
        """Mine so that the next transaction lands in `block`."""
        missing = block - 1 - self.node.block_number()
        assert missing >= 0, f"already past block {block}"
        self.node.mine(missing)

    def balance(self, client: TrainingRunClient) -> int:
        return int(self.web3.eth.get_balance(client.account.address))


@pytest.fixture(scope="session")
def chain() -> Iterator[Chain]:
    with AnvilNode() as node:
        web3 = Web3(Web3.HTTPProvider(node.rpc_url))
        accounts = [Account.from_key(k) for k in node.private_keys]
        deployment = deploy(web3, accounts[0])
        sponsor = TrainingRunClient(web3, deployment.address, accounts[0], deployment.block)
        yield Chain(
            node,
            web3,
            deployment,
            sponsor,
            [sponsor.with_account(a) for a in accounts[1:4]],
            [sponsor.with_account(a) for a in accounts[4:10]],
        )


@pytest.fixture(autouse=True)
def isolated(request: pytest.FixtureRequest) -> Iterator[None]:
    """Snapshot before and revert after every test that uses the chain."""
    if "chain" not in request.fixturenames:
        yield
        return
    chain: Chain = request.getfixturevalue("chain")
    snapshot = chain.node.snapshot()
    yield
    chain.node.revert(snapshot)
    NONCES.reset()


def make_run(chain: Chain, **overrides: int) -> int:
    return chain.sponsor.create_run(replace(PARAMS, **overrides), POOL)


@pytest.fixture
def run_id(chain: Chain) -> int:
    """A funded run with PARAMS, three trainers (trainers[0..2]) and two validators (validators[0..1])."""
    rid = make_run(chain)
    for trainer in chain.trainers[:3]:
        trainer.register_trainer(rid, ETH)
    for validator in chain.validators[:2]:
        validator.register_validator(rid, 2 * ETH)
    return rid


def salt_for(name: str) -> bytes:
    return keccak(text=f"salt-{name}")


def commit_cid(chain: Chain, client: TrainingRunClient, run_id: int, window: int, cid: str) -> None:
    client.commit(run_id, window, commitment_hash(cid, salt_for(cid), run_id, window, client.account.address))


def to_reveal_period(chain: Chain, run_id: int, window: int) -> None:
    chain.mine_to(chain.sponsor.window_bounds(run_id, window).end)


def to_epoch_end(chain: Chain, run_id: int, epoch: int) -> None:
    chain.mine_to(chain.sponsor.epoch_end_block(run_id, epoch))


@contextmanager
def reverts(error_name: str, **expected_args: object) -> Iterator[pytest.ExceptionInfo[ContractReverted]]:
    """Assert that the block raises ContractReverted naming `error_name` (and, if given, these arguments)."""
    with pytest.raises(ContractReverted) as info:
        yield info
    assert info.value.error_name == error_name, info.value
    for key, value in expected_args.items():
        assert info.value.error_args[key] == value, (key, info.value.error_args)
