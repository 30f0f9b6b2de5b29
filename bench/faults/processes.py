"""Process-kill fault scenarios (issue 8, Faults): SIGKILL the validator, SIGKILL trainers, on one real
network per scenario (bench/faults/killnet.py), many kills per run. Judged against ground truth read from the
chain, the parties' state files and, for the validator, an uninterrupted validator of the same run."""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from bench.faults import FaultOutcome, ScenarioFn, trainer_kills, validator_kills
from bench.faults.killnet import KillNet, KillNetSettings


def whole_epochs(windows: int, per_epoch: int) -> int:
    return -(-windows // per_epoch) * per_epoch


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (in the main thread) so the network's processes are always stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def validator_sigkill(faults: int, rng: random.Random, workdir: Path) -> list[FaultOutcome]:
    """Two validators (one the uninterrupted reference), two honest trainers; one window per kill."""
    settings = KillNetSettings(trainers=2, validators=2, windows=whole_epochs(faults + 2, 2),
                               run_seed=rng.randrange(1, 2**31))
    net = KillNet(settings, workdir)
    with sigterm_unwinds():
        try:
            return validator_kills.scenario(faults, rng, net.start())
        finally:
            net.close()


def trainer_sigkill(faults: int, rng: random.Random, workdir: Path) -> list[FaultOutcome]:
    """One validator, three honest trainers killed in rotation; one window per kill."""
    settings = KillNetSettings(trainers=3, validators=1, windows=whole_epochs(2 * faults + 3, 2),
                               run_seed=rng.randrange(1, 2**31))
    net = KillNet(settings, workdir)
    with sigterm_unwinds():
        try:
            return trainer_kills.scenario(faults, rng, net.start())
        finally:
            net.close()


SCENARIOS: dict[str, ScenarioFn] = {"validator_sigkill": validator_sigkill, "trainer_sigkill": trainer_sigkill}
