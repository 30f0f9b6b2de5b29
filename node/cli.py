"""`trainmarket node keygen|register|run|status|claim|unstake` — the trainer's command line.

Every failure the user can fix comes out as one sentence (via TrainmarketError in trainmarket/cli.py);
contract reverts are decoded into words first. Keys are never printed: only addresses are."""

from __future__ import annotations

import argparse
import functools
import os
import signal
import threading
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from contracts.client import TrainingRunClient
from contracts.errors import ContractReverted
from node.data import fetch_dataset
from node.ddp import Cluster, follow, join_cluster, leave_cluster
from node.journal import TrainerJournal, WindowEntry
from node.keys import PASSPHRASE_ENV, load_account, new_keystore
from node.policy import POLICIES, LeadingPolicy, UpdatePolicy
from node.runner import NodeSetup, TrainerNode
from node.session import (
    ETH,
    NodeError,
    NodeTarget,
    connect_chain,
    connect_ipfs,
    eth,
    explain_revert,
    load_config,
    node_home,
    require_trainer,
    resolve_target,
)
from node.status import epoch_payouts, window_verdicts
from trainmarket.paths import state_dir

Handler = Callable[[argparse.Namespace], int]
console = Console(highlight=False)


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


def _wei(text: str) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of ETH") from err
    if value <= 0:
        raise argparse.ArgumentTypeError("the amount must be positive")
    return int(value * ETH)


# -- commands --------------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        raise NodeError(f"set ${PASSPHRASE_ENV} to the passphrase that will protect the new keystore")
    address = new_keystore(args.out, passphrase)
    console.print(f"new keystore {args.out} for address {address}")
    return 0


@_plain_reverts
def cmd_register(args: argparse.Namespace) -> int:
    client, target = _client(args)
    required = client.get_run(target.run_id).min_trainer_stake
    if args.stake < required:
        raise NodeError(f"insufficient stake: {eth(args.stake)} ETH offered, run {target.run_id} requires "
                        f"at least {eth(required)} ETH")
    receipt = client.register_trainer(target.run_id, args.stake)
    info = client.trainer_info(target.run_id, client.address_of_account)
    console.print(f"registered {client.address_of_account} in run {target.run_id} as trainer #{info.index} with "
                  f"{eth(info.stake)} ETH (tx 0x{receipt['transactionHash'].hex().removeprefix('0x')})")
    return 0


@_plain_reverts
def cmd_run(args: argparse.Namespace) -> int:
    """Under torchrun (WORLD_SIZE > 1) rank 0 runs the node and the other ranks only train (node/ddp.py)."""
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
    require_trainer(client, target.run_id)
    blobs = connect_ipfs(target)
    config = load_config(client, target.run_id, blobs, target.config_cid)
    home = node_home(args.home, client.address_of_account, target.run_id)
    dataset = fetch_dataset(blobs, config.dataset_cid, state_dir() / "datasets")
    setup = NodeSetup(client, target.run_id, config, blobs, dataset, home, device)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with RichObserver() as observer:
        policy: UpdatePolicy = POLICIES[args.policy]()
        if cluster.distributed:
            policy = LeadingPolicy(policy, cluster)
        node = TrainerNode(setup, policy, observer)
        ranks = f" × {cluster.world_size} processes ({cluster.backend})" if cluster.distributed else ""
        console.print(f"trainer {client.address_of_account} in run {target.run_id} on {device}{ranks}, "
                      f"{config.model_preset} model, journal in {home}")
        try:
            trained = node.run(stop, windows=args.windows, until_window=args.until_window)
        except KeyboardInterrupt:
            trained = -1
        finally:
            node.close()
    if trained >= 0:
        console.print(f"done: {trained} window(s) trained")
    return 0


@_plain_reverts
def cmd_status(args: argparse.Namespace) -> int:
    client, target = _client(args)
    me = client.address_of_account
    info = client.trainer_info(target.run_id, me)
    if not info.registered:
        console.print(f"{me} is not registered in run {target.run_id}")
        return 0
    home = node_home(args.home, me, target.run_id)
    journal = TrainerJournal(home, target.run_id, me)
    entries = journal.entries()[-args.last :]
    journal.close()
    blobs = connect_ipfs(target)
    table = Table(title=f"trainer {me} — run {target.run_id}")
    for column in ("window", "state", "CID", "validator", "score", "rank", "rating", "weight", "rejection / note"):
        table.add_column(column)
    for v in window_verdicts(client, blobs, target.run_id, me, entries):
        table.add_row(
            str(v.window), v.state, v.cid[:16] + "…", v.validator[:10], _num(v.score),
            f"{v.rank}/{v.of}" if v.rank else "-", v.rating or "-", _num(v.weight), v.rejection or v.note or "-",
        )
    console.print(table)
    run = client.get_run(target.run_id)
    payouts = epoch_payouts(client, target.run_id, info.index, range(run.next_epoch))
    for p in payouts:
        console.print(f"epoch {p.epoch}: consensus weight {p.consensus_weight}/65535, reward {eth(p.reward_wei)} ETH")
    state = "unbonding" if info.unbonding else "active"
    console.print(f"stake {eth(info.stake)} ETH ({state}), missed reveals {info.misses}, "
                  f"claimable now {eth(client.claimable(target.run_id, me))} ETH")
    return 0


