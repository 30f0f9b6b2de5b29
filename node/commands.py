"""The trainer's commands (parsers in node/cli.py).

Every failure the user can fix comes out as one sentence (via TrainmarketError in trainmarket/cli.py);
contract reverts are decoded into words first. Keys are never printed: only addresses are."""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from base.clock import WindowClock
from base.paths import state_dir
from base.units import eth
from contracts.client import TrainingRunClient
from contracts.errors import ContractReverted
from node.data import fetch_dataset
from node.ddp import Cluster, follow, join_cluster, leave_cluster
from node.journal import ProcessLock, TrainerJournal
from node.keys import PASSPHRASE_ENV, load_account, new_keystore
from node.policy import POLICIES, LeadingPolicy, UpdatePolicy
from node.progress import RunProgress, stamp
from node.runner import NodeSetup, TrainerNode
from node.session import (
    NodeError,
    NodeTarget,
    connect_chain,
    connect_ipfs,
    explain_revert,
    load_config,
    node_home,
    require_funds,
    require_trainer,
    resolve_target,
)
from node.status import TrainerStatus, epoch_sentence, trainer_status

Handler = Callable[[argparse.Namespace], int]
# Piped output is not cut to 80 columns: lines stay whole for grep and logs, tables get room.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
# A node that joins with less than this fraction of the current window's commit period left starts at the
# next window instead. Without it, a run like the README's (tiny model, 10-block windows at 1 s, a validator on the
# same 2 cores) lost its first window: the node, started part-way through it, trained it and missed the commit.
# The fraction is a margin for the first window's start-up (model build, first steps), not a measurement.
JOIN_FRACTION = 0.75


