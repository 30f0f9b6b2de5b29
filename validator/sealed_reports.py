"""Sealed evaluation reports: what a validator publishes of a window's report, and when it reveals it.

A window's report determines the epoch's weight vector, so a validator that could read another's reports before
committing its own ballot would be paid for copying. The report therefore stays sealed until the epoch's weight
commits are closed:
- at publication only its CID's commitment goes on chain (`contracts.client.report_commitment`, bound to this
  validator); the CID is computed without adding the bytes to IPFS (`add?only-hash=true`), since a daemon shared
  with other validators (the demo, devnet) would otherwise list it;
- once the contract opens reveals for the epoch (the weight commit phase is over, or every vote is committed),
  the epoch's sealed CIDs (from the store) are revealed (`revealReports`), *before* this validator reveals its
  weights: an epoch finalised early (every ballot revealed) pays only validators whose reports are revealed, and
  this validator's own transactions land in nonce order. The reports are then added and pinned; that needs the
  IPFS daemon, the reveal does not, so an IPFS outage delays the content, never the vote (pinning is retried on
  every later call until it succeeds);
- the service (validator/service.py) serves a window's scores only from then on (`ValidatorStore.public_before`).
Crash safety: the report bytes are in the store before the publication is sent and are re-encoded identically
(the publication's CID is checked against them); the reveal is sent `once=` keyed by the epoch (contracts/sending.py),
so a validator killed between publication and reveal reveals after its restart, once."""

from __future__ import annotations

import logging
from collections.abc import Callable

from contracts.client import TrainingRunClient
from contracts.errors import ContractReverted
from contracts.sending import Once
from ipfs.errors import IpfsError
from validator.domain import ValidatorError
from validator.store import ValidatorStore
from validator.tx_journal import StoreTxJournal
from validator.window_inputs import RunStore

log = logging.getLogger(__name__)

TX_REVEAL_REPORTS = "reveal_reports"
# The contract's answers that mean "not now, not ever": the seal ring moved on (more than 32 epochs late).
GIVEN_UP = ("NoReportCommitments",)


class SealedReportError(ValidatorError):
    """A stored report no longer encodes to the CID this validator sealed for its window."""


def sealed_report_cid(blobs: RunStore, data: bytes) -> str:
    """The CID `data` will have once added, computed without storing it anywhere."""
    return blobs.add(data, pin=False, only_hash=True)


class ReportRevealer:
    """Reveals this validator's report CIDs of an epoch once, when the contract allows it."""

    def __init__(self, client: TrainingRunClient, run_id: int, store: ValidatorStore, txs: StoreTxJournal,
                 blobs: RunStore, report_bytes: Callable[[int], bytes]) -> None:
        self.client = client
        self.run_id = run_id
        self.store = store
        self.txs = txs
        self.blobs = blobs
        self.report_bytes = report_bytes  # a published window's report, byte for byte as its CID was sealed

    def _key(self, epoch: int) -> str:
        return f"epoch:{epoch}:reports"

    def _windows(self, epoch: int) -> range:
        per_epoch = self.client.get_run(self.run_id).windows_per_epoch
        return range(epoch * per_epoch, (epoch + 1) * per_epoch)

    def done(self, epoch: int) -> bool:
        """Nothing more to reveal for `epoch`: revealed, or given up."""
        return self.store.get_value(self._key(epoch)) is not None

    def reveal(self, epoch: int) -> bool:
        """Reveal, then add and pin, the reports of `epoch` if this validator published all of its windows; True
        when they are revealed (now or earlier). The caller makes sure the contract opened the reveal; a reveal that
        comes too early (ReportsSealed) is retried on a later call, and so is pinning that failed."""
        if self.done(epoch):
            revealed = self.store.get_value(self._key(epoch)) == "revealed"
            if revealed:
                self._pin(epoch)
            return revealed
        windows = self._windows(epoch)
        if any(self.store.window_status(w) != "published" for w in windows):
            return False  # not (yet) published in full: the contract holds no complete seal to open
        me = self.client.address_of_account
        cids = [str(self._sealed_cid(w)) for w in windows]
        once = Once(self.txs, TX_REVEAL_REPORTS, str(epoch),
                    lambda: self.client.reports_revealed(self.run_id, me, epoch))
        try:  # the journal confirms the reveal once it is mined
            self.client.reveal_reports(self.run_id, epoch, cids, once=once)
        except ContractReverted as err:
            if err.error_name == "ReportsSealed":
                return False
            if err.error_name not in GIVEN_UP:
                raise
            log.warning("epoch %d: reports can no longer be revealed (%s)", epoch, err)
            self.store.set_value(self._key(epoch), "given up")
            return False
        self.store.set_value(self._key(epoch), "revealed")
        self.store.make_public_before(windows.stop)
        log.info("epoch %d reports revealed: %s", epoch, cids)
        self._pin(epoch)
        return True

    def _sealed_cid(self, window: int) -> str | None:
        stored = self.store.window_report(window)
        return stored.report_cid if stored else None

    def _pin(self, epoch: int) -> None:
        """Add and pin the revealed reports of `epoch` (once; retried on the next call after an IPFS error)."""
        key = f"epoch:{epoch}:reports_pinned"
        if self.store.get_value(key) is not None:
            return
        for window in self._windows(epoch):
            sealed = self._sealed_cid(window)
            try:
                cid = self.blobs.add(self.report_bytes(window))  # the content becomes fetchable as its CID
            except IpfsError as err:
                log.warning("epoch %d: report of window %d revealed but not yet added to IPFS (%s)", epoch, window,
                            err)
                return
            if cid != sealed:
                raise SealedReportError(f"window {window}: report encodes to {cid}, sealed as {sealed}")
        self.store.set_value(key, "pinned")
