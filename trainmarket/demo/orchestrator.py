"""`make demo`: chain, IPFS, contracts, two validators and a crowd of honest and adversarial trainers as
separate processes, driven through windows and epochs; then everyone claims and the report says who got
paid and why. Every process is stopped on the way out, on success, Ctrl-C or a crash of any part."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from web3 import Web3

from base.errors import TrainmarketError
from base.process import ManagedProcess, free_port, port_open
from base.run_config import RunConfig
from contracts.client import TrainingRunClient
from contracts.deploy import deploy
from contracts.localchain import ChainKind, LocalChain, start_local_chain
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon, ipfs_api_from_env
from node.data import fetch_dataset
from trainmarket.demo.network import ETH, Participant, participants, publish_run_config, run_params, write_deployment
from trainmarket.demo.outcome import collect_outcome
from trainmarket.demo.report import write_report

POOL = 200 * ETH
TRAINER_STAKE = 2 * ETH


@dataclass
class DemoSettings:
    """What `make demo` runs; the defaults finish in a few minutes on 2 CPU cores."""

    honest: int = 5
    sybils: int = 3
    validators: int = 2  # dev accounts 1..validators of the local chain (at most 9)
    adversaries: tuple[str, ...] = ("copier", "noise", "zero", "freerider", "stale", "poisoner", "malformed")
    epochs: int = 2
    windows_per_epoch: int = 3
    window_blocks: int = 24
    reveal_blocks: int = 3  # short: window w trains from the model of w − 1, published only after this period
    block_seconds: float = 1.0
    model: str = "tiny"
    device: str = "cpu"
    chain: ChainKind = "anvil"
    corpus_bytes: int = 4_000_000
    out_dir: Path = field(default_factory=lambda: Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S"))
    config: RunConfig = field(default_factory=lambda: RunConfig(seq_len=64, inner_steps=12, seqs_per_step=8,
                                                                inner_lr=4e-3))
    quiet: bool = False
    settle: bool = True  # claims and the report after the last epoch (bench.load measures the run, then stops)
    audit: bool = False  # after the run, `validator audit` replays every window of every validator

    @property
    def windows(self) -> int:
        return self.epochs * self.windows_per_epoch


def validator_argv(deployment: Path, api: str, port: int, first: int, home: Path, device: str) -> list[str]:
    """A demo validator's command line (`python` + this): the CLI's `validator serve`, state under `home`."""
    return ["-m", "trainmarket.cli", "validator", "serve", "--deployment", str(deployment), "--ipfs-api", api,
            "--port", str(port), "--start-window", str(first), "--home", str(home), "--device", device,
            "--poll-seconds", "0.5"]


def trainer_argv(deployment: Path, api: str, home: Path, cache: Path, p: Participant, first: int,
                 last: int) -> list[str]:
    """A demo trainer's command line (`python` + this): trainmarket.demo.participant in its role."""
    return ["-m", "trainmarket.demo.participant", "--deployment", str(deployment), "--ipfs-api", api,
            "--home", str(home), "--cache", str(cache), "--role", p.role,
            "--first-window", str(first), "--last-window", str(last),
            "--sybil-leader", p.sybil_leader, "--sybil-member", str(p.sybil_member)]


class DemoFailed(TrainmarketError):
    """A part of the demo died or the run did not settle in time."""


def _say(settings: DemoSettings, text: str) -> None:
    if not settings.quiet:
        print(text, flush=True)


