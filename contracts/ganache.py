"""A managed Ganache chain (npm `ganache`), the alternative to Anvil: same dev accounts, same RPC surface as
`AnvilNode` for what the project needs (deploy, fund, mine, snapshot, a block clock).

Ganache has no interval mining that can be switched on at run time, so `start_clock` stops its miner (sent
transactions wait in the pool) and a thread mines one block per interval with `evm_mine`, which includes the
pooled transactions. Ganache is archived upstream and slower than Anvil; Anvil stays the default."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from contracts.anvil import ANVIL_CHAIN_ID, DEV_PRIVATE_KEYS
from contracts.errors import ChainUnreachable
from trainmarket.errors import ToolMissingError
from trainmarket.paths import ganache_cli, state_dir
from trainmarket.process import LOOPBACK, ManagedProcess, free_port, port_open

DEV_MNEMONIC = "test test test test test test test test test test test junk"  # Anvil's: the same ten keys


class GanacheNode:
    """A Ganache process (instamine until `start_clock`). Use as a context manager to always stop it."""

    def __init__(self, port: int | None = None, accounts: int = len(DEV_PRIVATE_KEYS), balance_eth: int = 10_000,
                 log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.accounts = accounts
        self.balance_eth = balance_eth
        self.log_path = log_path or state_dir() / "logs" / f"ganache-{self.port}.log"
        self._process: ManagedProcess | None = None
        self._clock: threading.Thread | None = None
        self._clock_stop = threading.Event()

    @property
    def rpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def private_keys(self) -> list[str]:
        return list(DEV_PRIVATE_KEYS[: self.accounts])

    def argv(self) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise ToolMissingError("node", "Node.js (ganache runs on it)")
        return [
            node, str(ganache_cli()), "--server.host", LOOPBACK, "--server.port", str(self.port),
            "--chain.chainId", str(ANVIL_CHAIN_ID), "--chain.hardfork", "shanghai",
            "--wallet.mnemonic", DEV_MNEMONIC, "--wallet.totalAccounts", str(self.accounts),
            "--wallet.defaultBalance", str(self.balance_eth), "--logging.quiet",
        ]

    def start(self) -> GanacheNode:
        if not ganache_cli().exists():
            raise ToolMissingError("ganache", str(ganache_cli()))
        if port_open(self.port):
            raise ChainUnreachable(self.rpc_url, f"port {self.port} is already in use")
        self._process = ManagedProcess("ganache", self.argv(), self.log_path, ready=self._answers, start_timeout=60)
        self._process.start()
        return self

    def stop(self) -> None:
        self._clock_stop.set()
        if self._clock is not None:
            self._clock.join(timeout=5)
            self._clock = None
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
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
        try:
            response = httpx.post(self.rpc_url, json=body, timeout=30)
        except httpx.HTTPError as err:
            raise ChainUnreachable(self.rpc_url, str(err)) from err
        data = response.json()
        if "error" in data:
            raise ChainUnreachable(self.rpc_url, f"{method}: {json.dumps(data['error'])}")
        return data.get("result")

    def mine(self, blocks: int = 1) -> None:
        if blocks > 0:
            self.rpc("evm_mine", [{"blocks": blocks}])

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if not self.rpc("evm_revert", [snapshot_id]):
            raise ChainUnreachable(self.rpc_url, f"evm_revert({snapshot_id}) was refused")

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("evm_setAccountBalance", [address, hex(wei)])

    def start_clock(self, seconds: float) -> None:
        """One block every `seconds`, transactions included only by those blocks (like Anvil's interval mining)."""
        if self._clock is not None:
            return
        self.rpc("miner_stop")
        self._clock_stop.clear()
        self._clock = threading.Thread(target=self._tick, args=(seconds,), name="ganache-clock", daemon=True)
        self._clock.start()

    def _tick(self, seconds: float) -> None:
        while not self._clock_stop.wait(seconds):
            try:
                self.rpc("evm_mine")
            except ChainUnreachable:
                if not self.running:
                    return  # stopped under us; the demo reports the dead chain itself

    def __enter__(self) -> GanacheNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
