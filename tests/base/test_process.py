"""ManagedProcess on real child processes: a start that is cut short leaves nothing running."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from base.errors import ProcessStartError
from base.process import ManagedProcess

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purposes
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_an_interrupted_start_stops_the_child(tmp_path: Path) -> None:
    """Ctrl-C (or SIGTERM turned into KeyboardInterrupt, as the demo does) while waiting for readiness."""
    seen: list[int] = []

    def ready() -> bool:
        assert proc.proc is not None
        seen.append(proc.proc.pid)
        raise KeyboardInterrupt

    proc = ManagedProcess("sleeper", SLEEPER, tmp_path / "log", ready=ready)
    with pytest.raises(KeyboardInterrupt):
        proc.start()
    assert seen and not alive(seen[0])
    assert not proc.running


def test_a_start_that_times_out_stops_the_child(tmp_path: Path) -> None:
    pids: list[int] = []

    def never() -> bool:
        assert proc.proc is not None
        pids.append(proc.proc.pid)
        return False

    proc = ManagedProcess("sleeper", SLEEPER, tmp_path / "log", ready=never, start_timeout=0.5)
    with pytest.raises(ProcessStartError, match="not ready after"):
        proc.start()
    assert pids and not alive(pids[-1])


def test_a_ready_child_keeps_running_until_stopped(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", SLEEPER, tmp_path / "log", ready=lambda: True).start()
    assert proc.proc is not None
    pid = proc.proc.pid
    assert alive(pid)
    proc.stop(grace=1.0)
    assert not alive(pid)
