"""One Anvil and one deployment per test session; every test runs inside evm_snapshot/evm_revert, so tests
see a fresh chain without paying for a restart. Time is blocks: helpers mine, nothing sleeps.

Validators vote on an epoch in four steps (publish every window of it with its report sealed, commit the
weights, reveal the reports, reveal the weights); `settle` does all of it and finalises. Runs start
`start_delay_blocks` after creation, so validators registered right after `make_run` vote from epoch 0."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest
from eth_account import Account
from eth_utils import keccak
from web3 import Web3

from base.commitments import commitment_hash
from contracts.anvil import AnvilNode
from contracts.client import MAX_WEIGHT, TrainingRunClient
from contracts.deploy import Deployment, deploy
from contracts.errors import ContractReverted
from contracts.tx import NONCES
from contracts.types import RunParams

from .cids import cid

ETH = 10**18
PARAMS = RunParams(
    config_digest=keccak(b"test-run"),
    window_blocks=10,
    reveal_blocks=5,
    windows_per_epoch=2,
    grace_period_blocks=20,
    unbonding_blocks=65,  # the minimum: 2 windows of 10, 5 reveal blocks, 2 settlement phases of 20
    validator_share_bps=2000,
    slash_bps=1000,
    miss_threshold=2,
    min_trainer_stake=ETH,
    min_validator_stake=2 * ETH,
    reward_per_epoch=10 * ETH,
    max_trainers=64,
    max_validators=16,
    publish_blocks=10,
    start_delay_blocks=20,
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
    """A funded run with PARAMS and `overrides`; an unbonding not given is the smallest the contract accepts."""
    params = replace(PARAMS, **overrides)
    if "unbonding_blocks" not in overrides:
        params = replace(params, unbonding_blocks=RunParams.min_unbonding_blocks(
            params.window_blocks, params.reveal_blocks, params.windows_per_epoch, params.grace_period_blocks))
    return chain.sponsor.create_run(params, POOL)


def populated_run(chain: Chain, **overrides: int) -> int:
    """A funded run with three trainers (trainers[0..2]) and two validators (validators[0..1]), not started yet."""
    rid = make_run(chain, **overrides)
    for trainer in chain.trainers[:3]:
        trainer.register_trainer(rid, ETH)
    for validator in chain.validators[:2]:
        validator.register_validator(rid, 2 * ETH)
    return rid


@pytest.fixture
def run_id(chain: Chain) -> int:
    """`populated_run` with PARAMS, mined to the start of window 0 (both validators vote from epoch 0)."""
    rid = populated_run(chain)
    to_start(chain, rid)
    return rid


def salt_for(name: str) -> bytes:
    return keccak(text=f"salt-{name}")


def commit_cid(chain: Chain, client: TrainingRunClient, run_id: int, window: int, label: str) -> str:
    """Commit to the CID of content `label`; returns that CID (reveal it with salt_for(label))."""
    content = cid(label)
    client.commit(run_id, window, commitment_hash(content, salt_for(label), run_id, window, client.account.address))
    return content


def reveal_cid(client: TrainingRunClient, run_id: int, window: int, label: str) -> None:
    client.reveal(run_id, window, cid(label), salt_for(label))


def to_reveal_period(chain: Chain, run_id: int, window: int) -> None:
    chain.mine_to(chain.sponsor.window_bounds(run_id, window).end)


def to_epoch_end(chain: Chain, run_id: int, epoch: int) -> None:
    chain.mine_to(max(chain.node.block_number() + 1, chain.sponsor.epoch_end_block(run_id, epoch)))


def to_start(chain: Chain, run_id: int) -> None:
    """Mine until window 0 of the run is open (the next transaction lands in it)."""
    chain.mine_to(max(chain.node.block_number() + 1, chain.sponsor.get_run(run_id).start_block))


def publish_epoch(chain: Chain, run_id: int, epoch: int, validators: Sequence[TrainingRunClient]) -> None:
    """Every validator publishes every window of `epoch` (mining to each window's reveal end): what entitles
    it to vote on the epoch. Windows a validator already published are left alone."""
    per_epoch = chain.sponsor.get_run(run_id).windows_per_epoch
    for window in range(epoch * per_epoch, (epoch + 1) * per_epoch):
        reveal_end = chain.sponsor.window_bounds(run_id, window).reveal_end
        chain.mine_to(max(chain.node.block_number() + 1, reveal_end))
        for v in validators:
            try:
                v.publish_window(run_id, window, cid(f"model-{window}"), report_cid(window, v))
            except ContractReverted as err:
                if err.error_name != "AlreadyPublished":
                    raise


def report_cid(window: int, client: TrainingRunClient) -> str:
    """The report CID `publish_epoch` seals for `client` in `window`."""
    return cid(f"report-{window}-{client.account.address}")


def reveal_reports(chain: Chain, run_id: int, epoch: int, client: TrainingRunClient) -> None:
    """`client` reveals the report CIDs `publish_epoch` sealed for `epoch` (reveals must be open)."""
    per_epoch = chain.sponsor.get_run(run_id).windows_per_epoch
    windows = range(epoch * per_epoch, (epoch + 1) * per_epoch)
    client.reveal_reports(run_id, epoch, [report_cid(w, client) for w in windows])


def weight_salt(client: TrainingRunClient, epoch: int) -> bytes:
    return keccak(text=f"weights-{client.account.address}-{epoch}")


def vote(chain: Chain, run_id: int, epoch: int, ballots: Mapping[TrainingRunClient, Sequence[int]],
         reveal: bool = True, reports: bool = True, payouts: Mapping[TrainingRunClient, int] | None = None) -> None:
    """Commit every ballot, then (once reveals are open) reveal the voters' reports (with `reports`) and their
    ballots. The epoch's windows must be published (by `publish_epoch`, for the reports). Each ballot's payout is
    `payouts[client]`, else the whole trainer reward."""
    payout = {client: (payouts or {}).get(client, MAX_WEIGHT) for client in ballots}
    for client, weights in ballots.items():
        client.commit_weights(run_id, epoch, weights, weight_salt(client, epoch), payout[client])
    if not reveal:
        return
    state = chain.sponsor.settlement_of(run_id, epoch)
    if not state.reveals_open(chain.node.block_number() + 1):
        chain.mine_to(state.reveals_from)
    for client, weights in ballots.items():
        if reports:
            reveal_reports(chain, run_id, epoch, client)
        client.reveal_weights(run_id, epoch, weights, weight_salt(client, epoch), payout[client])


def settle(chain: Chain, run_id: int, epoch: int, ballots: Mapping[TrainingRunClient, Sequence[int]],
           publishers: Sequence[TrainingRunClient] | None = None,
           payouts: Mapping[TrainingRunClient, int] | None = None) -> None:
    """Publish the epoch's windows (by the voters, or `publishers`), vote, and finalise (anyone may)."""
    publish_epoch(chain, run_id, epoch, list(ballots) if publishers is None else publishers)
    to_epoch_end(chain, run_id, epoch)
    vote(chain, run_id, epoch, ballots, payouts=payouts)
    finalize(chain, run_id, epoch)


def settle_unvoted(chain: Chain, run_id: int, upto: int) -> None:
    """Finalise every epoch before `upto` that is still open, each after its deadline, with whatever was voted."""
    for epoch in range(chain.sponsor.get_run(run_id).next_epoch, upto):
        to_epoch_end(chain, run_id, epoch)
        finalize(chain, run_id, epoch, after_deadline=True)


def finalize(chain: Chain, run_id: int, epoch: int, after_deadline: bool = False) -> None:
    """Finalise `epoch` (by the sponsor, an uninvolved account); with `after_deadline`, once its reveal phase is
    over whatever was submitted."""
    if after_deadline:
        chain.mine_to(max(chain.node.block_number() + 1, chain.sponsor.settlement_of(run_id, epoch).closes_at))
    chain.sponsor.finalize_epoch(run_id, epoch)


@contextmanager
def reverts(error_name: str, **expected_args: object) -> Iterator[pytest.ExceptionInfo[ContractReverted]]:
    """Assert that the block raises ContractReverted naming `error_name` (and, if given, these arguments)."""
    with pytest.raises(ContractReverted) as info:
        yield info
    assert info.value.error_name == error_name, info.value
    for key, value in expected_args.items():
        assert info.value.error_args[key] == value, (key, info.value.error_args)
