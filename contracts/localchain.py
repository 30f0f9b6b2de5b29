"""A local dev chain process (Anvil or Ganache) on a free loopback port: started, waited for, stopped as a
process group, spoken to over raw JSON-RPC for the dev methods (mining, snapshots, balances). The subclasses
say how to start their binary and how they mine; everything else is here once."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from base.errors import ToolMissingError
from base.paths import state_dir
from base.process import LOOPBACK, ManagedProcess, free_port, port_open
from contracts.errors import ChainUnreachable

ChainKind = Literal["anvil", "ganache"]
CHAIN_KINDS: tuple[ChainKind, ...] = ("anvil", "ganache")
DEV_CHAIN_ID = 31337
# The ten accounts of the dev mnemonic "test test … junk" (m/44'/60'/0'/0/i), which Anvil uses by default and
# Ganache is given. Public test keys: never use on a real network.
DEV_PRIVATE_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)


class LocalChain:
    """Base of `AnvilNode` and `GanacheNode`. `start()` blocks until the RPC answers; use as a context manager
    to always stop it. Transactions mine at once until `start_clock` (where the subclass supports it)."""

    name = "chain"
    rpc_timeout = 10.0
    start_timeout = 20.0

    def __init__(self, port: int | None, accounts: int, log_path: Path | None) -> None:
        self.port = port or free_port()
        self.accounts = accounts
        self.log_path = log_path or state_dir() / "logs" / f"{self.name}-{self.port}.log"
        self._process: ManagedProcess | None = None

    # -- what a subclass provides ------------------------------------------------------------------------------

    def tool_path(self) -> Path:
        """The binary or script the chain runs from (checked before starting)."""
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` empty blocks at once."""
        raise NotImplementedError

    def set_balance(self, address: str, wei: int) -> None:
        raise NotImplementedError

    def start_clock(self, seconds: float) -> None:
        """From now on, one block every `seconds` (transactions wait for the next block)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------------------

    @property
    def rpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def private_keys(self) -> list[str]:
        """The funded dev accounts' keys (the first `accounts` of the dev mnemonic)."""
        return list(DEV_PRIVATE_KEYS[: self.accounts])

    def start(self) -> Self:
        tool = self.tool_path()
        if not tool.exists():
            raise ToolMissingError(self.name, str(tool))
        if port_open(self.port):
            raise ChainUnreachable(self.rpc_url, f"port {self.port} is already in use")
        self._process = ManagedProcess(self.name, self.argv(), self.log_path, ready=self._answers,
                                       start_timeout=self.start_timeout)
        self._process.start()
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def _answers(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            self.rpc("eth_chainId")
        except ChainUnreachable:
            return False
        return True

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """One raw JSON-RPC call (for the dev methods: evm_mine, evm_snapshot, …)."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
        try:
            response = self._http().post(self.rpc_url, json=body, timeout=self.rpc_timeout)
        except httpx.HTTPError as err:
            raise ChainUnreachable(self.rpc_url, str(err)) from err
        data = response.json()
        if "error" in data:
            raise ChainUnreachable(self.rpc_url, f"{method}: {json.dumps(data['error'])}")
        return data.get("result")

    def _http(self) -> httpx.Client:
        """A kept-alive client per thread (a fresh one per call costs ~25 ms of TLS set-up even for http)."""
        local = self.__dict__.setdefault("_local", threading.local())
        client: httpx.Client | None = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client()
        return client

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def snapshot(self) -> str:
        """Snapshot the chain state; `revert(id)` returns to it (an id is single-use)."""
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if not self.rpc("evm_revert", [snapshot_id]):
            raise ChainUnreachable(self.rpc_url, f"evm_revert({snapshot_id}) was refused")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_local_chain(kind: ChainKind, log_dir: Path) -> LocalChain:
    """Start a chain of `kind`, mining each transaction at once until `start_clock` is called."""
    from contracts.anvil import AnvilNode  # the subclasses import this module
    from contracts.ganache import GanacheNode

    if kind == "anvil":
        return AnvilNode(log_path=log_dir / "anvil.log").start()
    if kind == "ganache":
        return GanacheNode(log_path=log_dir / "ganache.log").start()
    raise ValueError(f"unknown chain {kind!r}: choose one of {', '.join(CHAIN_KINDS)}")
