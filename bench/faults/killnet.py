"""A small real network whose validator and trainer processes can be SIGKILLed and restarted: the demo's own
launcher (trainmarket.demo.orchestrator.Demo: IPFS daemon, Anvil, `validator serve` and
`trainmarket.demo.participant` processes) with a *gated* block clock instead of interval mining.

The gated clock mines one block every `block_seconds`, but holds the last block that can still include a
window's commits (or reveals) until every live trainer has that transaction on chain or in the mempool, up to
`max_hold_s`; while an epoch is being settled it waits for a validator that has not committed (in the commit
phase) or revealed (once reveals are open) its weights and waits on no tx.
So a loaded machine or a process that is restarting does not turn
into a missed window by wall-clock accident: a miss is then a fact about the software, which is what the fault
scenarios measure. Parties listed in `down` (killed and deliberately kept down) are not waited for."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_utils import keccak

from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from contracts.types import CommitStatus, Settlement
from node.chain_view import WindowClock
from node.data import fetch_dataset
from node.protocol import RunConfig
from trainmarket.demo.network import ETH, Participant, participants, publish_run_config, run_params, write_deployment
from trainmarket.demo.orchestrator import Demo, DemoSettings, trainer_argv, validator_argv
from trainmarket.errors import TrainmarketError
from trainmarket.process import ManagedProcess, free_port, port_open

POOL = 200 * ETH
TRAINER_STAKE = 2 * ETH
VALIDATOR_STAKE = 10 * ETH
HEALTH_EVERY_S = 2.0


class FaultRunError(TrainmarketError):
    """The fault network could not be driven (a process died unexpectedly, a wait ran out)."""


@dataclass
class KillNetSettings:
    trainers: int = 2
    validators: int = 2
    windows: int = 6
    windows_per_epoch: int = 2
    window_blocks: int = 8
    reveal_blocks: int = 4
    block_seconds: float = 0.5
    max_hold_s: float = 300.0
    corpus_bytes: int = 600_000
    run_seed: int = 1
    config: RunConfig = field(default_factory=lambda: RunConfig(
        seq_len=32, inner_steps=4, seqs_per_step=4, inner_lr=4e-3, eval_own_seqs=2, eval_random_seqs=4))


class KillNet:
    """Start with `start()`, always `close()`. Processes are reached by name: validator-0.., honest-0.."""

    def __init__(self, settings: KillNetSettings, workdir: Path) -> None:
        self.s = settings
        config = settings.config.model_copy(update={"run_seed": settings.run_seed})
        self.demo = Demo(DemoSettings(out_dir=workdir, quiet=True, model="tiny", config=config,
                                      corpus_bytes=settings.corpus_bytes))
        self.out = self.demo.out
        self.down: set[str] = set()  # process names not to wait for (deliberately kept down)
        self.people: list[Participant] = []
        self.validator_clients: list[TrainingRunClient] = []
        self.ports: dict[str, int] = {}
        self.homes: dict[str, Path] = {}
        self.first = self.last = self.settle_through = 0
        self.run_id = 0
        self._stop = threading.Event()
        self._miner: threading.Thread | None = None
        self.holds = 0  # blocks the gate held back
        self.hold_timeouts = 0  # holds that ran out (a party never sent in time)
        self.miner_error: BaseException | None = None
        self._health_checked = 0.0
        self._selectors: dict[str, str] = {}

    # -- start and stop --------------------------------------------------------------------------------------

    def start(self) -> KillNet:
        s, demo = self.s, self.demo
        self.out.mkdir(parents=True, exist_ok=True)
        blobs = demo.start_storage()
        config, config_cid = publish_run_config(blobs, demo.s.config.model_copy(update={"model_preset": "tiny"}),
                                                s.corpus_bytes)
        self.config = config
        fetch_dataset(blobs, config.dataset_cid, self.out / "cache")
        self.views = demo.start_chain()
        assert isinstance(demo.chain, AnvilNode)
        self.chain: AnvilNode = demo.chain
        self.run_id = self.views.create_run(run_params(config, s.window_blocks, s.reveal_blocks, s.windows_per_epoch),
                                            POOL)
        self.people = participants(s.trainers, 0, ())
        self.validator_clients = [self.views.with_account(Account.from_key(self.chain.private_keys[i + 1]))
                                  for i in range(s.validators)]
        for p in self.people:
            self.chain.set_balance(p.address, 100 * ETH)
            self.views.with_account(p.account).register_trainer(self.run_id, TRAINER_STAKE)
        for v in self.validator_clients:
            v.register_validator(self.run_id, VALIDATOR_STAKE)
        deployment = self.out / "deployment.json"
        write_deployment(deployment, {"address": self.views.contract.address, "block": self.views.from_block,
                                      "rpc_url": self.chain.rpc_url, "chain_id": 31337, "run_id": self.run_id,
                                      "config_cid": config_cid})
        self.run = self.views.get_run(self.run_id)
        abi = self.views.contract.abi
        self._selectors = {_selector(abi, name): name
                           for name in ("commit", "reveal", "commitWeights", "revealWeights")}
        self.clock = WindowClock.of(self.run)
        current = self.views.current_window(self.run_id)
        self.first = -(-(current + 1) // s.windows_per_epoch) * s.windows_per_epoch
        self.last = self.first + s.windows - 1
        self.settle_through = self.last  # validators' epochs are waited for (and judged) up to this window
        api = blobs.api_url
        env = {"TRAINMARKET_HOME": str(self.out / "home")}
        for i, v in enumerate(self.validator_clients):
            name, port = f"validator-{i}", free_port()
            self.ports[name], self.homes[name] = port, self.out / name
            demo.spawn(name, validator_argv(deployment, api, port, self.first, self.homes[name], "cpu"),
                       {"TRAINMARKET_VALIDATOR_KEY": v.account.key.hex(), **env},
                       ready=lambda port=port: port_open(port))
        for p in self.people:
            home = self.homes[p.name] = self.out / "trainers" / p.name
            home.mkdir(parents=True, exist_ok=True)
            demo.spawn(p.name, trainer_argv(deployment, api, home, self.out / "cache", p, self.first, self.last),
                       {"TRAINMARKET_PRIVATE_KEY": p.account.key.hex(), **env})
        demo.wait_ready({p.name: (lambda home=self.homes[p.name]: (home / "ready").exists()) for p in self.people})
        self.chain.set_automine(False)
        self._miner = threading.Thread(target=self._mine_loop, name="gated-clock", daemon=True)
        self._miner.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._miner is not None:
            self._miner.join(timeout=10)
        self.demo.close()

    # -- processes -------------------------------------------------------------------------------------------

    def process(self, name: str) -> ManagedProcess:
        return next(p for p in self.demo.processes if p.name == name)

    def sigkill(self, name: str) -> None:
        """SIGKILL the process's whole group (no handler runs, nothing is flushed) and reap it."""
        proc = self.process(name)
        if proc.proc is None or proc.proc.poll() is not None:
            raise FaultRunError(f"{name} is not running, cannot kill it; see {proc.log_path}")
        os.killpg(proc.proc.pid, signal.SIGKILL)
        proc.proc.wait(timeout=30)
        proc.stop()

    def restart(self, name: str) -> float:
        """Start the process again with the same command line; returns seconds until it was ready."""
        proc = self.process(name)
        t0 = time.monotonic()
        if name in self.ports:
            proc.start()  # ready = its port answers
        else:
            (self.homes[name] / "ready").unlink(missing_ok=True)
            proc.start()
            self.wait_until(lambda: (self.homes[name] / "ready").exists(), 300, f"{name} ready after restart")
        self.down.discard(name)
        return time.monotonic() - t0

    def check_alive(self) -> None:
        """Every process not deliberately down runs, and every validator's loop (a thread of `serve`) too."""
        for proc in self.demo.processes:
            if proc.name in self.down or proc.proc is None:
                continue
            code = proc.proc.poll()
            if code is not None and (code != 0 or proc.name.startswith("validator")):
                raise FaultRunError(f"{proc.name} exited with code {code}; see {proc.log_path}")
        if time.monotonic() - self._health_checked < HEALTH_EVERY_S:
            return
        self._health_checked = time.monotonic()
        for name, port in self.ports.items():
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                continue  # starting or restarting
            if health.get("loop") == "failed":
                raise FaultRunError(f"{name}'s loop failed: {health.get('loop_error')}")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self.check_alive()
            if self.miner_error is not None:
                raise FaultRunError(f"the block clock failed: {self.miner_error}")
            if time.monotonic() > deadline:
                raise FaultRunError(f"waited {timeout:.0f}s for {what}; logs in {self.demo.logs}")
            time.sleep(poll)

    def head(self) -> int:
        return self.views.block_number()

    def wait_block(self, block: int, timeout: float = 600) -> None:
        """Until the chain's head is at least `block`."""
        self.wait_until(lambda: self.head() >= block, timeout, f"block {block}")

    def wait_settled(self, timeout: float = 900) -> None:
        """Until every validator published every window through `settle_through` and its epoch is finalised."""
        last_epoch = self.settle_through // self.s.windows_per_epoch
        validators = [v.address_of_account.lower() for v in self.validator_clients]

        def settled() -> bool:
            if not self.views.epoch_info(self.run_id, last_epoch).finalized:
                return False
            published = {v.lower() for v in self.views.publications(self.run_id, self.settle_through)}
            return all(v in published for v in validators)

        self.wait_until(settled, timeout, f"epoch {last_epoch} finalised and window {self.settle_through} published",
                        0.5)

    # -- state read from the outside -------------------------------------------------------------------------

    def store_rows(self, validator: str, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """Read-only query of a validator's SQLite state (safe while it runs: WAL)."""
        path = self.homes[validator] / "state.sqlite3"
        if not path.exists():
            return []
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            return list(conn.execute(sql, params).fetchall())
        except sqlite3.OperationalError:
            return []  # the schema is not created yet
        finally:
            conn.close()

    def address(self, name: str) -> str:
        if name.startswith("validator-"):
            return self.validator_clients[int(name.removeprefix("validator-"))].address_of_account
        return next(p.address for p in self.people if p.name == name)

    # -- the gated clock -------------------------------------------------------------------------------------

    def _pending_calls(self) -> set[tuple[str, str]]:
        """(sender, contract function) of every transaction waiting in the mempool."""
        pool = self.chain.rpc("txpool_content") or {}
        return {(addr.lower(), self._selectors.get(str(tx.get("input", ""))[:10], "?"))
                for addr, txs in (pool.get("pending") or {}).items() for tx in txs.values()}

    def _waiting_for(self, block: int) -> list[str]:
        """Live parties whose transaction must be in `block` (its last chance) and is neither mined nor sent."""
        clock = self.clock
        need: list[tuple[str, str, Callable[[], bool]]] = []
        live = [p for p in self.people if p.name not in self.down]
        for window in range(self.first, self.last + 1):
            if block == clock.end(window) - 1:
                for p in live:
                    need.append((p.name, "commit", partial(self._sent_commit, p, window)))
            if block == clock.reveal_end(window) - 1:
                for p in live:
                    need.append((p.name, "reveal", partial(self._settled_reveal, p, window)))
        pending = self._pending_calls()
        senders = {sender for sender, _ in pending}
        # An epoch's settlement: a validator that has not committed (or, once reveals are open, revealed) its
        # weights and waits on nothing on chain is computing or restarting; the clock waits for it (publishing
        # first needs blocks, so any pending tx of it lets a block through), so a restart is not turned into a
        # ballot lost to the phase deadlines by wall time.
        wpe = self.s.windows_per_epoch
        epoch = self.views.get_run(self.run_id).next_epoch
        if self.first // wpe <= epoch <= self.settle_through // wpe:
            state = self.views.settlement_of(self.run_id, epoch)
            if state.opens_at < block < state.closes_at:  # the head is in the settlement, a tx can still land
                for i, v in enumerate(self.validator_clients):
                    if v.address_of_account.lower() not in senders:
                        need.append((f"validator-{i}", "(any)", partial(self._voted, v, epoch, state, block)))
        return [name for name, call, done in need if (self.address(name).lower(), call) not in pending and not done()]

    def _voted(self, v: TrainingRunClient, epoch: int, state: Settlement, block: int) -> bool:
        """Nothing of `v`'s ballot for `epoch` is due in `block`: revealed, or committed while reveals are shut."""
        ballot = self.views.ballot_of(self.run_id, v.address_of_account)
        if ballot.epoch != epoch or ballot.status == CommitStatus.NONE:
            return not state.commits_open(block)
        return ballot.status == CommitStatus.REVEALED or not state.reveals_open(block)

    def _commit_status(self, p: Participant, window: int) -> CommitStatus:
        return self.views.commitment_of(self.run_id, window, p.address)[1]

    def _sent_commit(self, p: Participant, window: int) -> bool:
        return self._commit_status(p, window) != CommitStatus.NONE

    def _settled_reveal(self, p: Participant, window: int) -> bool:
        """Revealed, missed, or never committed: nothing of `p` left to reveal for `window`."""
        return self._commit_status(p, window) != CommitStatus.COMMITTED

    def _mine_loop(self) -> None:
        try:
            while not self._stop.wait(self.s.block_seconds):
                block = self.chain.block_number() + 1
                held_since = time.monotonic()
                while self._waiting_for(block) and not self._stop.is_set():
                    if time.monotonic() - held_since > self.s.max_hold_s:
                        self.hold_timeouts += 1
                        break
                    self.holds += 1
                    self._stop.wait(0.2)
                self.chain.mine(1)
        except TrainmarketError as err:  # the chain went away: the waits above report it
            self.miner_error = err


def _selector(abi: Sequence[Any], name: str) -> str:
    """0x-prefixed 4-byte selector of the contract function `name` (as it starts a transaction's input)."""
    item = next(i for i in abi if i.get("type") == "function" and i.get("name") == name)
    signature = f"{name}({','.join(str(arg['type']) for arg in item['inputs'])})"
    return "0x" + keccak(text=signature)[:4].hex()
