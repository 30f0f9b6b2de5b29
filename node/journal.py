"""The trainer's write-ahead journal: what it committed, where the payload is, what it revealed.

Every step is recorded *before* the action it enables is sent to the chain (salt and payload before the
commit, the commit hash before the commit tx), so a node killed at any point restarts knowing whether a
window was committed and can still reveal it, and never commits the same window twice. SQLite gives the
atomic, durable writes; the payload bytes live beside it as files named by window."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from base.errors import TrainmarketError
from contracts.sending import RecordedTx

SCHEMA_VERSION = 1
# The kinds of transaction the trainer sends through contracts.sending, keyed by window.
TX_COMMIT = "commit"
TX_REVEAL = "reveal"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    window INTEGER PRIMARY KEY,
    base_model_cid TEXT NOT NULL,
    cid TEXT NOT NULL,
    salt_hex TEXT NOT NULL,
    commitment_hex TEXT NOT NULL,
    payload_bytes INTEGER NOT NULL,
    loss REAL,
    commit_tx TEXT,
    committed INTEGER NOT NULL DEFAULT 0,
    reveal_tx TEXT,
    revealed INTEGER NOT NULL DEFAULT 0,
    missed INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT ''
);
"""


class JournalError(TrainmarketError):
    """The journal on disk cannot be used (newer schema, another run, corrupt payload)."""


class AlreadyRunning(JournalError):
    """Another process holds the lock: a second node on the same key (or journal) must not start."""

    def __init__(self, path: Path, what: str, pid: str) -> None:
        self.path = path
        self.pid = pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(
            f"{what} is already running in {holder} (lock {path}): stop it first; two nodes on one key would "
            "race for the same windows and nonces"
        )


class ProcessLock:
    """An exclusive advisory lock (flock) on `path`, held until `release()` or the process dies; the holder's
    pid is written into the file so the refusal can name it. The kernel drops the lock of a killed process,
    so a crash never leaves a stale lock behind."""

    def __init__(self, path: Path, what: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] | None = open(path, "a+")  # noqa: SIM115 — held open for the lock's lifetime
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            pid = self._file.read().strip()
            self._file.close()
            self._file = None
            raise AlreadyRunning(path, what, pid) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.seek(0)
                self._file.truncate()
            self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self) -> ProcessLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class WindowEntry:
    """One window as the trainer recorded it."""

    window: int
    base_model_cid: str
    cid: str
    salt_hex: str
    commitment_hex: str
    payload_bytes: int
    loss: float | None
    commit_tx: str | None
    committed: bool
    reveal_tx: str | None
    revealed: bool
    missed: bool
    note: str


