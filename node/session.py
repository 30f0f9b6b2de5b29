"""Connecting a trainer to its run, with one plain sentence for every way that can fail: chain unreachable,
IPFS unreachable, not registered, insufficient stake, wrong protocol digest, and decoded reverts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.exceptions import Web3Exception

from base.errors import TrainmarketError
from base.paths import state_dir
from base.run_config import RunConfig
from base.units import eth
from contracts.client import TrainingRunClient
from contracts.errors import ChainUnreachable, ContractReverted
from contracts.rpc import http_web3
from contracts.types import TrainerInfo
from ipfs.client import IpfsClient
from ipfs.daemon import ipfs_api_from_env
from node.chain_view import NodeDeployment, read_deployment

DEFAULT_IPFS_API = "http://127.0.0.1:5001"
CONFIG_MAX_BYTES = 1024 * 1024
# Gas a registration may cost, bounded from above, so that an account that passes the funds check is not
# stopped by gas. Measured on Anvil: registerTrainer 169,906, registerValidator 58,628.
REGISTER_GAS_BOUND = 300_000


class NodeError(TrainmarketError):
    """A trainer command cannot proceed; the message is one sentence a user can act on."""


class NotRegistered(NodeError):
    def __init__(self, run_id: int, account: str) -> None:
        super().__init__(
            f"account {account} is not registered as a trainer in run {run_id}: "
            "run `trainmarket node register --stake ETH` first"
        )


class InsufficientStake(NodeError):
    def __init__(self, run_id: int, account: str, stake: int, required: int) -> None:
        self.stake = stake
        self.required = required
        super().__init__(
            f"insufficient stake: account {account} has {eth(stake)} ETH staked in run {run_id}, "
            f"the run requires at least {eth(required)} ETH"
        )


class Underfunded(NodeError):
    """The account cannot pay the stake plus gas: names the address and the amount to send."""

    def __init__(self, account: str, balance: int, needed: int, what: str) -> None:
        self.account = account
        self.balance = balance
        self.needed = needed
        super().__init__(
            f"account {account} has {eth(balance)} ETH; {what} needs about {eth(needed)} ETH with gas: send "
            f"{eth(needed - balance)} ETH more to {account}"
        )


def require_funds(client: TrainingRunClient, value: int, what: str, gas: int = REGISTER_GAS_BOUND) -> None:
    """Refuse (Underfunded) before signing when the account's balance is below `value` plus `gas` at the
    current gas price; the node's own "insufficient funds" error would name neither the address nor the
    amount."""
    me = client.address_of_account
    try:
        balance = client.web3.eth.get_balance(me)  # type: ignore[arg-type]
        needed = value + client.web3.eth.gas_price * gas
    except (OSError, Web3Exception) as err:
        raise ChainUnreachable(client.rpc_url, str(err)) from err
    if balance < needed:
        raise Underfunded(me, balance, needed, what)


def explain_revert(err: ContractReverted) -> str:
    """A decoded contract revert as a plain sentence for the node's user."""
    a = err.error_args
    known = {
        "NotTrainer": lambda: f"account {a.get('account')} is not registered in run {a.get('runId')}",
        "StakeTooLow": lambda: (
            f"insufficient stake: {eth(int(a['stake']))} ETH offered or staked, the run requires "
            f"{eth(int(a['required']))} ETH"
        ),
        "AlreadyRegistered": lambda: f"account {a.get('account')} is already registered in run {a.get('runId')}",
        "UnknownRun": lambda: f"run {a.get('runId')} does not exist on this contract",
        "NothingToClaim": lambda: f"nothing to claim in run {a.get('runId')} yet",
        "NotUnbonding": lambda: "no unstake was requested: run `trainmarket node unstake` to request one",
        "Unbonding": lambda: "this account is unbonding and can no longer take part in the run",
        "UnbondingNotOver": lambda: f"the stake unlocks at block {a.get('availableAt')}; try again then",
        "NothingToWithdraw": lambda: "there is no stake left to withdraw",
        "WrongWindow": lambda: f"window {a.get('window')} is not open (now: {a.get('currentWindow')})",
    }
    explain = known.get(err.error_name)
    return f"the contract refused {err.function}: {explain()}" if explain else err.plain()


@dataclass(frozen=True)
class NodeTarget:
    """Where a node's run lives, resolved from flags and the deployment file."""

    rpc_url: str
    contract: str
    from_block: int
    run_id: int
    config_cid: str
    ipfs_api: str


def default_deployment() -> Path:
    """Where `trainmarket devnet` writes the deployment file."""
    return state_dir() / "devnet" / "deployment.json"


def resolve_target(
    deployment_file: Path | None, rpc_url: str | None, run_id: int | None, config_cid: str | None,
    ipfs_api: str | None,
) -> NodeTarget:
    deployment_file = deployment_file or default_deployment()
    deployment: NodeDeployment = read_deployment(deployment_file)
    extra: dict[str, Any] = json.loads(deployment_file.read_text())
    return NodeTarget(
        rpc_url=rpc_url or deployment.rpc_url,
        contract=deployment.address,
        from_block=deployment.block,
        run_id=run_id if run_id is not None else (deployment.run_id or 0),
        config_cid=config_cid or deployment.config_cid,
        ipfs_api=ipfs_api or ipfs_api_from_env() or str(extra.get("ipfs_api") or DEFAULT_IPFS_API),
    )


def connect_chain(target: NodeTarget, account: LocalAccount) -> TrainingRunClient:
    """A client for the node's account; fails with ChainUnreachable now rather than mid-window."""
    web3 = http_web3(target.rpc_url, timeout=10)
    client = TrainingRunClient(web3, target.contract, account, target.from_block)
    client.block_number()
    return client


def connect_ipfs(target: NodeTarget) -> IpfsClient:
    """An IPFS client whose daemon answered; IpfsUnavailable otherwise."""
    with IpfsClient(target.ipfs_api, retries=1) as probe:  # fail fast here; the loop's client retries
        probe.version()
    return IpfsClient(target.ipfs_api)


def require_trainer(client: TrainingRunClient, run_id: int) -> TrainerInfo:
    """The node's trainer record, refusing an account that is not registered or whose stake fell short."""
    me = client.address_of_account
    info = client.trainer_info(run_id, me)
    if not info.registered:
        raise NotRegistered(run_id, me)
    required = client.get_run(run_id).min_trainer_stake
    if info.stake < required:
        raise InsufficientStake(run_id, me, info.stake, required)
    return info


def load_config(client: TrainingRunClient, run_id: int, blobs: IpfsClient, config_cid: str) -> RunConfig:
    """The run's config fetched by CID and checked against the digest fixed on chain (ProtocolMismatch)."""
    if not config_cid:
        raise NodeError("no run config CID: pass --config-cid or add config_cid to the deployment file")
    digest = bytes(client.get_run(run_id).config_digest)
    return RunConfig.from_json_bytes(blobs.cat(config_cid, CONFIG_MAX_BYTES), expected_digest=digest)


def node_home(home: Path | None, account: str, run_id: int) -> Path:
    """The journal/cache folder: --home, else one per (account, run) under the state dir."""
    folder = home if home is not None else state_dir() / "node" / account.lower() / f"run-{run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