def _plain_reverts(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ContractReverted as err:
            raise NodeError(explain_revert(err)) from None

    return wrapped


def _target(args: argparse.Namespace) -> NodeTarget:
    return resolve_target(args.deployment, args.rpc_url, args.run_id, args.config_cid, args.ipfs_api)


def _client(args: argparse.Namespace) -> tuple[TrainingRunClient, NodeTarget]:
    target = _target(args)
    account = load_account(args.keystore)
    return connect_chain(target, account), target


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


# -- commands --------------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        passphrase = _ask_new_passphrase()
    address = new_keystore(args.out, passphrase)
    console.print(f"new keystore {args.out} for address {address}; fund it, then `trainmarket node register`")
    return 0


def _ask_new_passphrase() -> str:
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise NodeError(f"set ${PASSPHRASE_ENV} to the passphrase that will protect the new keystore (or run "
                        "keygen in a terminal to be asked for it)")
    first = getpass.getpass("passphrase for the new keystore: ")
    if not first:
        raise NodeError("refusing an empty passphrase")
    if getpass.getpass("the same passphrase again: ") != first:
        raise NodeError("the two passphrases differ; nothing was written")
    return first


@_plain_reverts
def cmd_register(args: argparse.Namespace) -> int:
    client, target = _client(args)
    required = client.get_run(target.run_id).min_trainer_stake
    if args.stake < required:
        raise NodeError(f"insufficient stake: {eth(args.stake)} ETH offered, run {target.run_id} requires "
                        f"at least {eth(required)} ETH")
    require_funds(client, args.stake, f"registering with a stake of {eth(args.stake)} ETH")
    receipt = client.register_trainer(target.run_id, args.stake)
    info = client.trainer_info(target.run_id, client.address_of_account)
    console.print(f"registered {client.address_of_account} in run {target.run_id} as trainer #{info.index} with "
                  f"{eth(info.stake)} ETH (tx 0x{receipt['transactionHash'].hex().removeprefix('0x')})")
    return 0


@_plain_reverts
def cmd_run(args: argparse.Namespace) -> int:
    """Under torchrun (WORLD_SIZE > 1) rank 0 runs the node and the other ranks only train (node/ddp.py)."""
    if args.policy not in POLICIES:
        raise NodeError(f"unknown policy {args.policy!r}: choose one of {', '.join(sorted(POLICIES))}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cluster = join_cluster(args.device)
    try:
        if not cluster.leader:
            trained = follow(cluster)
            console.print(f"rank {cluster.rank}/{cluster.world_size} ({cluster.backend}): {trained} window(s) trained")
            return 0
        return _run_node(args, cluster)
    finally:
        leave_cluster(cluster)


def _run_node(args: argparse.Namespace, cluster: Cluster) -> int:
    device = cluster.device
    client, target = _client(args)
    me = client.address_of_account
    require_trainer(client, target.run_id)
    # One node per key and run, whatever --home says, and one per journal folder.
    key_lock = ProcessLock(state_dir() / "node" / me.lower() / f"run-{target.run_id}.lock",
                           f"`trainmarket node run` for trainer {me} in run {target.run_id}")
    home = node_home(args.home, me, target.run_id)
    try:
        with ProcessLock(home / "node.lock", f"a node with the journal in {home}"):
            return _run_locked(args, cluster, client, target, home, device)
    finally:
        key_lock.release()


def _run_locked(args: argparse.Namespace, cluster: Cluster, client: TrainingRunClient, target: NodeTarget,
                home: Path, device: torch.device) -> int:
    blobs = connect_ipfs(target)
    config = load_config(client, target.run_id, blobs, target.config_cid)
    dataset = fetch_dataset(blobs, config.dataset_cid, state_dir() / "datasets")
    setup = NodeSetup(client, target.run_id, config, blobs, dataset, home, device)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    clock = WindowClock.of(client.get_run(target.run_id))
    with RunProgress(console, clock, client.block_number) as progress:
        policy: UpdatePolicy = POLICIES[args.policy]()
        if cluster.distributed:
            policy = LeadingPolicy(policy, cluster)
        node = TrainerNode(setup, policy, progress)
        ranks = f" × {cluster.world_size} processes ({cluster.backend})" if cluster.distributed else ""
        progress.say(f"trainer {client.address_of_account} in run {target.run_id} on {device}{ranks}, "
                     f"{config.model_preset} model, windows of {clock.window_blocks} blocks + {clock.reveal_blocks} "
                     f"to reveal, journal in {home}")
        trained = 0
        try:
            _join_at_a_fresh_window(node, clock, progress, stop, args.until_window)
            trained = node.run(stop, windows=args.windows, until_window=args.until_window)
        except KeyboardInterrupt:
            progress.say("interrupted")
        finally:
            node.close()
    console.print(f"{stamp()} done: {trained} window(s) trained, {progress.revealed_count} revealed, "
                  f"{progress.missed_count} missed")
    return 0


def _join_at_a_fresh_window(node: TrainerNode, clock: WindowClock, progress: RunProgress, stop: threading.Event,
                            until_window: int | None) -> None:
    """A node started late in a window would train it and miss its commit: start at the next window instead,
    settling what an earlier run left to reveal meanwhile."""
    next_block = node.client.block_number() + 1
    if next_block < clock.start_block:
        return  # the run has not started: the loop waits for its first window
    window = clock.window_of(next_block)
    left = clock.end(window) - next_block
    if left >= JOIN_FRACTION * clock.window_blocks or node.journal.get(window) is not None:
        return
    if until_window is not None and window + 1 > until_window:
        return
    first = clock.start(window + 1)
    progress.say(f"window {window} has only {left} of {clock.window_blocks} blocks left: joining at window "
                 f"{window + 1}")
    while not stop.is_set() and (now := node.client.block_number()) + 1 < first:
        node.run(stop, windows=0)  # reveals an earlier run committed, with the loop's own outage handling
        progress.waiting(window + 1, first, now, "train")
        stop.wait(node.poll_seconds)


@_plain_reverts
def cmd_status(args: argparse.Namespace) -> int:
    target = _target(args)
    client = connect_chain(target, load_account(args.keystore))
    me = client.address_of_account
    if client.trainer_info(target.run_id, me).registered:
        home = node_home(args.home, me, target.run_id)
        journal = TrainerJournal(home, target.run_id, me)
        try:
            entries = journal.entries()
        finally:
            journal.close()
        status = trainer_status(client, connect_ipfs(target), target.run_id, me, entries, args.last)
    else:
        status = trainer_status(client, None, target.run_id, me, [], args.last)
    if args.json:
        _print_json(asdict(status))
    else:
        _print_status(status)
    return 0


def _print_status(status: TrainerStatus) -> None:
    if not status.registered:
        console.print(f"{status.trainer} is not registered in run {status.run_id}: `trainmarket node register "
                      "--stake ETH` first")
        return
    table = Table(title=f"trainer {status.trainer} — run {status.run_id}, block {status.block}")
    for column in ("window", "state", "validator", "score", "rank", "rating", "weight", "why"):
        table.add_column(column, overflow="fold")
    for v in status.windows:
        table.add_row(
            str(v.window), v.state, v.validator[:10] or "-", _num(v.score), f"{v.rank}/{v.of}" if v.rank else "-",
            v.rating or "-", _num(v.weight), " — ".join(x for x in (v.why, v.note) if x) or "-",
        )
    if status.windows:
        console.print(table)
    else:
        console.print(f"no windows in this node's journal yet (`trainmarket node run`); block {status.block}")
    for p in status.epochs:
        console.print(epoch_sentence(p))
    if status.next_epoch == 0:
        console.print("no epoch finalised yet: rewards are credited per epoch, after its last window is scored")
    console.print(status.summary())
    if status.slashing is not None:
        console.print(status.slashing.sentence())


@_plain_reverts
def cmd_claim(args: argparse.Namespace) -> int:
    client, target = _client(args)
    me = client.address_of_account
    due = client.claimable(target.run_id, me)
    paid = client.claim(target.run_id) if due else 0
    if args.json:
        _print_json({"claimed_wei": paid, "account": me, "run_id": target.run_id})
    elif paid:
        console.print(f"claimed {eth(paid)} ETH from run {target.run_id} to {me}")
    else:
        console.print(f"nothing to claim in run {target.run_id}: no finalised epoch has credited {me} yet "
                      "(`trainmarket node status` says what each epoch paid and why)")
    return 0


@_plain_reverts
def cmd_unstake(args: argparse.Namespace) -> int:
    """First call requests the unstake; a call after the unbonding delay withdraws the stake."""
    client, target = _client(args)
    me = client.address_of_account
    info = client.trainer_info(target.run_id, me)
    if not info.registered:
        raise NodeError(f"account {me} is not registered as a trainer in run {target.run_id}")
    if not info.unbonding:
        client.request_unstake(target.run_id)
        available = client.trainer_info(target.run_id, me).unbonding_at
        console.print(f"unstake requested; run `trainmarket node unstake` again from block {available}")
        return 0
    client.withdraw_stake(target.run_id)
    console.print(f"withdrew {eth(info.stake)} ETH of stake from run {target.run_id}")
    return 0


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
