"""Optimistic disputes of peers' ballots: a validator is paid only for a ballot that follows from its own published
evaluation.

The contract holds each validator's credit for an epoch until the next epoch is settled (`heldCredit`). Meanwhile
every validator that voted on the epoch audits each peer's revealed ballot against that peer's own revealed
reports (validator/ballot_audit.py: a report missing, sealed, unreadable or not a report, or a ballot its reports
do not give, is a mismatch) and disputes the ones that fail (`disputeBallot`). Disputers holding more than half of
the epoch's stake, the accused's own included, forfeit the peer's credit for the epoch to the pool.

Cheap checks first, from chain reads alone: a peer whose held credit is 0 (nothing to forfeit) or already forfeited
is skipped; then its reports are fetched and its ballot recomputed (no model, no data: milliseconds per peer). A
verdict is kept in memory, so each peer is audited once per epoch (a restart audits again: reads only, and the
dispute it already sent is found on chain). An outage of this validator's own IPFS daemon postpones the audit, never
its own vote. A report that nobody serves (a timeout) may belong to an honest peer that is slow to pin it, so it
counts as a mismatch only once the next epoch's settlement can open, when the dispute period may close; until then
it is retried once per window's blocks. The loop runs this before its own settlement step, so this validator
disputes before it votes on the next epoch (whose settlement closes the period).

Crash safety: `send_dispute` sends through the one send path (contracts/sending.py), journalled in the store
under (epoch, peer) with the contract's `disputeOf` as the done() check, so a restart never disputes twice."""

from __future__ import annotations

import logging

from contracts.client import TrainingRunClient
from contracts.errors import ContractReverted, TransactionFailed
from contracts.sending import Once, TxJournal
from ipfs.errors import IpfsUnavailable
from validator.ballot_audit import Check, ReportUnfetchable, audit_ballot
from validator.window_inputs import RunContext

log = logging.getLogger(__name__)

TX_DISPUTE = "dispute_ballot"
# The contract's answers that mean the dispute no longer matters: others forfeited the credit first, or the
# epoch's dispute period closed (this validator is no longer one of its disputers).
MOOT = ("CreditForfeited", "NotDisputer", "NothingToDispute")


def dispute_done(client: TrainingRunClient, run_id: int, epoch: int, accused: str) -> bool:
    """Nothing left to send: this validator disputed the ballot, its credit is forfeited, or the period is over."""
    _, disputed = client.dispute_of(run_id, epoch, accused, client.address_of_account)
    held = client.held_credit(run_id, accused)
    return disputed or held.forfeited or held.epoch != epoch or not held.disputable


def send_dispute(client: TrainingRunClient, txs: TxJournal, run_id: int, epoch: int, accused: str) -> bool:
    """Dispute `accused`'s ballot for `epoch`, at most once across crashes; True if the dispute is on chain
    through this validator's transaction (sent now or found from before a restart)."""
    once = Once(txs, TX_DISPUTE, f"{epoch}:{accused.lower()}", lambda: dispute_done(client, run_id, epoch, accused))
    try:
        receipt = client.dispute_ballot(run_id, epoch, accused, once=once)
    except ContractReverted as err:
        if err.error_name not in MOOT:
            raise
        log.info("epoch %d: dispute of %s is moot (%s)", epoch, accused, err.error_name)
        return False
    except TransactionFailed:  # passed estimation, reverted when mined: another disputer's landed first
        if not dispute_done(client, run_id, epoch, accused):
            raise
        return False
    return receipt is not None


class BallotDisputes:
    """Audits the peers' ballots of the epoch whose dispute period is open and disputes those that fail."""

    def __init__(self, ctx: RunContext, client: TrainingRunClient, txs: TxJournal) -> None:
        self.ctx = ctx
        self.client = client
        self.txs = txs
        self._judged: set[tuple[int, str]] = set()  # (epoch, peer): found to follow, disputed, or nothing to take
        self._retry_at: dict[tuple[int, str], int] = {}  # (epoch, peer) → block from which to fetch again
        self._revealers: dict[int, list[str]] = {}  # epoch → its revealers (final once the epoch is settled)

    @property
    def me(self) -> str:
        return self.client.address_of_account.lower()

    def step(self) -> bool:
        """Audit and, where they fail, dispute the peers' ballots of the epoch in dispute; True if a dispute was
        sent. Nothing to do unless this validator voted on an epoch whose dispute period is open."""
        run_id = self.ctx.run_id
        mine = self.client.held_credit(run_id, self.me)
        if not mine.disputable:
            return False
        epoch = mine.epoch
        if epoch not in self._revealers:
            self._revealers = {epoch: [r.validator for r in self.client.revealed_weights(run_id, epoch)]}
        block = self.client.block_number() + 1
        sent = False
        for peer in self._revealers[epoch]:
            key = (epoch, peer.lower())
            if peer.lower() == self.me or key in self._judged or self._retry_at.get(key, 0) > block:
                continue
            held = self.client.held_credit(run_id, peer)
            if held.epoch != epoch or held.amount == 0 or held.forfeited:
                self._judged.add(key)  # nothing to forfeit (no reports revealed, no agreement) or already done
                continue
            failed = self.failures(epoch, peer, block)
            if failed is None:
                continue  # a report nobody serves yet: asked again later
            if failed:
                log.warning("epoch %d: disputing the ballot of %s: %s", epoch, peer,
                            "; ".join(c.line() for c in failed[:3]))
                sent = send_dispute(self.client, self.txs, run_id, epoch, peer) or sent
            self._judged.add(key)
        return sent

    def failures(self, epoch: int, peer: str, block: int) -> list[Check] | None:
        """The failing checks of `peer`'s ballot (empty: it follows from its reports); None to ask again later."""
        try:
            return [c for c in audit_ballot(self.ctx, epoch, peer) if not c.ok]
        except IpfsUnavailable as err:  # our own daemon is down: that must not hold up this validator's own vote
            self._retry_at[(epoch, peer.lower())] = block + 1
            log.warning("epoch %d: cannot audit %s's ballot now (%s)", epoch, peer, err)
            return None
        except ReportUnfetchable as err:
            if block < self.client.settlement_of(self.ctx.run_id, epoch + 1).opens_at:
                run = self.client.get_run(self.ctx.run_id)
                self._retry_at[(epoch, peer.lower())] = block + run.window_blocks
                log.info("epoch %d: a report of %s is not served yet (%s); asking again later", epoch, peer, err)
                return None
            return [Check(f"ballot[epoch {epoch}] reports", str(err), "a readable report", False)]
