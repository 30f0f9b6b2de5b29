"""Load run: many trainers (tiny model) and several validators through the real chain (Anvil, one block per
second) and the real IPFS daemon, driven by the demo's own orchestration (trainmarket/demo/orchestrator.py); only
honest trainers, so every missed reveal or late publication is load.

    python -m bench.load                                              # 32 trainer processes, 2 validators
    python -m bench.load --trainers 8 --windows 10 --window-blocks 24
    python -m bench.load --population 256 --windows 20                # 256 identities in 4 processes

`--population N` hosts N trainer identities in a few processes (node/population_host.py: each identity a full
node/runner.TrainerNode with its own key, stake, assignment, carried state, journal, commits, reveals and IPFS
adds; H = 2 inner steps of 4 sequences); without it every trainer is its own process (~380 MiB each).

Writes bench/results/load.json: the latest run's figures at the top level, and every configuration measured
so far under `runs` (one entry per trainers/validators/windows/window length), with `largest_on_time` the
largest trainer count whose windows were all on time. Definitions (read back from the chain, the trainers'
sync logs and the validators' stores):
- window w trains from the global model of window w − 1: a trainer waits for every validator's publication of
  w − 1 until its sync deadline (node/runner.py: the window's end less its training time and a commit margin),
  then trains from the newest model it has. So a window is on time when every trainer's reveal landed in its
  reveal period and every validator published the window before the next window's sync deadline (the earliest
  any trainer had, from their sync.jsonl), i.e. early enough for every trainer of w + 1 to train from it;
- publish margin: blocks between a publication and that deadline (negative: too late);
- validator lag: blocks (and block-timestamp seconds) from the close of the reveal period, the earliest a
  validator can score, to its publish transaction;
- validator seconds per window, per stage (validator/timing.py): fetch (payloads from IPFS, concurrent),
  decode, filter, evaluation, aggregation, rating, publish (model and report to IPFS, the publish transaction),
  other (chain reads, state files, database); weights: each settlement step (submit an epoch's weights,
  finalise it);
- reveal span: blocks of the reveal period used up to the window's last reveal (1: all in its first block);
  last commit margin: blocks between the window's last commit and the window's end;
- scored_fraction: contributions the validators scored over contributions revealed (on chain, in the reveal
  period), summed over the run's windows and every validator; the goal is 1. A revealed contribution that is
  not scored is rejected with a reason in the window's report (`unscored_by_reason`, e.g. `unreliable`: the
  trainer missed more reveals of the last windows than the run allows; `unavailable`: no one served the
  payload before the fetch deadline); `unscored_unaccounted` counts any that no reason covers and must be 0.
  A committed trainer that never revealed is not a revealed contribution: it counts in reveal_success_fraction;
- gas per window: gas used by every transaction mined from the first window's start to the last's end, divided
  by the windows, in total and per contract function;
- memory: peak RSS of every process the run started (trainers, validators, chain, IPFS), per role, and the
  peak of their summed RSS sampled every 2 s; the 1-minute load average is sampled alongside, because the
  machine is shared and its other users' load makes the on-time figures pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.run_config import RunConfig
from bench.load_figures import gas_figures, measure_windows, validator_figures
from contracts.client import TrainingRunClient
from node.population import population_account
from trainmarket.demo.network import Participant
from trainmarket.demo.orchestrator import Demo, DemoFailed, DemoSettings

RESULTS = Path(__file__).resolve().parent / "results" / "load.json"
POPULATION_LABEL = "load"
WINDOW_BLOCKS = 24
# The population's window, sized from two runs of 256 identities on the 2-core machine, which other engineers'
# jobs share. `python -m bench.load --population 256 --windows 3 --window-blocks 90 --reveal-blocks 12` (load
# average 7.5-11): the 256 reveals landed within 9-10 of the 12 reveal blocks, the validators published 24-30
# blocks after the reveal period (24.7 s per window: decode 9.4 s, evaluation 6.6 s, filters 4.2 s), and 128
# identities per process trained and committed in 16-22 blocks (H = 2): about 66 blocks with the 2-block commit
# margin. The 20-window run at 90 blocks with 2 host processes then met a load average of 17-21: reveals took
# the whole 12 blocks and more (151 of 256 missed in one window), the validators needed up to 47 blocks and
# training up to ~30. So: 20 blocks to reveal, 120 per window, and 4 host processes (a starved process gets a
# share of the cores per process, not per identity). The 20-window run at these defaults (load average 8-19) was
# on time in every window and needed 44-90 of the 120 blocks (docs/SCALE.md, M1).
POPULATION_WINDOW_BLOCKS = 120
POPULATION_REVEAL_BLOCKS = 20
POPULATION_PROCESSES = 4
ROLES = (("participant", "trainer"), ("population_host", "trainer"), ("validator", "validator"), ("anvil", "chain"),
         ("ipfs", "ipfs"))
# Population runs: the tiny model, H = 2 inner steps of 4 sequences, so that 256 identities train on 2 cores.
POPULATION_CONFIG = RunConfig(seq_len=64, inner_steps=2, seqs_per_step=4, inner_lr=4e-3, eval_own_seqs=4,
                              eval_random_seqs=16)


def descendants(root: int) -> list[int]:
    """Every live process under `root` (read from /proc: no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _status_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_role(pid: int) -> str | None:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return next((role for marker, role in ROLES if marker in cmdline), None)


@dataclass
class Sampler:
    """Samples RSS of the run's processes and the load average every `period` seconds in a thread."""

    period: float = 2.0
    peak_total_kib: int = 0
    peak_kib: dict[int, tuple[str, int]] = field(default_factory=dict)  # pid -> (role, VmHWM)
    loads: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        total = 0
        for pid in descendants(os.getpid()):
            role = process_role(pid)
            if role is None:
                continue
            total += _status_kib(pid, "VmRSS")
            hwm = _status_kib(pid, "VmHWM")
            if hwm:
                self.peak_kib[pid] = (role, max(hwm, self.peak_kib.get(pid, (role, 0))[1]))
        self.peak_total_kib = max(self.peak_total_kib, total)
        self.loads.append(os.getloadavg()[0])

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.period):
                self.sample()

        self._thread = threading.Thread(target=loop, name="load-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def memory_mib(self) -> dict[str, Any]:
        by_role: dict[str, list[float]] = {}
        for role, kib in self.peak_kib.values():
            by_role.setdefault(role, []).append(kib / 1024)
        out: dict[str, Any] = {"peak_total_rss_mib": round(self.peak_total_kib / 1024, 1)}
        for role, values in sorted(by_role.items()):
            out[role] = {"processes": len(values), "peak_rss_mib_max": round(max(values), 1),
                         "peak_rss_mib_mean": round(statistics.fmean(values), 1)}
        return out


class LoadDemo(Demo):
    """The demo's network with a sampler around the window loop and the figures read before anything stops."""

    def __init__(self, settings: DemoSettings, population: int = 0, processes: int = 2) -> None:
        super().__init__(settings)
        self.sampler = Sampler()
        self.figures: dict[str, Any] = {}
        self.failure = ""
        self.population = population  # > 0: that many identities hosted by `processes` processes
        self.processes_count = processes

    def make_participants(self) -> list[Participant]:
        if not self.population:
            return super().make_participants()
        return [Participant(f"pop-{i}", "honest", population_account(POPULATION_LABEL, i))
                for i in range(self.population)]

    def spawn_trainers(self, people: list[Participant], deployment: Path, api: str, first: int,
                       last: int) -> dict[str, Any]:
        if not self.population:
            return super().spawn_trainers(people, deployment, api, first, last)
        ready: dict[str, Any] = {}
        share = -(-len(people) // self.processes_count)
        for k in range(self.processes_count):
            lo, hi = k * share, min(len(people), (k + 1) * share)
            if lo >= hi:
                break
            home = self.out / "population" / f"host-{k}"
            home.mkdir(parents=True, exist_ok=True)
            argv = ["-m", "node.population_host", "--deployment", str(deployment), "--ipfs-api", api,
                    "--home", str(home), "--cache", str(self.out / "cache"), "--label", POPULATION_LABEL,
                    "--identities", f"{lo}:{hi}", "--first-window", str(first), "--last-window", str(last)]
            self.spawn(f"population-{k}", argv, {"TRAINMARKET_HOME": str(self.out / "home")})
            ready[f"population-{k}"] = lambda home=home: (home / "ready").exists()
        return ready

    def watch(self, views: TrainingRunClient, run_id: int, first: int, last: int, ports: list[int]) -> None:
        self.sampler.start()
        try:
            super().watch(views, run_id, first, last, ports)
        except DemoFailed as err:  # measured all the same: a run that cannot keep up is a result here
            self.failure = str(err)
        finally:
            self.sampler.stop()
        s = self.s
        self.figures = measure_windows(views, run_id, first, last, s.honest, s.validators, s.window_blocks,
                                       self.out)
        stores = [self.out / f"validator-{i}" / "state.sqlite3" for i in range(s.validators)]
        self.figures.update(validator_figures([p for p in stores if p.exists()], first, last))
        self.figures.update(gas_figures(views, views.window_bounds(run_id, first).start,
                                        views.window_bounds(run_id, last + 1).start, last - first + 1))
        self.figures["first_window"], self.figures["last_window"] = first, last


def run_load(trainers: int, validators: int, windows: int, window_blocks: int, reveal_blocks: int,
             windows_per_epoch: int, out_dir: Path | None, population: int = 0, processes: int = 2
             ) -> dict[str, Any]:
    epochs = -(-windows // windows_per_epoch)
    settings = DemoSettings(honest=trainers, sybils=0, adversaries=(), validators=validators, epochs=epochs,
                            windows_per_epoch=windows_per_epoch, window_blocks=window_blocks,
                            reveal_blocks=reveal_blocks, settle=False)
    if population:
        settings.config = POPULATION_CONFIG
    if out_dir is not None:
        settings.out_dir = out_dir
    demo = LoadDemo(settings, population, processes)
    load_before = os.getloadavg()[0]
    began = time.monotonic()

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that `finally` stops every process the run started

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        demo.run()
    finally:
        demo.close()
        signal.signal(signal.SIGTERM, previous)
    loads = demo.sampler.loads or [load_before]
    return {
        "trainers": trainers, "validators": validators, "windows": settings.windows,
        "window_blocks": window_blocks, "reveal_blocks": reveal_blocks, "block_seconds": settings.block_seconds,
        "model": settings.model, **demo.figures,
        "memory": demo.sampler.memory_mib(),
        "load_average_1min": {"before": round(load_before, 2), "mean": round(statistics.fmean(loads), 2),
                              "max": round(max(loads), 2)},
        "cpu_count": os.cpu_count(), "wall_seconds": round(time.monotonic() - began, 1),
        "settled": not demo.failure, "failure": demo.failure,
        "note": "2 CPU cores shared with other developers' processes during the run: on-time figures are "
                "pessimistic for a dedicated machine of this size (see load_average_1min)",
    }


def record(result: dict[str, Any], path: Path = RESULTS) -> dict[str, Any]:
    """Latest run on top, every configuration measured under `runs`, the largest fully on-time one named."""
    previous: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    key = ("trainers", "validators", "windows", "window_blocks")
    runs = [r for r in previous.get("runs", []) if any(r.get(k) != result[k] for k in key)]
    runs.append({k: v for k, v in result.items() if k != "runs"})
    runs.sort(key=lambda r: (r["trainers"], r["windows"], r["window_blocks"]))

    def largest(fraction: str) -> dict[str, Any] | None:
        on_time = [r for r in runs if (r.get(fraction) if r.get(fraction) is not None else 0) >= 1.0]
        best = max(on_time, key=lambda r: (r["trainers"], r["windows"]), default=None)
        return None if best is None else {k: best[k] for k in (*key, fraction)}

    document = {**result, "runs": runs, "largest_on_time": largest("on_time_fraction"),
                # every window but the first, which also pays each process's cold start
                "largest_on_time_after_first_window": largest("on_time_fraction_after_first_window")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--trainers", type=int, default=32)
    parser.add_argument("--validators", type=int, default=2, help="at most 9 (the local chain's dev accounts)")
    parser.add_argument("--windows", type=int, default=50)
    parser.add_argument("--window-blocks", type=int, default=None,
                        help=f"blocks per window, one block per second (default {WINDOW_BLOCKS}; with --population "
                             f"{POPULATION_WINDOW_BLOCKS})")
    parser.add_argument("--reveal-blocks", type=int, default=None,
                        help=f"default: a third of the window; with --population {POPULATION_REVEAL_BLOCKS}")
    parser.add_argument("--windows-per-epoch", type=int, default=5)
    parser.add_argument("--population", type=int, default=0, metavar="N",
                        help="N trainer identities hosted by --processes processes (node/population_host.py) "
                             "instead of one process per trainer; sets --trainers to N")
    parser.add_argument("--processes", type=int, default=POPULATION_PROCESSES,
                        help=f"population host processes (default {POPULATION_PROCESSES})")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/demo-<time>)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not 1 <= args.validators <= 9 or args.trainers < 1 or args.windows < 1:
        parser.error("need 1..9 validators, at least one trainer and one window")
    if args.population:
        args.trainers = args.population
        args.window_blocks = args.window_blocks or POPULATION_WINDOW_BLOCKS
        args.reveal_blocks = args.reveal_blocks or POPULATION_REVEAL_BLOCKS
    args.window_blocks = args.window_blocks or WINDOW_BLOCKS
    reveal = args.reveal_blocks or max(4, args.window_blocks // 3)
    per_epoch = min(args.windows_per_epoch, args.windows)
    result = run_load(args.trainers, args.validators, args.windows, args.window_blocks, reveal, per_epoch, args.out,
                      args.population, args.processes)
    document = record(result, args.results)
    shown = {k: result.get(k) for k in ("trainers", "validators", "windows", "window_blocks", "on_time_fraction",
                                        "reveal_success_fraction", "scored_fraction", "validator_lag_blocks",
                                        "publish_margin_blocks", "validator_seconds_per_window", "gas_per_window",
                                        "memory", "load_average_1min", "wall_seconds", "settled", "failure")}
    print(json.dumps(shown, indent=2))
    print(f"largest run on time so far: {document['largest_on_time']}; written to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
