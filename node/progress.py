"""What `trainmarket node run` prints: one time-stamped line per event — waiting for block N (now M),
training, committed, revealed, missed and why — a progress bar while training on a terminal, and the
counts the final line reports (trained, revealed and missed separately)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from base.clock import WindowClock
from base.errors import TrainmarketError
from node.journal import WindowEntry

SLOW_HINT = ("this machine needs more time than a window gives: ask for longer windows (`trainmarket devnet "
             "--window-blocks`, or a slower --block-time), or give the node more CPU (--threads)")


def stamp() -> str:
    return time.strftime("%H:%M:%S")


class RunProgress:
    """The node's observer for the command line (node/runner.py's NodeObserver)."""

    def __init__(self, console: Console, clock: WindowClock, block_number: Callable[[], int]) -> None:
        self.console = console
        self.clock = clock
        self.block_number = block_number
        self.revealed_count = 0
        self.missed_count = 0
        self._trained_at: dict[int, tuple[float, str]] = {}  # window → (monotonic start, block at start)
        self._waited: set[tuple[int, int, str]] = set()  # what was already said, so each wait is one line
        self.progress = Progress(
            TextColumn("window {task.fields[window]}"), BarColumn(), TextColumn("step {task.completed:.0f}/"
            "{task.total:.0f} loss {task.fields[loss]}"), console=console, transient=True,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> RunProgress:
        if self.console.is_terminal:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _block(self) -> str:
        """The chain's block for a message; "?" when the chain does not answer (the loop handles outages, a
        progress line must not)."""
        try:
            return str(self.block_number())
        except TrainmarketError:
            return "?"

    def say(self, text: str) -> None:
        self.console.print(f"{stamp()} {text}", soft_wrap=True)

    # -- NodeObserver ----------------------------------------------------------------------------------------

    def waiting(self, window: int, block: int, now: int, until: str) -> None:
        if (window, block, until) in self._waited:
            return
        self._waited.add((window, block, until))
        self.say(f"window {window}: waiting for block {block} to {until} (now block {now})")

    def training(self, window: int, steps: int) -> None:
        block = self._block()
        self._trained_at[window] = (time.monotonic(), block)
        self.say(f"window {window}: training {steps} steps (block {block}; commits accepted until block "
                 f"{self.clock.end(window) - 1})")
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=steps, window=window, loss="-")

    def step(self, window: int, step: int, loss: float) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=step + 1, loss=f"{loss:.4f}")

    def committed(self, entry: WindowEntry) -> None:
        took = self._took(entry.window)
        self.say(f"window {entry.window}: committed {entry.cid}{took} (tx {entry.commit_tx or 'of an earlier run'}); "
                 f"reveals from block {self.clock.end(entry.window)}")

    def revealed(self, entry: WindowEntry) -> None:
        self.revealed_count += 1
        loss = "-" if entry.loss is None else f"{entry.loss:.4f}"
        self.say(f"window {entry.window}: loss {loss}, payload {entry.payload_bytes / 1024:.1f} KiB, CID {entry.cid}: "
                 f"revealed (tx {entry.reveal_tx or '-'})")

    def missed(self, entry: WindowEntry) -> None:
        self.missed_count += 1
        self.say(f"window {entry.window}: missed — {self.why_missed(entry)}")

    # -- words -----------------------------------------------------------------------------------------------

    def _took(self, window: int) -> str:
        started = self._trained_at.get(window)
        if started is None:
            return ""
        seconds, block = time.monotonic() - started[0], self._block()
        return f" after {seconds:.1f} s of training (blocks {started[1]}→{block})"

    def why_missed(self, entry: WindowEntry) -> str:
        window = entry.window
        if entry.committed or entry.note.startswith(("reveal period", "reported missed")):
            return (f"{entry.note}: committed, but no reveal landed before block {self.clock.reveal_end(window)}; "
                    "a missed reveal counts towards a slash (`trainmarket node status` says how close)")
        started = self._trained_at.get(window)
        if started is not None:
            seconds, block = time.monotonic() - started[0], self._block()
            return (f"{entry.note}: training took {seconds:.0f} s, from block {started[1]} to {block}, but commits "
                    f"for window {window} closed at block {self.clock.end(window)}; {SLOW_HINT}. Not slashed: "
                    "nothing was committed")
        return f"{entry.note} (the node was not running while the window was open); not slashed"
