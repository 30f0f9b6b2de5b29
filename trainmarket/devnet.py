"""`trainmarket devnet`: a local chain with the contracts deployed and a demo run created and funded.
`trainmarket demo` runs the same until the full demo replaces it. `start_devnet()` is the library form."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import keccak
from web3 import Web3

from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from contracts.deploy import Deployment, deploy
from contracts.types import RunParams
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


def deployment_path() -> Path:
    return state_dir() / "devnet" / "deployment.json"


def devnet_summary_path() -> Path:
    """What `describe()` printed (RPC URL, run id, params, accounts), for other processes of a demo."""
    return state_dir() / "devnet" / "devnet.json"


@dataclass
class Devnet:
    """A running devnet: the chain, where the contract is, the demo run and the funded dev keys."""

    node: AnvilNode
    deployment: Deployment
    run_id: int
    params: RunParams
    private_keys: list[str]

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
            "params": params,
            "pool_wei": DEMO_POOL,
            "accounts": [Account.from_key(k).address for k in self.private_keys],
        }


def start_devnet(port: int | None = None, block_time: float | None = None, params: RunParams = DEMO_PARAMS) -> Devnet:
    """Start Anvil, deploy, create and fund a run, write the deployment file. The caller stops `node`."""
    node = AnvilNode(port=port, block_time=block_time).start()
    try:
        web3 = Web3(Web3.HTTPProvider(node.rpc_url))
        sponsor = Account.from_key(node.private_keys[0])
        deployment = deploy(web3, sponsor)
        deployment.save(deployment_path())
        run_id = TrainingRunClient(web3, deployment.address, sponsor, deployment.block).create_run(params, DEMO_POOL)
    except BaseException:
        node.stop()
        raise
    return Devnet(node, deployment, run_id, params, node.private_keys)


def run_devnet(args: argparse.Namespace) -> int:
    devnet = start_devnet(port=args.port, block_time=args.block_time)
    try:
        summary = json.dumps(devnet.describe(), indent=2)
        devnet_summary_path().write_text(summary + "\n")
        print(summary)
        print(f"deployment written to {deployment_path()}, summary to {devnet_summary_path()}")
        if args.hold:
            print("chain is up; Ctrl-C stops it", flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                while not stop.wait(0.5):
                    pass
    finally:
        devnet.node.stop()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    for name, help_text in (("devnet", "start Anvil, deploy TrainingRun, create and fund a demo run"),):
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument("--hold", action="store_true", help="keep the chain up until Ctrl-C")
        parser.add_argument("--port", type=int, default=None, help="RPC port (default: a free one)")
        parser.add_argument("--block-time", type=float, default=None, help="mine a block every N seconds")
        parser.set_defaults(func=run_devnet)
