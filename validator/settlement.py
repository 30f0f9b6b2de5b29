"""Per-epoch settlement: submit this validator's weight vector once, finalize the epoch when the contract
allows (anyone may), and record the rewards the contract credited.

Epoch weight vector: `scoring.epoch_weights` of the epoch's window reports this validator processed (each
trainer's share of the epoch's final scores), in the contract's trainer-index order, rounded to uint16 by
`scoring.to_u16_weights` (largest remainder; the contract renormalises).
The contract settles epochs strictly in order, so the epoch looked at is always the run's `next_epoch`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from contracts.client import TrainingRunClient, pack_weights
from contracts.errors import ContractReverted, TransactionFailed
from validator.chain_io import TxSender
from validator.domain import WindowReport
from validator.scoring import epoch_weights, to_u16_weights
from validator.store import TX_SUBMIT_WEIGHTS, ValidatorStore

log = logging.getLogger(__name__)


def weight_vector(weights: Mapping[str, float], trainer_order: Sequence[str]) -> list[int]:
    """uint16 weights in the contract's trainer-index order (addresses compared lower-case)."""
    lowered = {t.lower(): w for t, w in weights.items()}
    return to_u16_weights([lowered.get(t.lower(), 0.0) for t in trainer_order])


class EpochSettler:
    def __init__(self, client: TrainingRunClient, run_id: int, store: ValidatorStore, sender: TxSender,
                 start_window: int, report_of: Callable[[int], WindowReport]) -> None:
        self.client = client
        self.run_id = run_id
        self.store = store
        self.sender = sender
        self.start_window = start_window
        self.report_of = report_of  # a recorded window's report

    def settle(self) -> bool:
        """Submit and finalize the oldest unsettled epoch whose windows are all published. True if it acted."""
        run = self.client.get_run(self.run_id)
        epoch = run.next_epoch
        self.record_settled_earlier(epoch)
        last = (epoch + 1) * run.windows_per_epoch - 1
        if last < self.start_window:
            return self.finalize(epoch)  # an epoch before this validator joined: settle it, submit nothing
        if self.store.window_status(last) != "published":
            return False
        if self.client.block_number() < self.client.epoch_end_block(self.run_id, epoch):
            return False
        acted = False
        if not self.store.epoch_submitted(epoch):
            self.submit(epoch)
            acted = True
        return self.finalize(epoch) or acted

    def record_settled_earlier(self, next_epoch: int) -> None:
        """A validator killed after its weights tx was sent finds the epoch settled on restart (next_epoch moved
        on): record the submission and the rewards the chain shows, so its own records lose neither."""
        for tx in self.store.unconfirmed_txs():
            epoch = int(tx.key)
            if tx.kind != TX_SUBMIT_WEIGHTS or epoch >= next_epoch or self.store.epoch_submitted(epoch):
                continue
            if self.sender.mined(tx.tx_hash) is not True:
                continue  # our tx never landed (the epoch was settled without us): nothing to record
            self.store.record_epoch_submission(epoch, self.epoch_weights(epoch), tx.tx_hash)
            self.record_rewards(epoch)

    def epoch_weights(self, epoch: int) -> dict[str, float]:
        per_epoch = self.client.get_run(self.run_id).windows_per_epoch
        windows = range(max(epoch * per_epoch, self.start_window), (epoch + 1) * per_epoch)
        recorded = [self.report_of(w) for w in windows if self.store.window_status(w) in ("scored", "published")]
        return epoch_weights(recorded)

    def submit(self, epoch: int) -> None:
        weights = self.epoch_weights(epoch)
        vector = weight_vector(weights, self.client.trainers(self.run_id))
        call = self.client.contract.functions.submitWeights(self.run_id, epoch, pack_weights(vector))

        def done() -> bool:
            return self.client.validator_info(self.run_id, self.client.address_of_account).next_submit_epoch > epoch

        sent = self.sender.send_once(TX_SUBMIT_WEIGHTS, str(epoch), call, "submitWeights", done)
        self.store.record_epoch_submission(epoch, weights, sent.tx_hash if sent else "(submitted earlier)")
        log.info("epoch %d weights submitted: %s", epoch, vector)

    def finalize(self, epoch: int) -> bool:
        """Anyone may finalize; False while the contract still waits for other validators (or its grace)."""
        if self.client.block_number() < self.client.epoch_end_block(self.run_id, epoch):
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
