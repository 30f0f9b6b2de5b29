"""A process hosting many trainer identities (node/population.py) for a load run:

    python -m node.population_host --deployment D --ipfs-api URL --home DIR --cache DIR \\
        --label pop --identities 0:128 --first-window F --last-window L

Identity i's key is derived from the public label (`population_account`: a local chain only); it must already be
registered with a stake. Each identity lives in DIR/id-<i> (journal, payloads, carried state). DIR/ready appears
once every identity is loaded; DIR/sync.jsonl gets a line per trained window (block, sync deadline) and
DIR/summary.json the per-identity outcome at the end."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from web3 import Web3

from base.errors import TrainmarketError, is_temporary
from base.run_config import load_run_config
from contracts.views import TrainingRunViews
from ipfs.client import IpfsClient
from node.data import fetch_dataset
from node.population import (
    ObservingProvider,
    PopulationClient,
    SerialTraining,
    SharedReads,
    SyncLog,
    population_account,
)
from node.runner import NodeSetup, TrainerNode
from node.session import NodeTarget, resolve_target

POLL_S = 0.2
log = logging.getLogger("population")


class Population:
    """Steps each identity's TrainerNode when it has something due (see node/population.py)."""

    def __init__(self, nodes: list[TrainerNode], shared: SharedReads, run_id: int, workers: int) -> None:
        self.nodes = nodes
        self.shared = shared
        self.run_id = run_id
        self.workers = workers
        self.clock = nodes[0].clock
        self.training_blocks = self.clock.window_blocks // 2  # until a window of this population was measured
        self._began: dict[int, int] = {}  # window → block its first identity began training
        self._recent: list[int] = []  # blocks the last windows' trainings took (first began → last committed)
        self.failed: dict[int, str] = {}  # identities stopped by an error, as a lone node would have exited
        for node in nodes:
            node.training_blocks = self.training_blocks

    def _train_due(self, window: int, next_block: int) -> bool:
        """The node's own sync rule (TrainerNode.fresh_base_ready: the canonical model of window − 1 is settled,
        or window − 1 had no commit, or the sync deadline came), checked once for the whole population so that no
        identity is stepped, and no model list read, while all of them would only wait. Every identity's client
        answers these reads from the same per-block memo, so one check holds for all of them."""
        return self.nodes[0].fresh_base_ready(window, next_block)

    def _pending_due(self, node: TrainerNode, next_block: int) -> bool:
        return any(not e.committed or next_block >= self.clock.end(e.window) for e in node.journal.unrevealed())

    def _step(self, index: int, train: bool) -> bool:
        node = self.nodes[index]
        did_any = False
        try:
            for _ in range(4):  # commit right after training, a reveal after its add: a few steps in a row
                did, _ = node.step(train=train)
                if not did:
                    break
                did_any = True
        except TrainmarketError as err:
            if is_temporary(err):  # what TrainerNode.run() waits out: the next block retries
                log.warning("identity %s: %s (retried)", node.trainer, err)
            else:  # what ends a node's run ends this identity, not its neighbours
                log.error("identity %s stops: %s", node.trainer, err)
                self.failed[index] = str(err)
        return did_any

    def run(self, stop: threading.Event, last_window: int) -> None:
        running: dict[int, Future[bool]] = {}
        idle_at: dict[int, int] = {}  # identity → block of its last step that did nothing
        with ThreadPoolExecutor(self.workers, thread_name_prefix="identity") as pool:
            while not stop.is_set():
                block = self.shared.block_number()
                next_block = block + 1
                window = self.clock.window_of(next_block)
                train = window <= last_window and next_block >= self.clock.start_block
                train_due = train and self._train_due(window, next_block)
                busy = False
                for i, node in enumerate(self.nodes):
                    if i in self.failed:
                        continue
                    future = running.get(i)
                    if future is not None:
                        if not future.done():
                            busy = True
                            continue
                        del running[i]
                        if not future.result():
                            idle_at[i] = block
                    if idle_at.get(i) == block:
                        continue
                    untrained = train_due and node.journal.get(window) is None and not node.skipped(window)
                    if untrained:
                        self._began.setdefault(window, block)
                    if untrained or self._pending_due(node, next_block):
                        running[i] = pool.submit(self._step, i, train_due)
                        busy = True
                    elif node.journal.unrevealed():
                        busy = True
                self._measure(window, block)
                if not busy and window > last_window:
                    return
                stop.wait(POLL_S)

    def _measure(self, window: int, block: int) -> None:
        """Once every identity committed `window`: the blocks the population's training took, which every
        identity's sync deadline then leaves room for."""
        began = self._began.get(window)
        if began is None or any(not (e := n.journal.get(window)) or not e.committed
                                for i, n in enumerate(self.nodes) if not n.skipped(window) and i not in self.failed):
            return
        # The longest of the last three windows, as a lone node estimates its own (TrainerNode._train_blocks):
        # the last one alone under-runs when the load rises. Seen in bench.load --population 256 (90-block
        # windows, load average up to 25, sync.jsonl): window 19's measure gave window 20 a 24-25 block
        # estimate, window 20's trainings then began over 27 blocks and 130 identities did not commit in time, while
        # window 17's trainings had spanned 32.
        self._recent = [*self._recent[-2:], max(1, block - began + 1)]
        self.training_blocks = max(self._recent)
        self._began.pop(window)
        for node in self.nodes:
            node.training_blocks = self.training_blocks


