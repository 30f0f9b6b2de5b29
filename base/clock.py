"""The window clock: which window a block belongs to and when its commit and reveal periods run, from the
run's fixed block parameters (so no RPC per question). The same arithmetic as the contract's windowOfBlock /
windowBounds; the trainer, the validator and the benches read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RunTiming(Protocol):
    """The run's block parameters (contracts.types.RunInfo has them)."""

    @property
    def start_block(self) -> int: ...
    @property
    def window_blocks(self) -> int: ...
    @property
    def reveal_blocks(self) -> int: ...


@dataclass(frozen=True)
class WindowClock:
    """Window `w` accepts commits in blocks [start + w·window_blocks, +window_blocks) and reveals in the
    `reveal_blocks` after it — the same arithmetic as the contract's windowOfBlock / windowBounds."""

    start_block: int
    window_blocks: int
    reveal_blocks: int

    @classmethod
    def of(cls, run: RunTiming) -> WindowClock:
        return cls(run.start_block, run.window_blocks, run.reveal_blocks)

    def window_of(self, block: int) -> int:
        """The window `block` belongs to; blocks before the run's start count as window 0 not yet open."""
        return max(0, (block - self.start_block) // self.window_blocks)

    def start(self, window: int) -> int:
        return self.start_block + window * self.window_blocks

    def end(self, window: int) -> int:
        """First block after the commit period = first block of the reveal period."""
        return self.start(window + 1)

    def reveal_end(self, window: int) -> int:
        """First block in which a reveal of `window` is refused."""
        return self.end(window) + self.reveal_blocks

    def can_commit(self, window: int, block: int) -> bool:
        return self.start(window) <= block < self.end(window)

    def can_reveal(self, window: int, block: int) -> bool:
        return self.end(window) <= block < self.reveal_end(window)
