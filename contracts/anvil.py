"""A managed Anvil chain on a free loopback port. Tests, the devnet command and the demo all use it, so block
timing is always driven the same way (explicit mining, or Anvil's interval mining with `block_time`)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

from base.paths import anvil_binary
from base.process import LOOPBACK
from contracts.localchain import DEV_CHAIN_ID, DEV_PRIVATE_KEYS, LocalChain


class AnvilNode(LocalChain):
    """An Anvil process. `start()` blocks until the RPC answers; use as a context manager to always stop it."""

    name = "anvil"

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
        super().__init__(port, accounts, log_path)
        self.block_time = block_time
        self.state_path = state_path
        self.balance_eth = balance_eth
        self.no_mining = no_mining
        self.gas_limit = gas_limit
        self.extra_args = list(extra_args)
        self.load_state_path: Path | None = None  # set by restart_from_state: loaded at the next start

    def tool_path(self) -> Path:
        return anvil_binary()

    def argv(self) -> list[str]:
        argv = [str(anvil_binary()), "--host", LOOPBACK, "--port", str(self.port), "--accounts", str(self.accounts)]
        argv += ["--balance", str(self.balance_eth), "--chain-id", str(DEV_CHAIN_ID), "--hardfork", "shanghai"]
        if self.block_time is not None:
            argv += ["--block-time", str(self.block_time)]
        if self.no_mining:
            argv.append("--no-mining")
        if self.gas_limit is not None:
            argv += ["--gas-limit", str(self.gas_limit)]
        if self.state_path is not None:
            # --state loads the file when it exists and dumps to it on exit.
            argv += ["--state", str(self.state_path)]
        elif self.load_state_path is not None:
            argv += ["--load-state", str(self.load_state_path)]
        return argv + self.extra_args

    def mine(self, blocks: int = 1) -> None:
        if blocks > 0:
            self.rpc("anvil_mine", [hex(blocks)])

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", [enabled])

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("anvil_setBalance", [address, hex(wei)])

    def start_clock(self, seconds: float) -> None:
        """Interval mining: one block every `seconds` (whole seconds; Anvil's RPC takes an integer)."""
        self.rpc("evm_setIntervalMining", [max(1, round(seconds))])

    def dump_state(self, path: Path) -> Path:
        """Save the whole chain (accounts, storage, blocks, mined transactions; not the mempool) to `path` in
        the JSON format `--load-state` reads. Written to a temporary file and renamed, so a crash mid-write
        leaves the previous dump intact."""
        encoded = str(self.rpc("anvil_dumpState"))  # hex of gzipped JSON
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(gzip.decompress(bytes.fromhex(encoded.removeprefix("0x"))))
        os.replace(tmp, path)
        return path

    def restart_from_state(self, path: Path) -> None:
        """Stop this Anvil (as a crash would) and start a new one on the same port from the dump at `path`:
        clients keep their RPC URL; what was mined after the dump, and the mempool, are gone."""
        self.stop()
        self.load_state_path = path
        self.start()