def load_identities(target: NodeTarget, home: Path, cache: Path, label: str, indices: range,
                    ) -> tuple[list[TrainerNode], SharedReads, list[SyncLog]]:
    provider = ObservingProvider(target.rpc_url)
    web3 = Web3(provider)
    accounts = [population_account(label, i) for i in indices]
    views = TrainingRunViews(web3, target.contract, target.from_block)
    shared = SharedReads(views, target.rpc_url, [a.address for a in accounts])
    provider.observe = shared.observe
    blobs = IpfsClient(target.ipfs_api, timeout=60.0)
    config = load_run_config(views, target.run_id, blobs, target.config_cid)
    dataset = fetch_dataset(blobs, config.dataset_cid, cache)
    lock = threading.Lock()
    nodes, logs = [], []
    sync_path = home / "sync.jsonl"
    for i, account in zip(indices, accounts, strict=True):
        client = PopulationClient(web3, target.contract, account, target.from_block, shared)
        folder = home / f"id-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        log = SyncLog(sync_path, shared.block_number)
        node = TrainerNode(NodeSetup(client, target.run_id, config, blobs, dataset, folder),
                           policy=SerialTraining(lock), observer=log)
        log.node = node
        nodes.append(node)
        logs.append(log)
    return nodes, shared, logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--deployment", type=Path, required=True)
    parser.add_argument("--ipfs-api", required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="shared dataset cache")
    parser.add_argument("--label", default="pop", help="key derivation label (population_account)")
    parser.add_argument("--identities", required=True, metavar="A:B", help="identity indices A..B-1")
    parser.add_argument("--first-window", type=int, required=True)
    parser.add_argument("--last-window", type=int, required=True)
    parser.add_argument("--workers", type=int, default=64, help="identities stepped at once (threads)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "web3", "urllib3"):  # a line per request, thousands per window
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(1)
    start, end = (int(x) for x in args.identities.split(":"))
    try:
        target = resolve_target(args.deployment, None, None, None, args.ipfs_api)
        args.home.mkdir(parents=True, exist_ok=True)
        nodes, shared, _ = load_identities(target, args.home, args.cache, args.label, range(start, end))
        (args.home / "ready").write_text("ready\n")
        print(f"{len(nodes)} identities ready; waiting for window {args.first_window}", flush=True)
        stop = threading.Event()
        while shared.block_number() + 1 < nodes[0].clock.start(args.first_window):
            stop.wait(POLL_S)
        population = Population(nodes, shared, target.run_id, args.workers)
        population.run(stop, args.last_window)
    except TrainmarketError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    revealed = {n.trainer.lower(): sum(e.revealed for e in n.journal.entries()) for n in nodes}
    missed = {n.trainer.lower(): [(e.window, e.note) for e in n.journal.entries() if e.missed] for n in nodes}
    failed = {nodes[i].trainer.lower(): why for i, why in population.failed.items()}
    (args.home / "summary.json").write_text(json.dumps({"revealed": revealed, "missed": missed, "failed": failed},
                                                       indent=1))
    print(f"done: {sum(revealed.values())} reveals, {sum(map(len, missed.values()))} missed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
