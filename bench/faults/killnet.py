"""A small real network whose validator and trainer processes can be SIGKILLed and restarted: the demo's own
launcher (trainmarket.demo.orchestrator.Demo: IPFS daemon, Anvil, `validator serve` and
`trainmarket.demo.participant` processes) with a *gated* block clock instead of interval mining
(bench/faults/gated_clock.py: a block that is some live party's last chance for a due transaction waits for it,
so a loaded machine does not turn into a fault by wall-clock accident). Parties listed in `down` (killed or
stopped, and deliberately kept so) are not waited for. Optionally some validators reach IPFS through a FaultProxy
(`proxies`), and extra validator accounts are run by the weight copier (bench/faults/copier.py) instead of
`validator serve`."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from eth_account import Account

from base.clock import WindowClock
from base.errors import TrainmarketError
from base.process import ManagedProcess, free_port, port_open
from base.run_config import RunConfig
from bench.faults.copier import COPIER_KEY_ENV
from bench.faults.gated_clock import GatedClock
from bench.faults.proxy import FaultProxy
from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from node.data import fetch_dataset
from trainmarket.demo.network import ETH, Participant, participants, publish_run_config, run_params, write_deployment
from trainmarket.demo.orchestrator import Demo, DemoSettings, trainer_argv, validator_argv

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
    # A trainer trains window w from the canonical model of w − 1 if it can wait for it: until its measured
    # training time (in blocks) and a 2-block commit margin fill the rest of the window (node/runner.py). With
    # 8-block windows and 4 reveal blocks that moment comes by the end of w − 1's reveal period unless training
    # takes under 2 blocks: in a withhold run (3 validators, 3 trainers) 5 of 6 windows trained from an older
    # model, one of them two windows old and rejected as stale by every validator. 10 and 2 leave room for the
    # validators to publish first (the gated clock waits for them at that point).
    window_blocks: int = 10
    reveal_blocks: int = 2
    block_seconds: float = 0.5
    max_hold_s: float = 300.0
    corpus_bytes: int = 600_000
    run_seed: int = 1
    validator_stakes: tuple[int, ...] = ()  # per validator (default VALIDATOR_STAKE each)
    proxied: tuple[int, ...] = ()  # validators whose IPFS API goes through a FaultProxy (`KillNet.proxies`)
    copiers: int = 0  # extra validator accounts run by bench.faults.copier instead of `validator serve`
    copier_modes: tuple[str, ...] = ("wait",)  # the copier's strategy per epoch, in turn (bench.faults.copier)
    # A withheld payload costs every window this long (validator/fetch.py): short, so that withholding does
    # not stall the gated clock; a local payload that is there answers in milliseconds.
    config: RunConfig = field(default_factory=lambda: RunConfig(
        seq_len=32, inner_steps=4, seqs_per_step=4, inner_lr=4e-3, eval_own_seqs=2, eval_random_seqs=4,
        payload_fetch_seconds=3.0))


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
        self.copier_clients: list[TrainingRunClient] = []
        self.proxies: dict[str, FaultProxy] = {}  # validator name → the proxy in front of its IPFS API
        self.ports: dict[str, int] = {}
        self.homes: dict[str, Path] = {}
        self.first = self.last = self.settle_through = 0
        self.run_id = 0
        self.gate: GatedClock | None = None
        self._health_checked = 0.0

    # -- start and stop --------------------------------------------------------------------------------------

    def start(self) -> KillNet:
        s, demo = self.s, self.demo
        self.out.mkdir(parents=True, exist_ok=True)
        blobs = self.blobs = demo.start_storage()
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
        accounts = [self.views.with_account(Account.from_key(self.chain.private_keys[i + 1]))
                    for i in range(s.validators + s.copiers)]
        self.validator_clients, self.copier_clients = accounts[: s.validators], accounts[s.validators :]
        for p in self.people:
            self.chain.set_balance(p.address, 100 * ETH)
            self.views.with_account(p.account).register_trainer(self.run_id, TRAINER_STAKE)
        stakes = s.validator_stakes or (VALIDATOR_STAKE,) * len(accounts)
        for v, stake in zip(accounts, stakes, strict=True):
            v.register_validator(self.run_id, stake)
        deployment = self.out / "deployment.json"
        write_deployment(deployment, {"address": self.views.contract.address, "block": self.views.from_block,
                                      "rpc_url": self.chain.rpc_url, "chain_id": 31337, "run_id": self.run_id,
                                      "config_cid": config_cid})
        self.run = self.views.get_run(self.run_id)
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
            if i in s.proxied:
                self.proxies[name] = FaultProxy(_port_of(api)).start()
            demo.spawn(name, validator_argv(deployment, self.proxies[name].url if name in self.proxies else api,
                                            port, self.first, self.homes[name], "cpu"),
                       {"TRAINMARKET_VALIDATOR_KEY": v.account.key.hex(), **env},
                       ready=lambda port=port: port_open(port))
        for i, v in enumerate(self.copier_clients):
            name = f"copier-{i}"
            self.homes[name] = self.out / name
            self.homes[name].mkdir(parents=True, exist_ok=True)
            demo.spawn(name, ["-m", "bench.faults.copier", "--deployment", str(deployment), "--ipfs-api", api,
                              "--first-window", str(self.first), "--log", str(self.homes[name] / "attempts.jsonl"),
                              "--modes", *s.copier_modes],
                       {COPIER_KEY_ENV: v.account.key.hex(), **env})
        for p in self.people:
            home = self.homes[p.name] = self.out / "trainers" / p.name
            home.mkdir(parents=True, exist_ok=True)
            demo.spawn(p.name, trainer_argv(deployment, api, home, self.out / "cache", p, self.first, self.last),
                       {"TRAINMARKET_PRIVATE_KEY": p.account.key.hex(), **env})
        demo.wait_ready({p.name: (lambda home=self.homes[p.name]: (home / "ready").exists()) for p in self.people})
        self.chain.set_automine(False)
        self.gate = GatedClock(self).start()
        return self

    def close(self) -> None:
        if self.gate is not None:
            self.gate.stop()
        self.demo.close()
        for proxy in self.proxies.values():
            proxy.stop()

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

    def sigstop(self, name: str) -> None:
        """Freeze the process's group (SIGSTOP: it keeps its sockets and state, runs nothing) and stop waiting
        for it; `sigcont` lets it go on from where it stood."""
        proc = self.process(name)
        if proc.proc is None or proc.proc.poll() is not None:
            raise FaultRunError(f"{name} is not running, cannot stop it; see {proc.log_path}")
        self.down.add(name)
        os.killpg(proc.proc.pid, signal.SIGSTOP)

    def sigcont(self, name: str) -> None:
        proc = self.process(name)
        if proc.proc is not None:
            os.killpg(proc.proc.pid, signal.SIGCONT)
        self.down.discard(name)

    def restart(self, name: str, frozen_s: float = 0.0) -> float:
        """Start the process again with the same command line; returns seconds until it was ready. `frozen_s`:
        the new process is frozen (SIGSTOP) that long right after it starts, as a loaded machine slows its loading.

        From its start on it is a live party again, so the gated clock waits for its transactions while it loads.
        It used to leave `down` only once ready: a trainer kept down past its reveal (late_restart) then loaded
        while the clock ran free, and at a load average of 19 its loading outlasted the next windows, which the
        fault test charged as 'never committed' (frozen 15 s, it lost windows 8 and 9 after a late kill in 6)."""
        proc = self.process(name)
        t0 = time.monotonic()
        self.down.discard(name)
        if name in self.ports:
            proc.start()  # ready = its port answers
        else:
            (self.homes[name] / "ready").unlink(missing_ok=True)
            proc.start()
            if frozen_s > 0.0 and proc.proc is not None:
                os.killpg(proc.proc.pid, signal.SIGSTOP)
                time.sleep(frozen_s)  # the clock runs on meanwhile (its own thread), holding for this party
                os.killpg(proc.proc.pid, signal.SIGCONT)
            self.wait_until(lambda: (self.homes[name] / "ready").exists(), 300, f"{name} ready after restart")
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
            if name in self.down:
                continue  # stopped on purpose: its service does not answer
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
            if self.gate is not None and self.gate.error is not None:
                raise FaultRunError(f"the block clock failed: {self.gate.error}")
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
        if name.startswith("copier-"):
            return self.copier_clients[int(name.removeprefix("copier-"))].address_of_account
        return next(p.address for p in self.people if p.name == name)

def _port_of(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise FaultRunError(f"no port in the IPFS API URL {url}")
    return port
