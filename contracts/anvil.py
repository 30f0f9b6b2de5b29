"""A managed Anvil chain on a free loopback port: started, waited for, stopped as a process group. Tests, the
devnet command and the demo all use it, so block timing is always driven the same way (explicit mining, or
Anvil's interval mining with `block_time`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from contracts.errors import ChainUnreachable
from trainmarket.errors import ToolMissingError
from trainmarket.paths import anvil_binary, state_dir
from trainmarket.process import LOOPBACK, ManagedProcess, free_port, port_open

ANVIL_CHAIN_ID = 31337
# Anvil's default accounts (mnemonic "test test … junk", m/44'/60'/0'/0/i). Public test keys: never use on a
# real network.
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


class AnvilNode:
    """An Anvil process. `start()` blocks until the RPC answers; use as a context manager to always stop it."""

    def __init__(
        self,
        port: int | None = None,
        block_time: float | None = None,
        state_path: Path | None = None,
        accounts: int = len(DEV_PRIVATE_KEYS),
        balance_eth: int = 10_000,
        no_mining: bool = False,
        gas_limit: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.block_time = block_time
        self.state_path = state_path
        self.accounts = accounts
        self.balance_eth = balance_eth
        self.no_mining = no_mining
        self.gas_limit = gas_limit
        self.extra_args = list(extra_args)
        self.log_path = log_path or state_dir() / "logs" / f"anvil-{self.port}.log"
        self._process: ManagedProcess | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def private_keys(self) -> list[str]:
        """The funded dev accounts' keys (the first `accounts` of Anvil's default mnemonic)."""
        return list(DEV_PRIVATE_KEYS[: self.accounts])

    def argv(self) -> list[str]:
        binary = anvil_binary()
        argv = [str(binary), "--host", LOOPBACK, "--port", str(self.port), "--accounts", str(self.accounts)]
        argv += ["--balance", str(self.balance_eth), "--chain-id", str(ANVIL_CHAIN_ID), "--hardfork", "shanghai"]
        if self.block_time is not None:
            argv += ["--block-time", str(self.block_time)]
        if self.no_mining:
            argv.append("--no-mining")
        if self.gas_limit is not None:
            argv += ["--gas-limit", str(self.gas_limit)]
        if self.state_path is not None:
            # --state loads the file when it exists and dumps to it on exit.
            argv += ["--state", str(self.state_path)]
        return argv + self.extra_args

    def start(self) -> AnvilNode:
        binary = anvil_binary()
        if not binary.exists():
            raise ToolMissingError("anvil", str(binary))
        if port_open(self.port):
            raise ChainUnreachable(self.rpc_url, f"port {self.port} is already in use")
        self._process = ManagedProcess("anvil", self.argv(), self.log_path, ready=self._answers, start_timeout=20)
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
        """One raw JSON-RPC call (for Anvil's own methods: anvil_mine, evm_snapshot, …)."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
        try:
            response = httpx.post(self.rpc_url, json=body, timeout=10)
        except httpx.HTTPError as err:
            raise ChainUnreachable(self.rpc_url, str(err)) from err
        data = response.json()
        if "error" in data:
            raise ChainUnreachable(self.rpc_url, f"{method}: {json.dumps(data['error'])}")
        return data.get("result")

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` empty blocks at once."""
        if blocks > 0:
            self.rpc("anvil_mine", [hex(blocks)])

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def snapshot(self) -> str:
        """Snapshot the chain state; `revert(id)` returns to it (an id is single-use)."""
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if not self.rpc("evm_revert", [snapshot_id]):
            raise ChainUnreachable(self.rpc_url, f"evm_revert({snapshot_id}) was refused")

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", [enabled])

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("anvil_setBalance", [address, hex(wei)])

    def start_clock(self, seconds: float) -> None:
        """Interval mining: one block every `seconds` (whole seconds; Anvil's RPC takes an integer)."""
        self.rpc("evm_setIntervalMining", [max(1, round(seconds))])

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
