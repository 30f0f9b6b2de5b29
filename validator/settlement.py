"""Per-epoch settlement: commit this validator's weight vector, reveal it, finalize the epoch when the contract
allows (anyone may), and record the rewards the contract credited.

Epoch weight vector: `scoring.epoch_weights` of the epoch's window reports this validator processed (each
trainer's share of the epoch's final scores), in the contract's trainer-slot order, rounded to uint16 by
`scoring.to_u16_weights` (largest remainder; the contract renormalises), behind the epoch's payout
(`scoring.epoch_payout`: the fraction of the trainers' reward the evidence supports; the contract pays the
stake-weighted median payout and keeps the rest in the pool).

Commit, then reveal (nobody can copy a vector before committing its own): the contract takes commits in the
epoch's commit phase, from validators that vote on the epoch and published every one of its windows, and
reveals once every vote is committed or the commit phase is over. The epoch's reports, sealed at publication,
are revealed just before the vector (validator/sealed_reports.py): the validator share pays only validators
whose reports are revealed when the epoch is finalised. Crash safety: the vector and a fresh random
salt are stored *before* the commit is sent, so a restarted validator reveals exactly what it committed; each
transaction is sent `once=` keyed by the epoch (contracts/sending.py, journalled by tx_journal.py), so none is
sent twice. The contract settles
epochs strictly in order, so the epoch looked at is always the run's `next_epoch`."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from base.report import WindowReport
from contracts.client import TrainingRunClient, pack_weights
from contracts.errors import ContractReverted, TransactionFailed
from contracts.sending import Once, TxState, receipt_hash, tx_state
from contracts.types import CommitStatus
from validator.scoring import epoch_payout, epoch_weights, to_u16, to_u16_weights
from validator.sealed_reports import ReportRevealer
from validator.store import TX_SUBMIT_WEIGHTS, ValidatorStore
from validator.tx_journal import StoreTxJournal

log = logging.getLogger(__name__)

# The commit's pending-tx kind; the reveal is TX_SUBMIT_WEIGHTS, confirmed with the epoch's recorded submission.
TX_COMMIT_WEIGHTS = "commit_weights"
# The contract's SEAL_EPOCHS: report seals older than this many epochs are overwritten and can no longer be revealed.
SEAL_EPOCHS = 32
# What the contract answers a ballot step that came after its phase: the epoch is settled, or the phase is over.
LATE_FOR_BALLOT = ("EpochOutOfOrder", "CommitPhaseOver", "RevealPhaseOver")


def weight_vector(weights: Mapping[str, float], trainer_order: Sequence[str]) -> list[int]:
    """uint16 weights in the contract's trainer-slot order (addresses compared lower-case)."""
    lowered = {t.lower(): w for t, w in weights.items()}
    return to_u16_weights([lowered.get(t.lower(), 0.0) for t in trainer_order])


def ballot_numbers(reports: Sequence[WindowReport], trainer_order: Sequence[str]
                   ) -> tuple[dict[str, float], list[int], int]:
    """An epoch's ballot from the validator's own reports of it: (weights per trainer, the uint16 vector in
    slot order, the uint16 payout). `validator audit` recomputes the revealed ballot with this."""
    weights = epoch_weights(reports)
    payout = epoch_payout(reports)
    # Weights with a payout that rounds to 0 would settle an epoch in which trainers scored as if nobody had:
    # the smallest positive payout keeps "scored, so paid something" true (1/65535 of the reward at most).
    return weights, weight_vector(weights, trainer_order), max(to_u16(payout), 1 if weights else 0)


