"""`trainmarket devnet`: a local chain and IPFS daemon, the contract deployed, and a run created and funded
whose config (dataset and initial model included) is on IPFS: enough for `trainmarket node …` and
`trainmarket validator …` to join it by hand. `start_devnet()` is the library form.

With `--rpc-url` (any EVM chain) and/or `--ipfs-api` (any daemon with the Kubo RPC API, e.g. a user's Kubo)
it starts nothing of its own and deploys onto those instead, signing as the sponsor from `--keystore` or
$TRAINMARKET_PRIVATE_KEY: the same command sets up a multi-machine run (docs/MULTI_MACHINE.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from contracts.deploy import Deployment, deploy
from contracts.types import RunParams
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon, ipfs_api_from_env
from node.keys import PASSPHRASE_ENV, PRIVATE_KEY_ENV, load_account
from node.protocol import RunConfig
from trainmarket.errors import TrainmarketError
from trainmarket.paths import state_dir

ETH = 10**18
DEMO_PARAMS = RunParams(
    config_digest=keccak(text="trainmarket-demo-v1"),
    window_blocks=10,
    reveal_blocks=5,
    windows_per_epoch=3,
    grace_period_blocks=10,
    unbonding_blocks=55,  # the contract's minimum: an epoch (30), its last reveals (5), two settlement phases
    validator_share_bps=2000,
    slash_bps=1000,
    miss_threshold=3,
    min_trainer_stake=ETH,
    min_validator_stake=5 * ETH,
    reward_per_epoch=10 * ETH,
)
DEMO_POOL = 1000 * ETH
CORPUS_BYTES = 4_000_000


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
            "params": params,
            "pool_wei": DEMO_POOL,
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


def start_devnet(port: int | None = None, block_time: float | None = None, params: RunParams = DEMO_PARAMS,
                 config: RunConfig | None = None, rpc_url: str | None = None, ipfs_api: str | None = None,
                 sponsor: LocalAccount | None = None, deployment_file: Path | None = None) -> Devnet:
    """Start IPFS and Anvil (unless `ipfs_api` / `rpc_url` name external ones), publish the run config, deploy,
    create and fund the run, write the deployment file (with `run_id`, `config_cid` and `ipfs_api`, which the
    node and validator CLIs read). On an external chain `sponsor` signs and pays. The caller calls `stop()`."""
    from trainmarket.demo.network import publish_run_config  # the demo's dataset + initial model + config

    if rpc_url and sponsor is None:
        raise DevnetError(f"deploying to {rpc_url} needs the sponsor's key: pass --keystore (passphrase from "
                          f"${PASSPHRASE_ENV}) or set ${PRIVATE_KEY_ENV}")
    api = ipfs_api or ipfs_api_from_env()
    daemon = None if api else IpfsDaemon(state_dir() / "devnet" / "ipfs").start()
    node: AnvilNode | None = None
    try:
        api = api or (daemon.api_url if daemon is not None else "")
        with IpfsClient(api, timeout=60.0) as blobs:
            run_config, config_cid = publish_run_config(blobs, config or RunConfig(), CORPUS_BYTES)
        params = replace(params, config_digest=run_config.digest())
        if not rpc_url:
            node = AnvilNode(port=port, block_time=block_time).start()
            sponsor = sponsor or Account.from_key(node.private_keys[0])
        chain_url = rpc_url or (node.rpc_url if node is not None else "")
        assert sponsor is not None
        web3 = Web3(Web3.HTTPProvider(chain_url))
        deployment = replace(deploy(web3, sponsor), rpc_url=chain_url)
        run_id = TrainingRunClient(web3, deployment.address, sponsor, deployment.block).create_run(params, DEMO_POOL)
        deployment.save(deployment_file or deployment_path(), run_id=run_id, config_cid=config_cid, ipfs_api=api)
    except BaseException:
        if node is not None:
            node.stop()
        if daemon is not None:
            daemon.stop()
        raise
    keys = node.private_keys if node is not None else []
    return Devnet(chain_url, deployment, run_id, params, keys, api, config_cid, node, daemon)


def run_devnet(args: argparse.Namespace) -> int:
    sponsor = load_account(args.keystore) if args.keystore or args.rpc_url else None
    devnet = start_devnet(port=args.port, block_time=args.block_time, rpc_url=args.rpc_url, ipfs_api=args.ipfs_api,
                          sponsor=sponsor, deployment_file=args.deployment)
    try:
        summary = json.dumps(devnet.describe(), indent=2)
        devnet_summary_path().parent.mkdir(parents=True, exist_ok=True)
        devnet_summary_path().write_text(summary + "\n")
        print(summary)
        print(f"deployment written to {args.deployment or deployment_path()}, summary to {devnet_summary_path()}")
        if args.hold:
            print("chain and IPFS are up; Ctrl-C stops them", flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                while not stop.wait(0.5):
                    pass
    finally:
        devnet.stop()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "devnet", help="start Anvil and IPFS, deploy TrainingRun, publish a run config, create and fund the run")
    parser.add_argument("--hold", action="store_true", help="keep the chain and IPFS up until Ctrl-C")
    parser.add_argument("--port", type=int, default=None, help="RPC port (default: a free one)")
    parser.add_argument("--block-time", type=float, default=None, help="mine a block every N seconds")
    parser.add_argument("--rpc-url", default=None,
                        help="deploy onto this chain (any EVM JSON-RPC) instead of starting Anvil; needs a sponsor key")
    parser.add_argument("--ipfs-api", default=None,
                        help="use this IPFS RPC API (e.g. your Kubo) instead of starting one (default: "
                             "$TRAINMARKET_IPFS_API)")
    parser.add_argument("--keystore", type=Path, default=None,
                        help=f"sponsor's encrypted keystore (passphrase from ${PASSPHRASE_ENV}); else "
                             f"${PRIVATE_KEY_ENV}; default on the local chain: its first dev key")
    parser.add_argument("--deployment", type=Path, default=None,
                        help="where to write the deployment file (default: the state dir's devnet/deployment.json)")
    parser.set_defaults(func=run_devnet)
