"""A devnet: a local chain and IPFS daemon (or external ones), the contract deployed, and a run created and
funded whose config (dataset and initial model included) is on IPFS: enough for `trainmarket node …` and
`trainmarket validator …` to join it by hand. `start_devnet()` is the library form; the command is in
trainmarket/devnet_cli.py.

With `rpc_url` (any EVM chain) and/or `ipfs_api` (any daemon with the Kubo RPC API, e.g. a user's Kubo) it
starts nothing of its own and deploys onto those instead, signing as the sponsor: the same code sets up a
multi-machine run (docs/MULTI_MACHINE.md). On an external chain it checks the sponsor's balance before it
spends anything."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import Web3Exception

from base import env
from base.errors import TrainmarketError
from base.paths import state_dir
from base.run_config import RunConfig
from base.units import ETH, eth
from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from contracts.compile import load_artifact
from contracts.deploy import Deployment, deploy
from contracts.errors import ChainUnreachable
from contracts.types import RunParams
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon, ipfs_api_from_env

CORPUS_BYTES = 4_000_000
# Gas of createRun, bounded from above (it cannot be estimated before the contract exists). Measured on Anvil
# with the devnet's parameters: 168,216 (the deployment: 4,175,923, which is estimated). Twice that, so a
# sponsor who passes the check is never stopped half-way by gas.
CREATE_RUN_GAS_BOUND = 350_000


@dataclass(frozen=True)
class DevnetSettings:
    """What a devnet's run looks like: the flags of `trainmarket devnet`, with their defaults.

    The defaults fit a trainer and a validator sharing a 2-core machine with the tiny model at one block per
    second. Measured there (`node run` prints it): the tiny model's 20 inner steps took 1-2 s with the machine
    otherwise idle and 8-11 s under a load average of 7 from other jobs, when 10-block windows missed their
    commits; 20 blocks leave room for that, the commit and the IPFS add."""

    model: str = "tiny"
    window_blocks: int = 20
    reveal_blocks: int = 5
    windows_per_epoch: int = 3
    pool_wei: int = 1000 * ETH
    reward_per_epoch_wei: int = 10 * ETH
    min_trainer_stake_wei: int = ETH
    min_validator_stake_wei: int = 5 * ETH
    slash_bps: int = 1000
    miss_threshold: int = 3
    validator_share_bps: int = 2000
    block_time: float | None = 1.0  # None: a block per transaction (tests that mine by hand)

    def run_params(self, config_digest: bytes) -> RunParams:
        """The run's chain parameters. Grace: validators need a window's time after an epoch's last reveal
        period to score it and submit weights. Unbonding outlasts an epoch plus its grace, so a trainer cannot
        leave with its stake before the epoch it took part in is settled (and slashed if it must be): the contract
        asks for an epoch, its last reveal period and two settlement phases (weights commit, then reveal)."""
        grace = max(self.window_blocks, 2 * self.reveal_blocks, 10)
        epoch_blocks = self.windows_per_epoch * self.window_blocks + self.reveal_blocks
        return RunParams(
            config_digest=config_digest,
            window_blocks=self.window_blocks,
            reveal_blocks=self.reveal_blocks,
            windows_per_epoch=self.windows_per_epoch,
            grace_period_blocks=grace,
            unbonding_blocks=epoch_blocks + 2 * grace + self.window_blocks,  # the contract's minimum + a window
            validator_share_bps=self.validator_share_bps,
            slash_bps=self.slash_bps,
            miss_threshold=self.miss_threshold,
            min_trainer_stake=self.min_trainer_stake_wei,
            min_validator_stake=self.min_validator_stake_wei,
            reward_per_epoch=self.reward_per_epoch_wei,
        )


def deployment_path() -> Path:
    return state_dir() / "devnet" / "deployment.json"


def devnet_summary_path() -> Path:
    """What `describe()` printed (RPC URL, run id, params, accounts), for other processes of a demo."""
    return state_dir() / "devnet" / "devnet.json"


@dataclass
class Devnet:
    """A running devnet: the chain, IPFS, where the contract is, the run, its config and the funded dev keys."""

    rpc_url: str
    deployment: Deployment
    run_id: int
    params: RunParams
    private_keys: list[str]  # the local chain's funded dev keys; empty on an external chain
    ipfs_api: str
    config_cid: str
    settings: DevnetSettings
    node: AnvilNode | None = None  # None when an external chain (--rpc-url) serves the run
    ipfs: IpfsDaemon | None = None  # None when the user's own daemon (--ipfs-api, TRAINMARKET_IPFS_API) serves it

    def client(self, key_index: int = 0) -> TrainingRunClient:
        web3 = Web3(Web3.HTTPProvider(self.rpc_url))
        account = Account.from_key(self.private_keys[key_index])
        return TrainingRunClient(web3, self.deployment.address, account, self.deployment.block)

    def describe(self) -> dict[str, Any]:
        params = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in asdict(self.params).items()}
        return {
            "rpc_url": self.rpc_url,
            "chain_id": self.deployment.chain_id,
            "contract": self.deployment.address,
            "deployed_at_block": self.deployment.block,
            "run_id": self.run_id,
            "config_cid": self.config_cid,
            "ipfs_api": self.ipfs_api,
            "model": self.settings.model,
            "block_time_s": self.settings.block_time if self.node is not None else None,
            "params": params,
            "pool_wei": self.settings.pool_wei,
            "accounts": [Account.from_key(k).address for k in self.private_keys],
        }

    def stop(self) -> None:
        """Stops what this devnet started; an external chain or daemon is left alone."""
        if self.node is not None:
            self.node.stop()
        if self.ipfs is not None:
            self.ipfs.stop()


class DevnetError(TrainmarketError):
    """The devnet cannot be set up as asked (an external chain without a sponsor key, …)."""


class SponsorUnderfunded(DevnetError):
    """The sponsor's balance cannot pay for the deployment, the run and its pool."""

    def __init__(self, address: str, rpc_url: str, balance: int, needed: int, pool: int) -> None:
        self.address = address
        self.balance = balance
        self.needed = needed
        super().__init__(
            f"sponsor {address} has {eth(balance)} ETH on {rpc_url}; deploying and funding a reward pool of "
            f"{eth(pool)} ETH needs about {eth(needed)} ETH: send {eth(needed - balance)} ETH more to {address}, "
            "or pass a smaller --pool"
        )


