"""A managed Ganache chain (npm `ganache`), the alternative to Anvil: the same dev accounts and, through
`LocalChain`, the same RPC surface for what the project needs (deploy, fund, mine, snapshot, a block clock).

Ganache has no interval mining that can be switched on at run time, so `start_clock` stops its miner (sent
transactions wait in the pool) and a thread mines one block per interval with `evm_mine`, which includes the
pooled transactions. Ganache is archived upstream and slower than Anvil; Anvil stays the default."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from base.errors import ToolMissingError
from base.paths import ganache_cli
from base.process import LOOPBACK
from contracts.errors import ChainUnreachable
from contracts.localchain import DEV_CHAIN_ID, DEV_PRIVATE_KEYS, LocalChain

DEV_MNEMONIC = "test test test test test test test test test test test junk"  # Anvil's: the same ten keys


class GanacheNode(LocalChain):
    """A Ganache process (instamine until `start_clock`). Use as a context manager to always stop it."""

    name = "ganache"
    rpc_timeout = 30.0
    start_timeout = 60.0

    def __init__(self, port: int | None = None, accounts: int = len(DEV_PRIVATE_KEYS), balance_eth: int = 10_000,
                 log_path: Path | None = None) -> None:
        super().__init__(port, accounts, log_path)
        self.balance_eth = balance_eth
        self._clock: threading.Thread | None = None
        self._clock_stop = threading.Event()

    def tool_path(self) -> Path:
        return ganache_cli()

    def argv(self) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise ToolMissingError("node", "Node.js (ganache runs on it)")
        return [
            node, str(ganache_cli()), "--server.host", LOOPBACK, "--server.port", str(self.port),
            "--chain.chainId", str(DEV_CHAIN_ID), "--chain.hardfork", "shanghai",
            "--wallet.mnemonic", DEV_MNEMONIC, "--wallet.totalAccounts", str(self.accounts),
            "--wallet.defaultBalance", str(self.balance_eth), "--logging.quiet",
        ]

    def stop(self) -> None:
        self._clock_stop.set()
        if self._clock is not None:
            self._clock.join(timeout=5)
            self._clock = None
        super().stop()

    def mine(self, blocks: int = 1) -> None:
        if blocks > 0:
            self.rpc("evm_mine", [{"blocks": blocks}])

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
