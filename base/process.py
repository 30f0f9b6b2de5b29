"""A child process the project starts, waits for and always stops: Anvil, the IPFS daemon, trainers and
validators in the demo. One implementation so every server binds loopback, logs to a file, fails early
with its own output when it dies, and is killed as a process group (no orphans)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from base.errors import ProcessStartError

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def tail(path: Path, max_bytes: int = 4000) -> str:
    """The last bytes of a log file, decoded leniently (for error messages)."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-max_bytes:].decode("utf-8", errors="replace")


class ManagedProcess:
    """Start `argv` in its own process group with output to `log_path`; `start()` blocks until `ready()`
    returns True, raising ProcessStartError (with the log tail) if the process exits or the timeout ends."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        ready: Callable[[], bool],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.ready = ready
        self.env = env
        self.cwd = cwd
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                start_new_session=True,
            )
        # A start cut short (not ready in time, or Ctrl-C / SIGTERM while waiting, before the caller holds a
        # handle to stop) stops the process here, so it is never left running as an orphan.
        try:
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                code = self.proc.poll()
                if code is not None:
                    raise ProcessStartError(self.name, f"exited with code {code}", tail(self.log_path))
                if self.ready():
                    return self
                time.sleep(0.05)
            raise ProcessStartError(self.name, f"not ready after {self.start_timeout:.0f}s", tail(self.log_path))
        except BaseException:
            self.stop()
            raise

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after `grace` seconds."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        # Children that outlived the leader (e.g. node workers) die with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
