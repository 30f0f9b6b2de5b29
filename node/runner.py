"""The trainer's window loop. The chain is the clock: the loop polls the block number and acts on window
boundaries; it never sleeps on wall time as a measure of progress.

Per window w: wait for the global model of window w−1 (the sync phase, below), let the policy make Δ (honest:
H AdamW steps on the assigned batches, from the AdamW moments carried over from the previous window), add
error feedback, encode with the run's codec, compute the payload's CID locally, journal (payload, salt,
commitment) *then* commit; after w closes, `ipfs add` + pin the payload and reveal at once.

The sync phase: window w trains from the model of window w−1, so that an update is applied to the model it
was computed on (no publish lag). That model exists only once w−1's reveals are in and the validators have
scored and published it, early in window w (after w−1's reveal period, which a run keeps short). The node
waits for it until the latest block at which its training can still finish inside the window (its own
training time in blocks, measured); past that it trains from the newest model it has, and the payload names
that base, so the staleness is explicit. Measured idle fractions and the alternatives: base/run_config.py.

Every state change is journalled before the transaction it enables, and the chain's own commit record is
checked before acting, so a node killed at any point restarts without committing a window twice or losing a
reveal whose period is still open."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from base.clock import WindowClock
from base.commitments import commitment_hash
from base.errors import TrainmarketError, is_temporary
from base.model import build_model, model_spec
from base.run_config import RunConfig
from contracts.client import TrainingRunClient
from contracts.errors import ContractReverted, RevertedOnChain, SendConflict
from contracts.sending import Once
from contracts.types import CommitStatus
from node.carry import CarriedState
from node.chain_view import canonical_models, canonical_settled
from node.data import Dataset, assigned_batches
from node.journal import TX_COMMIT, TX_REVEAL, TrainerJournal, WindowEntry
from node.payloads import RunPayloads, payload_cid
from node.policy import TrainingContext, UpdatePolicy

COMMIT_MARGIN_BLOCKS = 2  # blocks kept between the end of training and the window's end, for the commit to land
MAX_OUTAGE_POLLS = 120  # consecutive failed polls, OUTAGE_WAIT_S apart, before run() gives up
OUTAGE_WAIT_S = 1.0
BOUNDARY_ERRORS = frozenset({"WrongWindow", "NotInRevealPeriod"})


class RunnerError(TrainmarketError):
    """The loop cannot go on (a published payload whose CID differs from the committed one, …)."""


class ContentStore(Protocol):
    """The IPFS operations the loop needs (ipfs.client.IpfsClient has them)."""

    def add(self, data: bytes, pin: bool = True) -> str: ...

    def cat(self, cid: str, max_bytes: int) -> bytes: ...


class NodeObserver(Protocol):
    """Progress and per-window outcomes, for a CLI or a test. All methods are optional no-ops in Silent."""

    def training(self, window: int, steps: int) -> None: ...

    def step(self, window: int, step: int, loss: float) -> None: ...

    def committed(self, entry: WindowEntry) -> None: ...

    def revealed(self, entry: WindowEntry) -> None: ...

    def missed(self, entry: WindowEntry) -> None: ...

    def waiting(self, window: int, block: int, now: int, until: str) -> None:
        """Nothing is due: the next action on `window` waits for block `block` (the chain is at `now`); `until`
        says what happens then ("train", "reveal"). Called on every idle poll: an observer de-duplicates."""


class SilentObserver:
    def training(self, window: int, steps: int) -> None:
        pass

    def step(self, window: int, step: int, loss: float) -> None:
        pass

    def committed(self, entry: WindowEntry) -> None:
        pass

    def revealed(self, entry: WindowEntry) -> None:
        pass

    def missed(self, entry: WindowEntry) -> None:
        pass

    def waiting(self, window: int, block: int, now: int, until: str) -> None:
        pass


@dataclass
class NodeSetup:
    """A node connected to its run: chain client (with the node's account), storage, checked config, data."""

    client: TrainingRunClient
    run_id: int
    config: RunConfig
    blobs: ContentStore
    dataset: Dataset
    home: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class TrainerNode:
    """One trainer account's loop over one run. `step()` does the next piece of due work; `run()` polls."""

    def __init__(
        self,
        setup: NodeSetup,
        policy: UpdatePolicy | None = None,
        observer: NodeObserver | None = None,
        poll_seconds: float = 0.2,
    ) -> None:
        self.setup = setup
        self.client = setup.client
        self.run_id = setup.run_id
        self.config = setup.config
        self.trainer = self.client.address_of_account
        self.policy = policy or UpdatePolicy()
        self.observer: NodeObserver = observer or SilentObserver()
        self.poll_seconds = poll_seconds
        self.clock = WindowClock.of(self.client.get_run(self.run_id))
        self.journal = TrainerJournal(setup.home, self.run_id, self.trainer)
        self.model = build_model(self.config)
        self.spec = model_spec(self.model)
        self.payloads = RunPayloads(self.config, self.run_id, self.spec)
        self.carry_path = setup.home / "carried_state.safetensors"
        self.carry = CarriedState.load(self.carry_path, self.config.error_feedback_decay)
        self.initial_cid = self.config.initial_model_cid or self._publish_seeded_model()
        self._base: tuple[str, dict[str, torch.Tensor]] | None = None
        self._skipped: set[int] = set()  # windows the policy chose to send nothing for
        self._train_blocks: list[int] = []  # blocks the last trainings took (for the sync-phase deadline)
        # Set by a process hosting many identities (node/population.py): their trainings queue behind each other,
        # so the deadline must leave room for all of them, not for this identity's own few milliseconds.
        self.training_blocks: int | None = None

    # -- the clock ---------------------------------------------------------------------------------------

    def run(
        self, stop: threading.Event | None = None, windows: int | None = None, until_window: int | None = None
    ) -> int:
        """Work until `windows` windows were trained (or window `until_window` is past) and every reveal
        is settled, or until `stop` is set. Returns the number of windows trained in this call."""
        stop = stop or threading.Event()
        trained = 0
        outage = 0
        while not stop.is_set():
            try:
                next_block = self.client.block_number() + 1
                want_more = (windows is None or trained < windows) and (
                    until_window is None or self.clock.window_of(next_block) <= until_window
                )
                did, new_window = self.step(train=want_more)
            except TrainmarketError as err:
                # Temporary: the client already retried within its bounds; nothing was revealed for a payload not
                # pinned (add comes before reveal), a reveal period that closes meanwhile is journalled as missed,
                # and a tx slow to mine is journalled (the next poll waits for it). A blip (daemon restart, busy
                # chain) should cost a poll, not the run; a long outage ends it.
                if not is_temporary(err):
                    raise
                outage += 1
                if outage > MAX_OUTAGE_POLLS:
                    raise
                stop.wait(OUTAGE_WAIT_S)
                continue
            outage = 0
            trained += int(new_window)
            if not want_more and not self.journal.unrevealed():
                break
            if not did:
                stop.wait(self.poll_seconds)
        return trained

    def step(self, train: bool = True) -> tuple[bool, bool]:
        """(did something, trained a new window). Settles journalled windows first, then trains the current
        window if it is neither in the journal nor committed on chain."""
        next_block = self.client.block_number() + 1
        for pending in self.journal.unrevealed():
            if self.advance(pending, next_block):
                return True, False
        if not train:
            return False, False
        if next_block < self.clock.start_block:
            self.observer.waiting(0, self.clock.start_block, next_block - 1, "train")
            return False, False
        window = self.clock.window_of(next_block)
        if (
            window in self._skipped
            or self.journal.get(window) is not None
            or self._chain_status(window) != CommitStatus.NONE
        ):
            self.observer.waiting(window + 1, self.clock.start(window + 1), next_block - 1, "train")
            return False, False
        if not self.fresh_base_ready(window, next_block):
            return False, False
        began = self.client.block_number()
        entry = self.train_window(window)
        self._train_blocks = [*self._train_blocks[-2:], self.client.block_number() - began]
        if entry is None:
            self._skipped.add(window)
        else:
            self.advance(entry, self.client.block_number() + 1)
        return True, True

    # -- one window --------------------------------------------------------------------------------------

    def fresh_base_ready(self, window: int, next_block: int) -> bool:
        """True when window `window` should train now: the canonical model of window − 1 is settled (a majority
        of the epoch's voting stake published it, or its publication deadline passed), or nobody committed in
        window − 1 (the run's first window, an idle one: its model is the one before, so there is nothing to
        wait for), or the node cannot wait any longer (its measured training time would overrun the window)."""
        if window == 0 or canonical_settled(self.client, self.run_id, window - 1):
            return True
        if not self.client.commits(self.run_id, window - 1):
            return True
        latest_start = self.sync_deadline(window)
        if next_block >= latest_start:
            return True
        self.observer.waiting(window, latest_start, next_block - 1,
                              f"train (sooner once the model of window {window - 1} is settled)")
        return False

    def skipped(self, window: int) -> bool:
        """The policy chose to send nothing for `window` (so it is neither trained again nor journalled)."""
        return window in self._skipped

    def sync_deadline(self, window: int) -> int:
        """The block from which window `window` trains without waiting any longer for the model of window − 1:
        the window's end less the training time in blocks (`training_blocks` when a host of several identities
        sets it for all of them, else the longest of this node's last trainings) and the commit margin."""
        estimate = self.training_blocks
        if estimate is None:
            estimate = max(self._train_blocks, default=self.clock.window_blocks // 2)
        return self.clock.end(window) - estimate - COMMIT_MARGIN_BLOCKS

    def train_window(self, window: int) -> WindowEntry | None:
        """Make, encode and journal window `window`'s update (no transaction). None: the policy sent nothing."""
        published = canonical_models(self.client, self.run_id, window)
        base_cid = self.policy.choose_base(window, published, self.initial_cid)
        self._load_base(base_cid)
        cfg = self.config
        batches = assigned_batches(
            self.setup.dataset, cfg.run_seed, self.trainer, window, cfg.inner_steps * cfg.seqs_per_step, cfg.seq_len
        )
        ctx = TrainingContext(
            window=window, trainer=self.trainer, run_id=self.run_id, config=cfg, model=self.model,
            base_model_cid=base_cid, batches=batches, device=self.setup.device, views=self.client,
            blobs=self.setup.blobs, progress=self._progress(window),
        )
        self.carry.reset_if_behind(window, self.config.max_stale_windows + 1)
        ctx.optimizer_state = self.carry.optimizer
        self.observer.training(window, cfg.inner_steps)
        delta = self.policy.make_delta(ctx)
        if delta is None:
            return None
        acc = self.carry.feedback.accumulate(delta)
        encoded = self.payloads.encode_contribution(acc, self.trainer, window, base_cid)
        data = self.policy.tamper_payload(encoded.data)
        cid = payload_cid(data)
        salt = secrets.token_bytes(32)
        loss = sum(ctx.losses) / len(ctx.losses) if ctx.losses else float("nan")
        commitment = commitment_hash(cid, salt, self.run_id, window, self.trainer)
        entry = self.journal.prepare(window, base_cid, cid, salt, commitment, data, loss)
        # Residual and moments follow the payload the journal holds; a crash right here costs one window's
        # residual and moments (the next window trains from the previous ones), never a double count.
        self.carry.feedback.record(acc, encoded.estimate)
        self.carry.optimizer = ctx.optimizer_state
        self.carry.window = window
        self.carry.save(self.carry_path)
        return entry

    def advance(self, entry: WindowEntry, next_block: int) -> bool:
        """Move one journalled window one step towards revealed (or missed). True if something happened."""
        window = entry.window
        status = self._chain_status(window)
        if next_block >= self.clock.reveal_end(window) and status != CommitStatus.REVEALED:
            self._missed(window, "never committed" if status == CommitStatus.NONE else "reveal period closed")
            return True
        if status == CommitStatus.REVEALED:
            self.journal.mark_revealed(window)
            self.observer.revealed(self._entry(window))
            return True
        if status == CommitStatus.MISSED:
            self._missed(window, "reported missed on chain")
            return True
        if status == CommitStatus.NONE:
            return self._at_boundary(lambda: self._commit(entry, next_block))
        if not entry.committed:
            self.journal.mark_committed(window)
            self.observer.committed(self._entry(window))
        if not self.clock.can_reveal(window, next_block):
            self.observer.waiting(window, self.clock.end(window), next_block - 1, "reveal")
            return False  # committed; the reveal period has not opened yet
        if not self.policy.should_reveal(window):
            self._missed(window, f"policy {self.policy.name} withheld the reveal")
            return True
        return self._at_boundary(lambda: self._reveal(entry))

    def _at_boundary(self, send: Callable[[], bool]) -> bool:
        """Run a commit/reveal; if a block boundary passed between reading the clock and the estimate (interval
        mining), the contract refuses with a window error: let the next poll re-read the clock and decide.
        The same when it passed between the estimate and the mining (the tx reverted on chain), or when the
        user's other transactions kept taking the nonce: a reveal is retried until its period closes."""
        try:
            return send()
        except ContractReverted as err:
            if err.error_name not in BOUNDARY_ERRORS:
                raise
            return False
        except (RevertedOnChain, SendConflict):
            return False

    def _commit(self, entry: WindowEntry, next_block: int) -> bool:
        """Commit (at most once: a commit journalled before a restart is found on chain, or waited for while it is
        in the mempool, before anything is sent; contracts/sending.py)."""
        window = entry.window
        if not self.clock.can_commit(window, next_block):
            if next_block >= self.clock.end(window):  # a commit still in flight can no longer land either
                self._missed(window, "window closed before the commit was sent")
                return True
            return False
        once = Once(self.journal, TX_COMMIT, str(window), lambda: self._chain_status(window) != CommitStatus.NONE)
        self.client.commit(self.run_id, window, bytes.fromhex(entry.commitment_hex), once=once)
        self.journal.mark_committed(window)
        self.observer.committed(self._entry(window))
        return True

    def _reveal(self, entry: WindowEntry) -> bool:
        window = entry.window
        data = self.journal.read_payload(window)
        # `pin=True` pins it in the same request (Kubo and js-ipfs alike): a second `pin/add` was one more daemon
        # request per reveal (js-ipfs CPU 12.5-13.0 ms per reveal with it, 10.3-10.5 ms without: bench.reveals).
        cid = self.setup.blobs.add(data, pin=True)
        if cid != entry.cid:
            raise RunnerError(f"window {window}: IPFS stored the payload as {cid}, the commitment is for {entry.cid}")
        once = Once(self.journal, TX_REVEAL, str(window), lambda: self._chain_status(window) == CommitStatus.REVEALED)
        self.client.reveal(self.run_id, window, cid, bytes.fromhex(entry.salt_hex), once=once)
        self.journal.mark_revealed(window)
        self.observer.revealed(self._entry(window))
        return True

    def _missed(self, window: int, note: str) -> None:
        self.journal.mark_missed(window, note)
        self.observer.missed(self._entry(window))

    def _entry(self, window: int) -> WindowEntry:
        entry = self.journal.get(window)
        assert entry is not None
        return entry

    # -- models ------------------------------------------------------------------------------------------

    def _publish_seeded_model(self) -> str:
        """No initial model in the config: the seeded one, published (byte-identical on every node)."""
        params = {name: p.detach().float().cpu() for name, p in build_model(self.config).named_parameters()}
        return self.setup.blobs.add(self.payloads.encode_initial_model(params), pin=True)

    def _load_base(self, cid: str) -> None:
        """Put the global model `cid` into self.model (fetched once per CID, CID-verified, shape-checked)."""
        if self._base is None or self._base[0] != cid:
            data = self.setup.blobs.cat(cid, self.config.max_model_bytes)
            self._base = (cid, self.payloads.decode_model(data))
        params = self._base[1]
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(params[name].to(p.device, p.dtype))

    def _progress(self, window: int) -> Callable[[int, float], None]:
        return lambda step, loss: self.observer.step(window, step, loss)

    # -- chain -------------------------------------------------------------------------------------------

    def _chain_status(self, window: int) -> CommitStatus:
        _, status = self.client.commitment_of(self.run_id, window, self.trainer)
        return status

    def close(self) -> None:
        self.journal.close()
