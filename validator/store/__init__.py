"""The validator's persisted state: one SQLite file (WAL) that lets a killed validator restart exactly where it
stopped. Every write that spans several rows is one transaction, so a SIGKILL leaves either the whole window
(report, every contribution, every rating) or none of it. Pending transactions are recorded *before* they are
sent, so a restart sees a tx that may be in flight and waits for it instead of sending it twice.

Typed records go in and typed rows come out (records.py); the schema and the only mapping of field names to
columns are in schema.py; writes.py, txs.py and queries.py hold the operations."""

from __future__ import annotations

from validator.store.base import PUBLIC_BEFORE_KEY
from validator.store.errors import (
    InvalidRecordError,
    SchemaVersionError,
    StoreError,
    StoreWriteError,
    TxStateError,
    UnknownWindowError,
    WindowAlreadyRecordedError,
)
from validator.store.queries import Queries
from validator.store.records import (
    SEALED_NONE,
    TX_PUBLISH,
    TX_SUBMIT_WEIGHTS,
    LeaderboardRow,
    PendingTx,
    Rating,
    RatingRecord,
    Reward,
    StoreCounts,
    StoredContribution,
    StoredRejection,
    StoredWindow,
    WindowRecord,
)
from validator.store.schema import SCHEMA_VERSION
from validator.store.txs import PendingTxs
from validator.store.writes import Writes


class ValidatorStore(Writes, PendingTxs, Queries):
    """The validator's state file: the window loop's writes, the transaction journal, and the readers."""

    def __enter__(self) -> ValidatorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "PUBLIC_BEFORE_KEY", "SCHEMA_VERSION", "SEALED_NONE", "TX_PUBLISH", "TX_SUBMIT_WEIGHTS", "InvalidRecordError",
    "LeaderboardRow", "PendingTx", "Rating", "RatingRecord", "Reward", "SchemaVersionError", "StoreCounts",
    "StoreError", "StoreWriteError", "StoredContribution", "StoredRejection", "StoredWindow", "TxStateError",
    "UnknownWindowError", "ValidatorStore", "WindowAlreadyRecordedError", "WindowRecord",
]
