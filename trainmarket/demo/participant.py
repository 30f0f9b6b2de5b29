"""One demo trainer as its own process: `python -m trainmarket.demo.participant --role ROLE …`.

It connects like any node (config fetched by CID and checked against the chain's digest, dataset by CID),
waits for the demo's first window, then runs the node loop with the role's policy. The key comes from the
environment, never from the command line (which other users of the machine can read)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

import torch

from base.errors import TrainmarketError
from node.data import fetch_dataset
from node.population import SyncLog
from node.runner import NodeSetup, TrainerNode
from trainmarket.demo.adversaries import adversary
from validator.context import chain_client, ipfs_client, load_run_config, read_deployment

KEY_ENV = "TRAINMARKET_PRIVATE_KEY"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deployment", type=Path, required=True)
    parser.add_argument("--ipfs-api", required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="shared dataset cache")
    parser.add_argument("--role", default="honest")
    parser.add_argument("--first-window", type=int, required=True)
    parser.add_argument("--last-window", type=int, required=True)
    parser.add_argument("--sybil-leader", default="")
    parser.add_argument("--sybil-member", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    except TrainmarketError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2


def run(args: argparse.Namespace) -> int:
    deployment = read_deployment(args.deployment)
    client = chain_client(deployment.rpc_url, deployment.address, os.environ[KEY_ENV], deployment.block)
    blobs = ipfs_client(args.ipfs_api)
    config = load_run_config(client, deployment.run_id, blobs, deployment.config_cid)
    dataset = fetch_dataset(blobs, config.dataset_cid, args.cache)
    kwargs: dict[str, object] = {}
    if args.role == "sybil":
        kwargs = {"leader": args.sybil_leader, "member": args.sybil_member, "cache_dir": args.cache}
    elif args.role == "malformed":
        kwargs = {"max_payload_bytes": config.max_payload_bytes}
    setup = NodeSetup(client, deployment.run_id, config, blobs, dataset, args.home)  # type: ignore[arg-type]
    log = SyncLog(args.home / "sync.jsonl", client.block_number)  # when each window trained (bench.load reads it)
    node = TrainerNode(setup, policy=adversary(args.role, **kwargs), observer=log)
    log.node = node
    (args.home / "ready").write_text("ready\n")
    print(f"{args.role} {client.address_of_account} ready; waiting for window {args.first_window}", flush=True)
    stop = threading.Event()
    start = node.clock.start(args.first_window)
    while client.block_number() + 1 < start:
        stop.wait(0.2)
    trained = node.run(stop, until_window=args.last_window)
    print(f"{args.role} {client.address_of_account} done after {trained} windows", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
