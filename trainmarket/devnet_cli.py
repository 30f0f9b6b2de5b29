"""`trainmarket devnet`: the command over trainmarket/devnet.py. Its parser imports nothing heavy, so
`--help` is instant; `--hold` keeps the chain ticking and IPFS up, and restarts the IPFS daemon if it dies."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from base import env
from base.errors import TrainmarketError
from base.units import ETH, eth, parse_eth

if TYPE_CHECKING:
    from trainmarket.devnet import Devnet

WATCH_SECONDS = 1.0


def run_devnet(args: argparse.Namespace) -> int:
    from node.keys import load_account
    from trainmarket.devnet import DevnetSettings, devnet_summary_path, start_devnet

    settings = DevnetSettings(
        model=args.model, window_blocks=args.window_blocks, reveal_blocks=args.reveal_blocks,
        windows_per_epoch=args.windows_per_epoch, pool_wei=args.pool, reward_per_epoch_wei=args.reward_per_epoch,
        min_trainer_stake_wei=args.trainer_stake, min_validator_stake_wei=args.validator_stake,
        block_time=args.block_time or None,
    )
    sponsor = load_account(args.keystore) if args.keystore or args.rpc_url else None
    devnet = start_devnet(settings, port=args.port, rpc_url=args.rpc_url, ipfs_api=args.ipfs_api, sponsor=sponsor,
                          deployment_file=args.deployment)
    try:
        summary = json.dumps(devnet.describe(), indent=2)
        devnet_summary_path().parent.mkdir(parents=True, exist_ok=True)
        devnet_summary_path().write_text(summary + "\n")
        print(summary)
        deployment = args.deployment or devnet_summary_path().with_name("deployment.json")
        print(f"deployment written to {deployment}, summary to {devnet_summary_path()}")
        p = devnet.params
        clock = (f"a block every {args.block_time} s" if devnet.node is not None and args.block_time
                 else "blocks as the chain makes them")
        print(f"run {devnet.run_id}: {settings.model} model, windows of {p.window_blocks} blocks + "
              f"{p.reveal_blocks} to reveal, {p.windows_per_epoch} windows per epoch, pool {eth(settings.pool_wei)} "
              f"ETH; {clock}", flush=True)
        if args.hold:
            return _hold(devnet)
    finally:
        devnet.stop()
    return 0


def _hold(devnet: Devnet) -> int:
    """Until Ctrl-C or SIGTERM: restart the IPFS daemon when it dies (same repo and port, so every client's
    URL stays right and pinned content is still there); stop with an error when the chain dies (its state
    is gone with it: start a new devnet)."""
    print("chain and IPFS are up; Ctrl-C stops them", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        while not stop.wait(WATCH_SECONDS):
            if devnet.node is not None and not devnet.node.running:
                print(f"{_now()} error: the chain at {devnet.rpc_url} exited (log: {devnet.node.log_path}); its "
                      "state is lost: start a new devnet", file=sys.stderr, flush=True)
                return 1
            if devnet.ipfs is not None and not devnet.ipfs.running:
                print(f"{_now()} the IPFS daemon at {devnet.ipfs_api} died; restarting it", flush=True)
                try:
                    devnet.ipfs.stop()
                    devnet.ipfs.start()
                except (TrainmarketError, OSError) as err:
                    print(f"{_now()} error: cannot restart IPFS: {err}", file=sys.stderr, flush=True)
                    return 1
                print(f"{_now()} IPFS is back at {devnet.ipfs_api}", flush=True)
    return 0


def _now() -> str:
    return time.strftime("%H:%M:%S")


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "devnet", help="start Anvil and IPFS, deploy TrainingRun, publish a run config, create and fund the run",
        description="Start a local chain (a block every --block-time seconds) and an IPFS daemon, deploy the "
        "contract, publish a dataset, an initial model and the run config, create and fund a run, and write "
        "the deployment file every node and validator command reads by default. With --rpc-url/--ipfs-api it "
        "deploys onto an existing chain and daemon instead (the sponsor's balance is checked first).")
    parser.add_argument("--hold", action="store_true",
                        help="keep the chain and IPFS up until Ctrl-C (restarts IPFS if it dies)")
    parser.add_argument("--port", type=int, default=None, help="local chain's RPC port (default: a free one)")
    parser.add_argument("--block-time", type=int, default=1, metavar="SECONDS",
                        help="local chain: mine a block every SECONDS (default 1; 0: one block per transaction, "
                             "so the chain only moves when something is sent)")
    parser.add_argument("--model", default="tiny", choices=("tiny", "small", "base"),
                        help="model preset of the run (default tiny; small and base want a GPU)")
    parser.add_argument("--window-blocks", type=int, default=20, metavar="N",
                        help="blocks per window, i.e. per training round (default 20)")
    parser.add_argument("--reveal-blocks", type=int, default=5, metavar="N",
                        help="blocks after a window in which its commitments are revealed (default 5)")
    parser.add_argument("--windows-per-epoch", type=int, default=3, metavar="N",
                        help="windows per reward epoch (default 3)")
    parser.add_argument("--pool", type=parse_eth, default=1000 * ETH, metavar="ETH",
                        help="reward pool the sponsor deposits, in ETH (default 1000)")
    parser.add_argument("--reward-per-epoch", type=parse_eth, default=10 * ETH, metavar="ETH",
                        help="rewards paid out per epoch, in ETH (default 10)")
    parser.add_argument("--trainer-stake", type=parse_eth, default=ETH, metavar="ETH",
                        help="minimum stake of a trainer, in ETH (default 1)")
    parser.add_argument("--validator-stake", type=parse_eth, default=5 * ETH, metavar="ETH",
                        help="minimum stake of a validator, in ETH (default 5)")
    parser.add_argument("--rpc-url", default=None,
                        help="deploy onto this chain (any EVM JSON-RPC) instead of starting Anvil; needs a funded "
                             "sponsor key")
    parser.add_argument("--ipfs-api", default=None,
                        help=f"use this IPFS RPC API (e.g. your Kubo) instead of starting one (default: "
                             f"${env.IPFS_API})")
    parser.add_argument("--keystore", type=Path, default=None,
                        help=f"sponsor's encrypted keystore (passphrase from ${env.KEY_PASSPHRASE} or a prompt); "
                             f"else ${env.PRIVATE_KEY}; default on the local chain: its first dev key")
    parser.add_argument("--deployment", type=Path, default=None,
                        help=f"where to write the deployment file (default: ~/.trainmarket/devnet/deployment.json, "
                             f"or under ${env.HOME})")
    parser.set_defaults(func=run_devnet)