def check_sponsor_funds(web3: Web3, sponsor: LocalAccount, pool_wei: int) -> int:
    """Refuse (SponsorUnderfunded) before any transaction when the sponsor cannot pay the deployment's gas,
    createRun's gas and the pool. Returns the amount needed."""
    url = str(getattr(web3.provider, "endpoint_uri", ""))
    artifact = load_artifact()
    try:
        balance = web3.eth.get_balance(sponsor.address)
        price = web3.eth.gas_price
        deploy_gas = web3.eth.estimate_gas({"from": sponsor.address, "data": artifact["bytecode"]})
    except (OSError, Web3Exception) as err:
        raise ChainUnreachable(url, str(err)) from err
    needed = pool_wei + price * (deploy_gas + CREATE_RUN_GAS_BOUND)
    if balance < needed:
        raise SponsorUnderfunded(sponsor.address, url, balance, needed, pool_wei)
    return needed


def start_devnet(settings: DevnetSettings | None = None, port: int | None = None, config: RunConfig | None = None,
                 rpc_url: str | None = None, ipfs_api: str | None = None, sponsor: LocalAccount | None = None,
                 deployment_file: Path | None = None, params: RunParams | None = None) -> Devnet:
    """Start IPFS and Anvil (unless `ipfs_api` / `rpc_url` name external ones), publish the run config, deploy,
    create and fund the run, write the deployment file (with `run_id`, `config_cid` and `ipfs_api`, which the
    node and validator CLIs read). On an external chain `sponsor` signs and pays. `params` overrides the
    settings' chain parameters (its config digest is replaced). The caller calls `stop()`."""
    from trainmarket.demo.network import publish_run_config  # the demo's dataset + initial model + config

    settings = settings or DevnetSettings()
    if rpc_url and sponsor is None:
        raise DevnetError(f"deploying to {rpc_url} needs the sponsor's key: pass --keystore (passphrase from "
                          f"${env.KEY_PASSPHRASE}) or set ${env.PRIVATE_KEY}")
    if rpc_url and sponsor is not None:  # before anything is published or spent
        check_sponsor_funds(Web3(Web3.HTTPProvider(rpc_url)), sponsor, settings.pool_wei)
    api = ipfs_api or ipfs_api_from_env()
    daemon = None if api else IpfsDaemon(state_dir() / "devnet" / "ipfs").start()
    node: AnvilNode | None = None
    try:
        api = api or (daemon.api_url if daemon is not None else "")
        base = config or RunConfig(model_preset=settings.model)
        with IpfsClient(api, timeout=60.0) as blobs:
            run_config, config_cid = publish_run_config(blobs, base, CORPUS_BYTES)
        run_params = replace(params or settings.run_params(b""), config_digest=run_config.digest())
        if not rpc_url:
            # Anvil mines every transaction at once until the clock starts, so the setup takes no block waits.
            node = AnvilNode(port=port).start()
            sponsor = sponsor or Account.from_key(node.private_keys[0])
        chain_url = rpc_url or (node.rpc_url if node is not None else "")
        assert sponsor is not None
        web3 = Web3(Web3.HTTPProvider(chain_url))
        if node is not None:  # a local chain funds its dev keys, not a sponsor from --keystore
            check_sponsor_funds(web3, sponsor, settings.pool_wei)
        deployment = replace(deploy(web3, sponsor), rpc_url=chain_url)
        client = TrainingRunClient(web3, deployment.address, sponsor, deployment.block)
        run_id = client.create_run(run_params, settings.pool_wei)
        deployment.save(deployment_file or deployment_path(), run_id=run_id, config_cid=config_cid, ipfs_api=api)
        if node is not None and settings.block_time:
            node.start_clock(settings.block_time)
    except BaseException:
        if node is not None:
            node.stop()
        if daemon is not None:
            daemon.stop()
        raise
    keys = node.private_keys if node is not None else []
    return Devnet(chain_url, deployment, run_id, run_params, keys, api, config_cid, settings, node, daemon)