class Demo:
    """Owns every process it starts; `close()` stops them all, whatever state the demo is in."""

    def __init__(self, settings: DemoSettings) -> None:
        self.s = settings
        self.out = settings.out_dir.resolve()
        self.logs = self.out / "logs"
        self.processes: list[ManagedProcess] = []
        self.pids: list[int] = []  # every process spawned, kept after it stops (report.json's `started`)
        self.ipfs: IpfsDaemon | None = None
        self.chain: LocalChain | None = None

    def stop_processes(self) -> None:
        for proc in reversed(self.processes):
            proc.stop(grace=5.0)

    def close(self) -> None:
        self.stop_processes()
        if self.chain is not None:
            self.chain.stop()
        if self.ipfs is not None:
            self.ipfs.stop()

    # -- setup -----------------------------------------------------------------------------------------------

    def start_storage(self) -> IpfsClient:
        api = ipfs_api_from_env()
        if api is None:
            self.ipfs = IpfsDaemon(self.out / "ipfs").start()
            api = self.ipfs.api_url
        _say(self.s, f"IPFS daemon at {api}")
        return IpfsClient(api, timeout=60.0)

    def start_chain(self) -> TrainingRunClient:
        # Automine while setting up (each setup tx mines at once); the block clock starts with the windows.
        self.chain = start_local_chain(self.s.chain, self.logs)
        web3 = Web3(Web3.HTTPProvider(self.chain.rpc_url))
        from eth_account import Account

        sponsor = Account.from_key(self.chain.private_keys[0])
        deployment = deploy(web3, sponsor)
        _say(self.s, f"{self.s.chain.capitalize()} at {self.chain.rpc_url}; "
                     f"TrainingRun deployed at {deployment.address}")
        return TrainingRunClient(web3, deployment.address, sponsor, deployment.block)

    def spawn(self, name: str, argv: list[str], env: dict[str, str], ready: Any = None) -> ManagedProcess:
        proc = ManagedProcess(name, [sys.executable, *argv], self.logs / f"{name}.log", ready or (lambda: True),
                              env={"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}, start_timeout=120)
        self.processes.append(proc)
        proc.start()
        if proc.proc is not None:
            self.pids.append(proc.proc.pid)
        return proc

    def wait_ready(self, checks: dict[str, Any], timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        pending = dict(checks)
        while pending:
            for proc in self.processes:
                if not proc.running:
                    raise DemoFailed(f"{proc.name} exited during start-up; see {proc.log_path}")
            pending = {k: v for k, v in pending.items() if not v()}
            if time.monotonic() > deadline:
                raise DemoFailed(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}")
            time.sleep(0.5)

    # -- the run ---------------------------------------------------------------------------------------------

    def run(self) -> Path:
        s = self.s
        self.out.mkdir(parents=True, exist_ok=True)
        blobs = self.start_storage()
        _say(s, "building the dataset from the Python standard library and publishing it to IPFS …")
        base = s.config.model_copy(update={"model_preset": s.model})
        config, config_cid = publish_run_config(blobs, base, s.corpus_bytes)
        fetch_dataset(blobs, config.dataset_cid, self.out / "cache")  # warm the shared cache once
        sponsor = self.start_chain()
        assert self.chain is not None
        params = run_params(config, s.window_blocks, s.reveal_blocks, s.windows_per_epoch)
        run_id = sponsor.create_run(params, POOL)
        people = self.make_participants()
        validators = [sponsor.with_account(self._dev_account(i)) for i in range(1, s.validators + 1)]
        for p in people:
            self.chain.set_balance(p.address, 100 * ETH)
            sponsor.with_account(p.account).register_trainer(run_id, TRAINER_STAKE)
        for v in validators:
            v.register_validator(run_id, 10 * ETH)
        deployment = self.out / "deployment.json"
        write_deployment(deployment, {
            "address": sponsor.contract.address, "block": sponsor.from_block, "rpc_url": self.chain.rpc_url,
            "chain_id": 31337, "run_id": run_id, "config_cid": config_cid,
        })
        current = sponsor.current_window(run_id)
        first = -(-(current + 1) // s.windows_per_epoch) * s.windows_per_epoch  # first window of a fresh epoch
        last = first + s.windows - 1
        _say(s, f"run {run_id}: {len(people)} trainers, {len(validators)} validators, windows {first}..{last} "
                f"({s.window_blocks} blocks each, {s.reveal_blocks} to reveal), epochs {first // s.windows_per_epoch}"
                f"..{last // s.windows_per_epoch}; config {config_cid}")
        api = blobs.api_url
        ports = [free_port() for _ in validators]
        for i, (v, port) in enumerate(zip(validators, ports, strict=True)):
            self.spawn(f"validator-{i}", validator_argv(deployment, api, port, first, self.out / f"validator-{i}",
                                                        s.device),
                       {"TRAINMARKET_VALIDATOR_KEY": v.account.key.hex(),
                        "TRAINMARKET_HOME": str(self.out / "home")},
                       ready=lambda port=port: port_open(port))
            _say(s, f"validator-{i} {v.address_of_account}: dashboard at http://127.0.0.1:{port}/")
        ready_files = self.spawn_trainers(people, deployment, api, first, last)
        _say(s, f"waiting for {len(ready_files)} trainer processes to load the model and data …")
        self.wait_ready(ready_files)
        self.chain.start_clock(s.block_seconds)
        _say(s, "chain clock started: one block every "
                f"{s.block_seconds:g}s")
        self.watch(sponsor, run_id, first, last, ports)
        if not s.settle:
            return self.out
        for proc in self.processes:  # trainers are done after the last window; stop any straggler
            if not proc.name.startswith("validator"):
                proc.stop(grace=3.0)
        outcome = collect_outcome(sponsor, run_id, people, validators, ports, first, last, s.windows_per_epoch, POOL,
                                  stop_validators=self.stop_processes, stake=TRAINER_STAKE)
        if s.audit:
            outcome.extra["audit"] = self.audit_validators(deployment, api, validators, last)
        outcome.extra["started"] = self.started(ports)
        report = write_report(outcome, self.out)
        _say(s, (self.out / "report.md").read_text())
        return report

    def make_participants(self) -> list[Participant]:
        return participants(self.s.honest, self.s.sybils, self.s.adversaries)

    def spawn_trainers(self, people: list[Participant], deployment: Path, api: str, first: int,
                       last: int) -> dict[str, Any]:
        """One process per trainer; returns name → readiness check."""
        ready_files: dict[str, Any] = {}
        for p in people:
            home = self.out / "trainers" / p.name
            home.mkdir(parents=True, exist_ok=True)
            argv = trainer_argv(deployment, api, home, self.out / "cache", p, first, last)
            self.spawn(p.name, argv, {"TRAINMARKET_PRIVATE_KEY": p.account.key.hex(),
                                      "TRAINMARKET_HOME": str(self.out / "home")})
            ready_files[p.name] = lambda home=home: (home / "ready").exists()
        return ready_files

    def started(self, validator_ports: list[int]) -> dict[str, list[int]]:
        """The ports and process ids this demo opened, so a caller can check that nothing outlives it."""
        assert self.chain is not None
        ports = [int(self.chain.rpc_url.rsplit(":", 1)[1]), *validator_ports]
        if self.ipfs is not None:
            ports.append(int(self.ipfs.api_url.rsplit(":", 1)[1]))
        return {"ports": ports, "pids": list(self.pids)}

    def audit_validators(self, deployment: Path, api: str, validators: list[TrainingRunClient],
                         window: int) -> dict[str, dict[str, Any]]:
        """Run the real `validator audit` on each validator's last window: it replays the validator's windows
        from its first one, so every published model and report of the run is recomputed and compared."""
        results: dict[str, dict[str, Any]] = {}
        for i, v in enumerate(validators):
            name = f"validator-{i}"
            _say(self.s, f"auditing {name}: replaying its windows up to {window} …")
            argv = [sys.executable, "-m", "trainmarket.cli", "validator", "audit", "--deployment", str(deployment),
                    "--ipfs-api", api, "--window", str(window), "--validator", v.address_of_account, "--json"]
            env = {**os.environ, "TRAINMARKET_HOME": str(self.out / "home")}
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800, check=False)
            (self.logs / f"audit-{name}.log").write_text(done.stdout + done.stderr)
            lines = done.stdout.strip().splitlines()
            try:
                verdict: dict[str, Any] = json.loads(lines[-1]) if lines else {}
            except ValueError:
                verdict = {}
            results[name] = {"ok": done.returncode == 0 and verdict.get("ok") is True, "window": window,
                             "mismatches": len(verdict.get("mismatches", [])), "exit_code": done.returncode}
        return results

    def _dev_account(self, index: int) -> Any:
        from eth_account import Account

        assert self.chain is not None
        return Account.from_key(self.chain.private_keys[index])

    def watch(self, views: TrainingRunClient, run_id: int, first: int, last: int, ports: list[int]) -> None:
        """Print a line per window as it is published, until the last epoch is finalised."""
        s = self.s
        last_epoch = last // s.windows_per_epoch
        shown = first - 1
        bounds = views.window_bounds(run_id, last)
        deadline_block = bounds.reveal_end + 4 * s.window_blocks + 60
        while True:
            for proc in self.processes:
                if not proc.running and proc.name.startswith("validator"):
                    raise DemoFailed(f"{proc.name} died; see {proc.log_path}")
            # A window's line waits for every validator (or, if one lags, for the next window's first publication).
            while shown < last and self._ready_to_show(views, run_id, shown + 1, last, len(ports)):
                shown += 1
                self._window_line(views, run_id, shown, ports)
            if views.epoch_info(run_id, last_epoch).finalized:
                while shown < last:
                    shown += 1
                    self._window_line(views, run_id, shown, ports)
                _say(s, f"epoch {last_epoch} finalised")
                return
            if views.block_number() > deadline_block:
                raise DemoFailed(f"the run did not settle by block {deadline_block}; logs in {self.logs}")
            time.sleep(1.0)

    @staticmethod
    def _ready_to_show(views: TrainingRunClient, run_id: int, window: int, last: int, validators: int) -> bool:
        published = len(views.publications(run_id, window, reports=False))
        return published >= validators or (published > 0 and window < last
                                           and bool(views.publications(run_id, window + 1, reports=False)))

    def _window_line(self, views: TrainingRunClient, run_id: int, window: int, ports: list[int]) -> None:
        pubs = views.publications(run_id, window, reports=False)  # reports are sealed until the epoch settles
        agree = len({p.model_cid for p in pubs.values()}) == 1
        verdict = "agree" if agree else "DISAGREE"
        if len(pubs) < len(ports):
            verdict = f"{len(pubs)} of {len(ports)} published so far"
        loss = "?"
        for port in ports:  # any validator that has scored the window knows its loss (they agree on the model)
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                points = httpx.get(f"http://127.0.0.1:{port}/loss", timeout=5).json()
                loss = next((f"{p['loss']:.4f}" for p in points if p["window"] == window), "?")
            if loss != "?":
                break
        commits = len(views.commits(run_id, window))
        reveals = len(views.reveals(run_id, window))
        _say(self.s, f"window {window}: {commits} commits, {reveals} reveals, global loss {loss}, "
                     f"validators {verdict}")


def run_demo(settings: DemoSettings) -> Path:
    demo = Demo(settings)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return demo.run()
    finally:
        demo.close()
        signal.signal(signal.SIGTERM, previous)