@_plain_reverts
def cmd_claim(args: argparse.Namespace) -> int:
    client, target = _client(args)
    paid = client.claim(target.run_id)
    console.print(f"claimed {eth(paid)} ETH from run {target.run_id} to {client.address_of_account}")
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


class RichObserver:
    """A progress bar while training; one summary line per window when it is revealed or missed."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("window {task.fields[window]}"), BarColumn(), TextColumn("step {task.completed:.0f}/"
            "{task.total:.0f} loss {task.fields[loss]}"), console=console, transient=True,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> RichObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def training(self, window: int, steps: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=steps, window=window, loss="-")

    def step(self, window: int, step: int, loss: float) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=step + 1, loss=f"{loss:.4f}")

    def committed(self, entry: WindowEntry) -> None:
        console.print(f"window {entry.window}: committed {entry.cid} (tx {entry.commit_tx or 'earlier run'})")

    def revealed(self, entry: WindowEntry) -> None:
        loss = "-" if entry.loss is None else f"{entry.loss:.4f}"
        console.print(
            f"window {entry.window}: loss {loss}, payload {entry.payload_bytes / 1024:.1f} KiB, CID {entry.cid}, "
            f"commit {entry.commit_tx or '-'}, reveal {entry.reveal_tx or '-'}"
        )

    def missed(self, entry: WindowEntry) -> None:
        console.print(f"window {entry.window}: missed — {entry.note}")

    def waiting(self, window: int, for_window: int, until_block: int) -> None:
        console.print(f"window {window}: waiting for the global model of window {for_window} "
                      f"(training starts by block {until_block} at the latest)")


# -- wiring ----------------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    default_deployment = state_dir() / "devnet" / "deployment.json"
    parser.add_argument("--rpc-url", default=os.environ.get("TRAINMARKET_RPC_URL"),
                        help="chain JSON-RPC URL, any EVM chain (default: $TRAINMARKET_RPC_URL, else the deployment "
                             "file's)")
    parser.add_argument("--deployment", type=Path, default=default_deployment, help="deployment JSON file")
    parser.add_argument("--run-id", type=int, default=None, help="run id (default: the deployment file's, or 0)")
    parser.add_argument("--ipfs-api", default=None,
                        help="IPFS RPC API URL, e.g. your Kubo (default: $TRAINMARKET_IPFS_API, else the deployment "
                             "file's)")
    parser.add_argument("--config-cid", default=None, help="CID of the run config (default: the deployment file's)")
    parser.add_argument("--keystore", type=Path, default=None,
                        help=f"encrypted keystore (passphrase from ${PASSPHRASE_ENV}); else $TRAINMARKET_PRIVATE_KEY")
    parser.add_argument("--home", type=Path, default=None, help="journal and cache folder")


def add_commands(sub: argparse._SubParsersAction) -> None:
    node = sub.add_parser("node", help="trainer node: register, run, status, claim, unstake")
    commands = node.add_subparsers(dest="node_command", required=True, metavar="NODE_COMMAND")

    keygen = commands.add_parser("keygen", help="create an encrypted keystore with a fresh key")
    keygen.add_argument("--out", type=Path, required=True)
    keygen.set_defaults(func=cmd_keygen)

    register = commands.add_parser("register", help="register this account as a trainer with a stake")
    _common(register)
    register.add_argument("--stake", type=_wei, required=True, help="stake in ETH")
    register.set_defaults(func=cmd_register)

    run = commands.add_parser("run", help="train, commit and reveal window after window")
    _common(run)
    run.add_argument("--windows", type=int, default=None, help="stop after training N windows")
    run.add_argument("--until-window", type=int, default=None, help="stop after window W")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    run.add_argument("--policy", default="honest", choices=sorted(POLICIES), help="update policy")
    run.set_defaults(func=cmd_run)

    status = commands.add_parser("status", help="per-window scores, ranks, ratings, weights; what is claimable")
    _common(status)
    status.add_argument("--last", type=int, default=20, help="how many recent windows to show")
    status.set_defaults(func=cmd_status)

    for name, func, help_text in (
        ("claim", cmd_claim, "withdraw the rewards due"),
        ("unstake", cmd_unstake, "request an unstake, or withdraw the stake once the delay passed"),
    ):
        parser = commands.add_parser(name, help=help_text)
        _common(parser)
        parser.set_defaults(func=func)

