"""`trainmarket devnet`: a local chain and IPFS daemon, the contract deployed, and a run created and funded
whose config (dataset and initial model included) is on IPFS: enough for `trainmarket node …` and
`trainmarket validator …` to join it by hand. `start_devnet()` is the library form."""

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
from eth_utils import keccak
from web3 import Web3

from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from contracts.deploy import Deployment, deploy
from contracts.types import RunParams
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon, ipfs_api_from_env
from node.protocol import RunConfig
from trainmarket.paths import state_dir

ETH = 10**18
DEMO_PARAMS = RunParams(
    config_digest=keccak(text="trainmarket-demo-v1"),
    window_blocks=10,
    reveal_blocks=5,
    windows_per_epoch=3,
    grace_period_blocks=10,
    unbonding_blocks=20,
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

    node: AnvilNode
    deployment: Deployment
    run_id: int
    params: RunParams
    private_keys: list[str]
    ipfs_api: str
    config_cid: str
    ipfs: IpfsDaemon | None = None  # None when the user's own daemon (TRAINMARKET_IPFS_API) serves the run

    def client(self, key_index: int = 0) -> TrainingRunClient:
        web3 = Web3(Web3.HTTPProvider(self.node.rpc_url))
        account = Account.from_key(self.private_keys[key_index])
        return TrainingRunClient(web3, self.deployment.address, account, self.deployment.block)

    def describe(self) -> dict[str, Any]:
        params = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in asdict(self.params).items()}
        return {
            "rpc_url": self.node.rpc_url,
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
        self.node.stop()
        if self.ipfs is not None:
            self.ipfs.stop()


def start_devnet(port: int | None = None, block_time: float | None = None, params: RunParams = DEMO_PARAMS,
                 config: RunConfig | None = None) -> Devnet:
    """Start IPFS and Anvil, publish the run config, deploy, create and fund the run, write the deployment
    file (with `run_id` and `config_cid`, which the node and validator CLIs read). The caller calls `stop()`."""
    from trainmarket.demo.network import publish_run_config  # the demo's dataset + initial model + config

    api = ipfs_api_from_env()
    daemon = None if api else IpfsDaemon(state_dir() / "devnet" / "ipfs").start()
    node: AnvilNode | None = None
    try:
        api = api or (daemon.api_url if daemon is not None else "")
        with IpfsClient(api, timeout=60.0) as blobs:
            run_config, config_cid = publish_run_config(blobs, config or RunConfig(), CORPUS_BYTES)
        params = replace(params, config_digest=run_config.digest())
        node = AnvilNode(port=port, block_time=block_time).start()
        web3 = Web3(Web3.HTTPProvider(node.rpc_url))
        sponsor = Account.from_key(node.private_keys[0])
        deployment = deploy(web3, sponsor)
        run_id = TrainingRunClient(web3, deployment.address, sponsor, deployment.block).create_run(params, DEMO_POOL)
        deployment.save(deployment_path(), run_id=run_id, config_cid=config_cid)
    except BaseException:
        if node is not None:
            node.stop()
        if daemon is not None:
            daemon.stop()
        raise
    return Devnet(node, deployment, run_id, params, node.private_keys, api, config_cid, daemon)


def run_devnet(args: argparse.Namespace) -> int:
    devnet = start_devnet(port=args.port, block_time=args.block_time)
    try:
        summary = json.dumps(devnet.describe(), indent=2)
        devnet_summary_path().write_text(summary + "\n")
        print(summary)
        print(f"deployment written to {deployment_path()}, summary to {devnet_summary_path()}")
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
    parser.set_defaults(func=run_devnet)
