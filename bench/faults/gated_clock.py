"""The fault network's block clock: one block every `block_seconds`, except that the last block which can still
hold a party's due transaction waits (up to `max_hold_s`) until that transaction is on chain or in the mempool:
  - a window's last commit block and last reveal block, for every live trainer;
  - the block after the first in which a window can be published, for every live validator, so that trainers
    (which wait for the canonical model of the window before theirs until their own measured training time
    leaves no more room) train from it rather than from an older one because the machine is loaded;
  - a window's last block of on-time publication (its canonical model's deadline), for every live validator;
  - while an epoch is being settled, each block in which a live validator that has not committed (in the commit
    phase) or revealed (once reveals are open) its weights still can, and it waits on no transaction.
So a loaded machine or a process that is restarting does not turn into a missed window, a stale update, a
window without a canonical model or a lost ballot by wall-clock accident: those are then facts about the
software, which is what the fault scenarios measure. Parties in the network's `down` set (kept down or stopped
on purpose) are not waited for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from eth_utils import keccak

from base.errors import TrainmarketError
from contracts.client import TrainingRunClient
from contracts.types import CommitStatus, Settlement
from trainmarket.demo.network import Participant

if TYPE_CHECKING:
    from bench.faults.killnet import KillNet

LONG_HOLD_S = 20.0  # a hold this long is logged (logs/gated-clock.log) with the parties it waits for
CALLS = ("commit", "reveal", "publishWindow", "commitWeights", "revealWeights", "finalizeEpoch")


class GatedClock:
    def __init__(self, net: KillNet) -> None:
        self.net = net
        abi = net.views.contract.abi
        self._selectors = {_selector(abi, name): name for name in CALLS}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._mine_loop, name="gated-clock", daemon=True)
        self.holds = 0  # blocks the gate held back
        self.hold_timeouts = 0  # holds that ran out (a party never sent in time)
        self.error: BaseException | None = None

    def start(self) -> GatedClock:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _pending_calls(self) -> set[tuple[str, str]]:
        """(sender, contract function) of every transaction waiting in the mempool."""
        pool = self.net.chain.rpc("txpool_content") or {}
        return {(addr.lower(), self._selectors.get(str(tx.get("input", ""))[:10], "?"))
                for addr, txs in (pool.get("pending") or {}).items() for tx in txs.values()}

    def waiting_for(self, block: int) -> list[str]:
        """Live parties whose transaction must be in `block` (its last chance) and is neither mined nor sent."""
        net = self.net
        clock, run = net.clock, net.run
        need: list[tuple[str, str, Callable[[], bool]]] = []
        live = [p for p in net.people if p.name not in net.down]
        validators = [(f"validator-{i}", v) for i, v in enumerate(net.validator_clients)
                      if f"validator-{i}" not in net.down]
        for window in range(net.first, net.last + 1):
            if block == clock.end(window) - 1:
                for p in live:
                    need.append((p.name, "commit", partial(self._sent_commit, p, window)))
            if block == clock.reveal_end(window) - 1:
                for p in live:
                    need.append((p.name, "reveal", partial(self._settled_reveal, p, window)))
        pending = self._pending_calls()
        if any(call == "finalizeEpoch" for _, call in pending):
            # Anyone's finalisation holds up every validator (each settles the oldest epoch before it scores on, and
            # finds the epoch not settled until that tx is mined): never wait behind it.
            return []
        senders = {sender for sender, _ in pending}
        # A validator sends other transactions before its publication (unavailability and missed-reveal reports):
        # any pending tx of it lets the block through.
        for window in range(net.first, net.settle_through + 1):
            if block in (clock.reveal_end(window) + 1, clock.reveal_end(window) + run.publish_blocks - 1):
                for name, v in validators:
                    if v.address_of_account.lower() not in senders:
                        need.append((name, "publishWindow", partial(self._published, v, window)))
        # An epoch's settlement: a validator that has not committed (or, once reveals are open, revealed) its
        # weights and waits on nothing on chain is computing or restarting; the clock waits for it (publishing
        # first needs blocks, so any pending tx of it lets a block through), so a restart is not turned into a
        # ballot lost to the phase deadlines by wall time.
        wpe = net.s.windows_per_epoch
        epoch = net.views.get_run(net.run_id).next_epoch
        if net.first // wpe <= epoch <= net.settle_through // wpe:
            state = net.views.settlement_of(net.run_id, epoch)
            if state.opens_at < block < state.closes_at:  # the head is in the settlement, a tx can still land
                for name, v in validators:
                    if v.address_of_account.lower() not in senders:
                        need.append((name, "(any)", partial(self._voted, v, epoch, state, block)))
        return [name for name, call, done in need if (net.address(name).lower(), call) not in pending and not done()]

    def _voted(self, v: TrainingRunClient, epoch: int, state: Settlement, block: int) -> bool:
        """Nothing of `v`'s ballot for `epoch` is due in `block`: revealed, or committed while reveals are shut."""
        ballot = self.net.views.ballot_of(self.net.run_id, v.address_of_account)
        if ballot.epoch != epoch or ballot.status == CommitStatus.NONE:
            return not state.commits_open(block)
        return ballot.status == CommitStatus.REVEALED or not state.reveals_open(block)

    def _published(self, v: TrainingRunClient, window: int) -> bool:
        me = v.address_of_account.lower()
        return any(a.lower() == me for a in self.net.views.publications(self.net.run_id, window))

    def _commit_status(self, p: Participant, window: int) -> CommitStatus:
        return self.net.views.commitment_of(self.net.run_id, window, p.address)[1]

    def _sent_commit(self, p: Participant, window: int) -> bool:
        return self._commit_status(p, window) != CommitStatus.NONE

    def _settled_reveal(self, p: Participant, window: int) -> bool:
        """Revealed, missed, or never committed: nothing of `p` left to reveal for `window`."""
        return self._commit_status(p, window) != CommitStatus.COMMITTED

    def _mine_loop(self) -> None:
        chain, s = self.net.chain, self.net.s
        try:
            while not self._stop.wait(s.block_seconds):
                block = chain.block_number() + 1
                held_since = time.monotonic()
                logged = False
                while (waiting := self.waiting_for(block)) and not self._stop.is_set():
                    held = time.monotonic() - held_since
                    if held > s.max_hold_s:
                        self.hold_timeouts += 1
                        self._log(f"block {block}: gave up waiting for {waiting} after {held:.0f}s")
                        break
                    if held > LONG_HOLD_S and not logged:
                        logged = True
                        self._log(f"block {block}: held {held:.0f}s for {waiting}; mempool {self._pending_calls()}")
                    self.holds += 1
                    self._stop.wait(0.2)
                chain.mine(1)
        except TrainmarketError as err:  # the chain went away: the network's waits report it
            self.error = err


    def _log(self, line: str) -> None:
        with (self.net.demo.logs / "gated-clock.log").open("a") as out:
            out.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def _selector(abi: Sequence[Any], name: str) -> str:
    """0x-prefixed 4-byte selector of the contract function `name` (as it starts a transaction's input)."""
    item = next(i for i in abi if i.get("type") == "function" and i.get("name") == name)
    signature = f"{name}({','.join(str(arg['type']) for arg in item['inputs'])})"
    return "0x" + keccak(text=signature)[:4].hex()
