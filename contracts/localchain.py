"""The local chain a demo or test runs on: Anvil (default) or Ganache, behind one small interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

from contracts.anvil import AnvilNode
from contracts.ganache import GanacheNode

ChainKind = Literal["anvil", "ganache"]
CHAIN_KINDS: tuple[ChainKind, ...] = ("anvil", "ganache")


class LocalChain(Protocol):
    """What the demo and the end-to-end test need of a local chain."""

    @property
    def rpc_url(self) -> str: ...

    @property
    def private_keys(self) -> list[str]: ...

    @property
    def running(self) -> bool: ...

    def rpc(self, method: str, params: list[Any] | None = None) -> Any: ...

    def set_balance(self, address: str, wei: int) -> None: ...

    def start_clock(self, seconds: float) -> None:
        """From now on, one block every `seconds` (transactions wait for the next block)."""

    def stop(self) -> None: ...


def start_local_chain(kind: ChainKind, log_dir: Path) -> LocalChain:
    """Start a chain of `kind`, mining each transaction at once until `start_clock` is called."""
    if kind == "anvil":
        return AnvilNode(log_path=log_dir / "anvil.log").start()
    if kind == "ganache":
        return GanacheNode(log_path=log_dir / "ganache.log").start()
    raise ValueError(f"unknown chain {kind!r}: choose one of {', '.join(CHAIN_KINDS)}")
