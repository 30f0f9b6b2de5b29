"""The validator's side of the one send path (contracts/sending.py): its transactions are journalled in the
store's pending_txs rows, keyed by (kind, key) — publish a window; reveal an epoch's reports; commit, then
reveal, an epoch's weights. The sender records each hash and nonce before the broadcast, so a validator killed
between any two steps finds its transaction on restart instead of sending a second one blind."""

from __future__ import annotations

from contracts.sending import RecordedTx
from validator.store import TX_PUBLISH, TX_SUBMIT_WEIGHTS, ValidatorStore

# Confirmed in the same SQLite transaction as the record they complete (store.mark_published,
# store.record_epoch_submission): a kill between the two cannot leave a confirmed tx whose effect the store lacks
# (a restart finds it unconfirmed, mined, and records it; settlement.record_settled_earlier relies on that).
CONFIRMED_WITH_RECORD = frozenset({TX_PUBLISH, TX_SUBMIT_WEIGHTS})


class StoreTxJournal:
    """contracts.sending.TxJournal over the store's pending_txs rows (looked up on the store at each call)."""

    def __init__(self, store: ValidatorStore) -> None:
        self.store = store

    def recorded(self, kind: str, key: str) -> RecordedTx | None:
        pending = self.store.pending_tx(kind, key)
        return None if pending is None else RecordedTx(pending.tx_hash, pending.status == "confirmed")

    def record_sent(self, kind: str, key: str, tx_hash: str, nonce: int) -> None:
        self.store.record_pending_tx(kind, key, tx_hash, nonce)

    def record_confirmed(self, kind: str, key: str, tx_hash: str) -> None:
        if kind not in CONFIRMED_WITH_RECORD:
            self.store.confirm_tx(kind, key)
