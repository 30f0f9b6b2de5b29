"""The validator's transaction journal: a tx is recorded *before* it is broadcast, so a restart sees a tx that
may be in flight and waits for it instead of sending it twice (validator/tx_journal.py lends it to
contracts/sending.py)."""

from __future__ import annotations

import sqlite3
import time

from validator.store.base import StoreBase
from validator.store.errors import TxStateError
from validator.store.records import PendingTx

_COLUMNS = "kind, key, tx_hash, nonce, status, attempts"


def confirm(conn: sqlite3.Connection, kind: str, key: str, *, required: bool) -> None:
    """Mark (kind, key) confirmed inside the caller's transaction (with the fact the tx settles, if any)."""
    cursor = conn.execute(
        "UPDATE pending_txs SET status='confirmed', confirmed_at=? WHERE kind=? AND key=?",
        (time.time(), kind, key),
    )
    if required and cursor.rowcount == 0:
        raise TxStateError(kind, key, "was never recorded as sent")


class PendingTxs(StoreBase):
    def record_pending_tx(self, kind: str, key: str, tx_hash: str, nonce: int) -> None:
        """Call before broadcasting. Re-recording a still-unconfirmed tx (a gas bump) replaces its hash."""
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM pending_txs WHERE kind=? AND key=?", (kind, key)).fetchone()
            if row and row["status"] == "confirmed":
                raise TxStateError(kind, key, "already confirmed; refusing to send it again")
            if row:
                conn.execute(
                    "UPDATE pending_txs SET tx_hash=?, nonce=?, attempts=attempts+1, sent_at=? "
                    "WHERE kind=? AND key=?",
                    (tx_hash, nonce, time.time(), kind, key),
                )
            else:
                conn.execute(
                    "INSERT INTO pending_txs (kind, key, tx_hash, nonce, status, sent_at) "
                    "VALUES (?, ?, ?, ?, 'sent', ?)",
                    (kind, key, tx_hash, nonce, time.time()),
                )

    def confirm_tx(self, kind: str, key: str) -> None:
        with self._transaction() as conn:
            confirm(conn, kind, key, required=True)

    def pending_tx(self, kind: str, key: str) -> PendingTx | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM pending_txs WHERE kind=? AND key=?", (kind, key))
        return _pending(rows[0]) if rows else None

    def unconfirmed_txs(self) -> list[PendingTx]:
        rows = self._query(f"SELECT {_COLUMNS} FROM pending_txs WHERE status='sent' ORDER BY nonce")
        return [_pending(row) for row in rows]


def _pending(row: sqlite3.Row) -> PendingTx:
    return PendingTx(kind=str(row["kind"]), key=str(row["key"]), tx_hash=str(row["tx_hash"]),
                     nonce=int(row["nonce"]), status=str(row["status"]), attempts=int(row["attempts"]))
