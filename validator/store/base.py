"""The store's connection: one SQLite file in WAL mode behind a lock, explicit transactions, the key/value
table. Every write that spans several rows is one transaction, so a SIGKILL leaves all of it or none."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from validator.store.errors import StoreWriteError
from validator.store.schema import migrate

# Key of the first window whose scores the service still withholds (validator/sealed_reports.py).
PUBLIC_BEFORE_KEY = "reports_public_before"


class StoreBase:
    """Thread-safe (one connection behind a lock) access to the validator's SQLite state."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # isolation_level=None: the store issues BEGIN/COMMIT itself, so a transaction means exactly its block.
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._transaction() as conn:
            migrate(conn, self.path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except sqlite3.Error as err:
                self._conn.execute("ROLLBACK")
                raise StoreWriteError(self.path, err) from err
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[object] | Mapping[str, object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def schema_version(self) -> int:
        return int(self._query("SELECT value FROM meta WHERE key='schema_version'")[0]["value"])

    # -- key/value: small facts of the loop (a window's stats and seconds, an epoch's ballot), as text ----------

    def set_value(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def get_value(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE key=?", (key,))
        return str(rows[0]["value"]) if rows else None

    def public_before(self) -> int:
        """The first window whose scores are still sealed: the service serves only the windows before it."""
        return int(self.get_value(PUBLIC_BEFORE_KEY) or 0)

    def make_public_before(self, window: int) -> None:
        """Windows before `window` may be served from now on (never moves back)."""
        if window > self.public_before():
            self.set_value(PUBLIC_BEFORE_KEY, str(window))