class TrainerJournal:
    """Durable per-window record for one trainer in one run, in `folder` (journal.db + payloads/)."""

    def __init__(self, folder: Path, run_id: int, trainer: str) -> None:
        self.folder = folder
        self.payload_dir = folder / "payloads"
        self.payload_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(folder / "journal.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._check_identity(run_id, trainer.lower())

    def _check_identity(self, run_id: int, trainer: str) -> None:
        expected = {"schema_version": str(SCHEMA_VERSION), "run_id": str(run_id), "trainer": trainer}
        rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not rows:
            with self._db:
                self._db.executemany("INSERT INTO meta VALUES (?, ?)", expected.items())
            return
        for key, value in expected.items():
            if rows.get(key) != value:
                raise JournalError(
                    f"journal in {self.folder} belongs to {key}={rows.get(key)!r}, not {value!r}; "
                    "use another --home or remove it"
                )

    def payload_path(self, window: int) -> Path:
        return self.payload_dir / f"window-{window:08d}.safetensors"

    def prepare(
        self, window: int, base_model_cid: str, cid: str, salt: bytes, commitment: bytes, payload: bytes, loss: float
    ) -> WindowEntry:
        """Persist payload, salt and commitment before the commit is sent. Idempotent for the same window."""
        existing = self.get(window)
        if existing is not None:
            return existing
        path = self.payload_path(window)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(payload)
        tmp.replace(path)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO windows (window, base_model_cid, cid, salt_hex, commitment_hex, payload_bytes, loss)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (window, base_model_cid, cid, salt.hex(), commitment.hex(), len(payload), loss),
            )
        entry = self.get(window)
        assert entry is not None
        return entry

    def mark_commit_sent(self, window: int, tx_hash: str) -> None:
        self._update(window, "commit_tx = ?", (tx_hash,))

    def mark_committed(self, window: int) -> None:
        self._update(window, "committed = 1", ())

    def mark_reveal_sent(self, window: int, tx_hash: str) -> None:
        self._update(window, "reveal_tx = ?", (tx_hash,))

    def mark_revealed(self, window: int) -> None:
        self._update(window, "revealed = 1", ())

    def mark_missed(self, window: int, note: str) -> None:
        self._update(window, "missed = 1, note = ?", (note,))

    def _update(self, window: int, assignment: str, params: tuple[object, ...]) -> None:
        with self._lock, self._db:
            cur = self._db.execute(f"UPDATE windows SET {assignment} WHERE window = ?", (*params, window))
            if cur.rowcount != 1:
                raise JournalError(f"window {window} is not in the journal")

    # -- the send path's journal (contracts.sending.TxJournal): kind TX_COMMIT or TX_REVEAL, key the window --------

    def recorded(self, kind: str, key: str) -> RecordedTx | None:
        entry = self.get(int(key))
        tx_hash = None if entry is None else entry.commit_tx if _kind(kind) == TX_COMMIT else entry.reveal_tx
        # Never `confirmed`: the sender looks the hash up on chain, which is what the runner trusts (it reads its
        # commit record before every step), not the journal's flags.
        return None if tx_hash is None else RecordedTx(tx_hash, confirmed=False)

    def record_sent(self, kind: str, key: str, tx_hash: str, nonce: int) -> None:
        """The hash only: the nonce is inside the signed transaction, which the chain returns while it is pending."""
        if _kind(kind) == TX_COMMIT:
            self.mark_commit_sent(int(key), tx_hash)
        else:
            self.mark_reveal_sent(int(key), tx_hash)

    def record_confirmed(self, kind: str, key: str, tx_hash: str) -> None:
        if _kind(kind) == TX_COMMIT:
            self.mark_committed(int(key))
        else:
            self.mark_revealed(int(key))

    def get(self, window: int) -> WindowEntry | None:
        with self._lock:
            row = self._db.execute(_SELECT + " WHERE window = ?", (window,)).fetchone()
        return _entry(row) if row else None

    def entries(self) -> list[WindowEntry]:
        with self._lock:
            rows = self._db.execute(_SELECT + " ORDER BY window").fetchall()
        return [_entry(r) for r in rows]

    def unrevealed(self) -> list[WindowEntry]:
        """Windows whose commit may be on chain but whose reveal is not confirmed and not given up."""
        return [e for e in self.entries() if not e.revealed and not e.missed]

    def read_payload(self, window: int) -> bytes:
        path = self.payload_path(window)
        try:
            return path.read_bytes()
        except OSError as err:
            raise JournalError(f"payload of window {window} is missing at {path}: {err}") from err

    def close(self) -> None:
        self._db.close()


def _kind(kind: str) -> str:
    if kind not in (TX_COMMIT, TX_REVEAL):
        raise JournalError(f"the trainer's journal records no {kind!r} transactions")
    return kind


_SELECT = (
    "SELECT window, base_model_cid, cid, salt_hex, commitment_hex, payload_bytes, loss, commit_tx, committed,"
    " reveal_tx, revealed, missed, note FROM windows"
)


def _entry(row: tuple[object, ...]) -> WindowEntry:
    (window, base, cid, salt, commitment, size, loss, commit_tx, committed, reveal_tx, revealed, missed, note) = row
    return WindowEntry(
        window=int(window),  # type: ignore[call-overload]
        base_model_cid=str(base),
        cid=str(cid),
        salt_hex=str(salt),
        commitment_hex=str(commitment),
        payload_bytes=int(size),  # type: ignore[call-overload]
        loss=None if loss is None else float(loss),  # type: ignore[arg-type]
        commit_tx=None if commit_tx is None else str(commit_tx),
        committed=bool(committed),
        reveal_tx=None if reveal_tx is None else str(reveal_tx),
        revealed=bool(revealed),
        missed=bool(missed),
        note=str(note),
    )