@dataclass(frozen=True)
class EpochBallot:
    """What this validator commits to for an epoch, stored before the commit is sent."""

    weights: dict[str, float]  # per trainer address, for the store's records
    vector: list[int]  # uint16 per trainer slot: what is committed and revealed, behind the payout
    salt: bytes
    payout: int  # uint16 of 65535: the fraction of the epoch's trainer reward the vector assigns

    @property
    def packed(self) -> bytes:
        return pack_weights(self.vector, self.payout)

    def to_json(self) -> str:
        return json.dumps({"weights": self.weights, "vector": self.vector, "salt": self.salt.hex(),
                           "payout": self.payout}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EpochBallot:
        data = json.loads(text)
        return cls({str(k): float(v) for k, v in data["weights"].items()}, [int(w) for w in data["vector"]],
                   bytes.fromhex(data["salt"]), int(data["payout"]))


class EpochSettler:
    def __init__(self, client: TrainingRunClient, run_id: int, store: ValidatorStore, txs: StoreTxJournal,
                 start_window: int, report_of: Callable[[int], WindowReport],
                 reports: ReportRevealer | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.store = store
        self.txs = txs
        self.start_window = start_window
        self.report_of = report_of  # a recorded window's report
        self.reports = reports  # None: a settler that reveals no reports (tests of the ballot alone)
        self._explained: set[int] = set()  # epochs whose missing vote was logged
        self._revealed_before = 0  # settled epochs before this one had their reports revealed (or nothing to reveal)

    @property
    def me(self) -> str:
        return self.client.address_of_account

    def settle(self) -> bool:
        """Vote on (commit, then reveal) and finalize the oldest unsettled epoch whose windows are all published.
        True if it acted."""
        run = self.client.get_run(self.run_id)
        epoch = run.next_epoch
        if epoch >= run.end_epoch:
            return False  # the sponsor ended the run and everything before its end is settled
        self.record_settled_earlier(epoch)
        # Settled epochs' weights are all public: their windows' scores can no longer be copied into a ballot.
        self.store.make_public_before(epoch * run.windows_per_epoch)
        self.reveal_settled(epoch, run.windows_per_epoch)
        last = (epoch + 1) * run.windows_per_epoch - 1
        if last < self.start_window:
            return self.finalize(epoch)  # an epoch before this validator joined: settle it, vote on nothing
        if self.store.window_status(last) != "published":
            return False
        acted = False
        if not self.store.epoch_submitted(epoch):
            acted = self.vote(epoch)
        return self.finalize(epoch) or acted

    def reveal_settled(self, next_epoch: int, windows_per_epoch: int) -> None:
        """Reveal the reports of every settled epoch that are not revealed yet (this validator did not vote, or was
        down for one epoch or several), unpaid, so that trainers and auditors can read them. The contract keeps a
        validator's seals of its last SEAL_EPOCHS epochs; each settled epoch is tried once per process (an epoch
        this validator did not publish in full has nothing to reveal)."""
        if self.reports is None:
            return
        first = max(self.start_window // windows_per_epoch, next_epoch - SEAL_EPOCHS, self._revealed_before)
        for epoch in range(first, next_epoch):
            if not self.reports.done(epoch):
                self.reports.reveal(epoch)
            self._revealed_before = epoch + 1

    def record_settled_earlier(self, next_epoch: int) -> None:
        """A validator killed after its reveal was sent finds the epoch settled on restart (next_epoch moved on):
        record the submission and the rewards the chain shows, so its own records lose neither."""
        for tx in self.store.unconfirmed_txs():
            epoch = int(tx.key)
            if tx.kind not in (TX_SUBMIT_WEIGHTS, TX_COMMIT_WEIGHTS) or epoch >= next_epoch:
                continue
            if tx_state(self.client.web3, tx.tx_hash) is not TxState.SUCCEEDED:
                continue  # our tx never landed (the epoch was settled without us): nothing to record
            if tx.kind == TX_COMMIT_WEIGHTS:
                self.store.confirm_tx(TX_COMMIT_WEIGHTS, tx.key)
            elif not self.store.epoch_submitted(epoch):
                self.store.record_epoch_submission(epoch, self.ballot(epoch).weights, tx.tx_hash)
                self.record_rewards(epoch)

    def epoch_reports(self, epoch: int) -> list[WindowReport]:
        """The reports of the epoch's windows this validator scored."""
        per_epoch = self.client.get_run(self.run_id).windows_per_epoch
        windows = range(max(epoch * per_epoch, self.start_window), (epoch + 1) * per_epoch)
        return [self.report_of(w) for w in windows if self.store.window_status(w) in ("scored", "published")]

    def ballot(self, epoch: int) -> EpochBallot:
        """This validator's ballot for `epoch`: the stored one, else a new one (with a fresh salt) stored now."""
        key = f"epoch:{epoch}:ballot"
        stored = self.store.get_value(key)
        if stored is not None:
            return EpochBallot.from_json(stored)
        weights, vector, payout = ballot_numbers(self.epoch_reports(epoch), self.client.trainers(self.run_id))
        ballot = EpochBallot(weights, vector, secrets.token_bytes(32), payout)
        self.store.set_value(key, ballot.to_json())
        return ballot

    def _ballot_status(self, epoch: int) -> CommitStatus:
        on_chain = self.client.ballot_of(self.run_id, self.me)
        return on_chain.status if on_chain.epoch == epoch else CommitStatus.NONE

    def vote(self, epoch: int) -> bool:
        """Commit (in the commit phase) and reveal (once reveals are open) this validator's ballot; True if a
        transaction was sent or found. Nothing is sent for an epoch this validator cannot vote on."""
        next_block = self.client.block_number() + 1
        state = self.client.settlement_of(self.run_id, epoch)
        status = self._ballot_status(epoch)
        acted = False
        pending = self.store.pending_tx(TX_COMMIT_WEIGHTS, str(epoch))
        if (status != CommitStatus.NONE and pending is not None and pending.status != "confirmed"
                and tx_state(self.client.web3, pending.tx_hash) is TxState.SUCCEEDED):  # killed before recording it
            self.store.confirm_tx(TX_COMMIT_WEIGHTS, str(epoch))
        if status == CommitStatus.NONE:
            # Outside the commit phase nothing can be committed (an earlier commit still in flight then fails too).
            if not state.commits_open(next_block) or not self.can_vote(epoch):
                return False
            ballot = self.ballot(epoch)  # stored before the commit is sent
            once = Once(self.txs, TX_COMMIT_WEIGHTS, str(epoch),
                        lambda: self._ballot_status(epoch) != CommitStatus.NONE)
            try:  # the journal confirms the commit once it is mined
                self.client.commit_weights(self.run_id, epoch, ballot.vector, ballot.salt, ballot.payout, once=once)
            except (ContractReverted, TransactionFailed) as err:
                if not self._too_late(epoch, "commit", err):
                    raise
                return False
            log.info("epoch %d weights committed", epoch)
            acted = True
            next_block = self.client.block_number() + 1
            state = self.client.settlement_of(self.run_id, epoch)
            status = self._ballot_status(epoch)
        if status == CommitStatus.REVEALED:
            if self.reports is not None:  # revealed with the weights unless a crash came between the two
                self.reports.reveal(epoch)
            self.store.record_epoch_submission(epoch, self.ballot(epoch).weights, "(submitted earlier)")
            return True
        if status != CommitStatus.COMMITTED or not state.reveals_open(next_block):
            return acted
        if self.reports is not None:
            self.reports.reveal(epoch)  # first: an epoch finalised early pays only validators with reports revealed
        ballot = self.ballot(epoch)
        once = Once(self.txs, TX_SUBMIT_WEIGHTS, str(epoch),
                    lambda: self._ballot_status(epoch) == CommitStatus.REVEALED)
        try:
            receipt = self.client.reveal_weights(self.run_id, epoch, ballot.vector, ballot.salt, ballot.payout,
                                                 once=once)
        except (ContractReverted, TransactionFailed) as err:
            if not self._too_late(epoch, "reveal", err):
                raise
            return acted
        tx_hash = receipt_hash(receipt) if receipt is not None else "(submitted earlier)"
        self.store.record_epoch_submission(epoch, ballot.weights, tx_hash)
        log.info("epoch %d weights revealed: payout %d/65535, %s", epoch, ballot.payout, ballot.vector)
        return True

    def _too_late(self, epoch: int, step: str, err: ContractReverted | TransactionFailed) -> bool:
        """The ballot's `step` ("commit" or "reveal") reached the chain after its phase closed (this validator
        was paused or slow past it, acting on a state it read before): its vote on `epoch` is lost, which costs
        its share of the epoch, and the loop goes on. Any other failure is not ours to swallow."""
        if isinstance(err, ContractReverted):
            late = err.error_name in LATE_FOR_BALLOT
        else:  # passed estimation, reverted when mined: late if the phase is over by now
            next_block = self.client.block_number() + 1
            state = self.client.settlement_of(self.run_id, epoch)
            still_open = state.commits_open(next_block) if step == "commit" else state.reveals_open(next_block)
            late = self.client.get_run(self.run_id).next_epoch != epoch or not still_open
        if late:
            log.warning("epoch %d: weights %s too late (%s); this validator does not vote on it", epoch, step, err)
        return late

    def can_vote(self, epoch: int) -> bool:
        """The contract takes this validator's ballot: it votes on the epoch and published all of its windows."""
        if self.client.voting_stake(self.run_id, self.me, epoch) == 0:
            why = "registered after the epoch began, or left before it"
        elif not self.client.reports_complete(self.run_id, self.me, epoch):
            why = "the contract does not show every window of it published"
        else:
            return True
        if epoch not in self._explained:
            self._explained.add(epoch)
            log.warning("epoch %d: not voting: %s", epoch, why)
        return False

    def finalize(self, epoch: int) -> bool:
        """Anyone may finalize; False while ballots may still arrive."""
        state = self.client.settlement_of(self.run_id, epoch)
        if not state.finalizable(self.client.block_number() + 1):
            return False
        try:
            self.client.finalize_epoch(self.run_id, epoch)
        except ContractReverted as err:
            if err.error_name == "EpochNotFinalizable":
                return False  # retried on a later poll
            if err.error_name != "EpochOutOfOrder":  # finalized by someone else meanwhile
                raise
        except TransactionFailed:
            # Another validator's finalize landed first in the same block: ours passed estimation, then reverted.
            if not self.client.epoch_info(self.run_id, epoch).finalized:
                raise
        self.record_rewards(epoch)
        return True

    def record_rewards(self, epoch: int) -> None:
        info = self.client.epoch_info(self.run_id, epoch)
        if not info.finalized:
            return
        rewards: dict[str, int] = {}
        for index, trainer in enumerate(self.client.trainers(self.run_id)):
            amount = self.client.consensus_weight(self.run_id, epoch, index) * info.reward_per_weight
            if amount:
                rewards[trainer.lower()] = amount
        self.store.record_rewards(epoch, rewards)
