"""The validator's persisted state: one SQLite file (WAL) that lets a killed validator restart exactly where it
stopped. Every write that spans several rows is one transaction, so a SIGKILL leaves either the whole window
(report, every contribution, every rating) or none of it. Pending transactions are recorded *before* they are
sent, so a restart sees a tx that may be in flight and waits for it instead of sending it twice.

Trainer addresses are stored lower-case (the canonical key); reports keep whatever spelling the loop wrote."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import TrainmarketError

SCHEMA_VERSION = 1

# Transaction kinds whose confirmation the store records together with the fact they settle.
TX_PUBLISH = "publish"
TX_SUBMIT_WEIGHTS = "submit_weights"

# Score numbers stored as columns. "b" (this window's indicator) and "B" (its moving average) differ only in
# case, which SQLite column names ignore, hence the column names b_indicator / b_average.
# `before` of the readers below when nothing is withheld (SQLite integers are 64-bit).
SEALED_NONE = 2**63 - 1
# Key of the first window whose scores the service still withholds (validator/sealed_reports.py).
PUBLIC_BEFORE_KEY = "reports_public_before"
SCORE_FIELDS: dict[str, str] = {
    "s": "s",
    "b": "b_indicator",
    "B": "b_average",
    "mu": "mu",
    "sigma": "sigma",
    "ordinal": "ordinal",
    "sync": "sync",
    "final": "final",
    "weight": "weight",
}
# validator.domain.ContributionScore's names for the same numbers, so `dataclasses.asdict(score)` can be
# passed as it is.
SCORE_ALIASES: dict[str, str] = {"s_i": "s", "b_i": "b", "binary_avg": "B"}
RATING_FIELDS: tuple[str, ...] = ("mu", "sigma", "B")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE windows (
    window INTEGER PRIMARY KEY CHECK (window >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'scored', 'published')),
    global_loss REAL,
    report_json TEXT,
    report_cid TEXT,
    model_cid TEXT,
    publish_tx_hash TEXT,
    scored_at REAL,
    published_at REAL
);
CREATE TABLE contributions (
    window INTEGER NOT NULL REFERENCES windows(window),
    trainer TEXT NOT NULL,
    cid TEXT,
    status TEXT NOT NULL CHECK (status IN ('scored', 'rejected')),
    reason TEXT,
    detail TEXT,
    rank INTEGER,
    s REAL, b_indicator REAL, b_average REAL, mu REAL, sigma REAL,
    ordinal REAL, sync REAL, penalty REAL, final REAL, weight REAL,
    PRIMARY KEY (window, trainer),
    CHECK ((status = 'rejected') = (reason IS NOT NULL))
);
CREATE INDEX contributions_by_trainer ON contributions (trainer, window);
CREATE INDEX contributions_by_status ON contributions (status, window);
CREATE TABLE ratings (
    trainer TEXT PRIMARY KEY,
    mu REAL NOT NULL,
    sigma REAL NOT NULL,
    b_average REAL NOT NULL,
    misses INTEGER NOT NULL DEFAULT 0 CHECK (misses >= 0),
    last_window INTEGER NOT NULL
);
CREATE TABLE epochs (
    epoch INTEGER PRIMARY KEY CHECK (epoch >= 0),
    weights_json TEXT NOT NULL,
    submit_tx_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('submitted')),
    submitted_at REAL NOT NULL
);
CREATE TABLE rewards (
    epoch INTEGER NOT NULL,
    trainer TEXT NOT NULL,
    amount_wei TEXT NOT NULL,
    PRIMARY KEY (epoch, trainer)
);
CREATE TABLE pending_txs (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    tx_hash TEXT NOT NULL,
    nonce INTEGER NOT NULL CHECK (nonce >= 0),
    status TEXT NOT NULL CHECK (status IN ('sent', 'confirmed')),
    attempts INTEGER NOT NULL DEFAULT 1,
    sent_at REAL NOT NULL,
    confirmed_at REAL,
    PRIMARY KEY (kind, key)
);
"""


class StoreError(TrainmarketError):
    """The validator's state file refused an operation."""


class StoreWriteError(StoreError):
    """SQLite refused a write (a constraint, a full disk); the whole transaction was rolled back."""

    def __init__(self, path: Path, cause: sqlite3.Error) -> None:
        self.path, self.cause = path, cause
        super().__init__(f"{path}: write rolled back: {cause}")


class SchemaVersionError(StoreError):
    def __init__(self, path: Path, found: int, supported: int) -> None:
        self.path, self.found, self.supported = path, found, supported
        super().__init__(
            f"{path} has schema version {found}, this validator understands up to {supported}: "
            "upgrade trainmarket (the file was written by a newer version)"
        )


class WindowAlreadyRecordedError(StoreError):
    def __init__(self, window: int, status: str) -> None:
        self.window, self.status = window, status
        super().__init__(f"window {window} is already {status}; scoring it again would apply its ratings twice")


class UnknownWindowError(StoreError):
    def __init__(self, window: int) -> None:
        self.window = window
        super().__init__(f"window {window} has not been recorded")


class InvalidRecordError(StoreError):
    """A row handed to the store is missing a field or carries a non-finite number."""

    def __init__(self, what: str, problem: str) -> None:
        self.what, self.problem = what, problem
        super().__init__(f"{what}: {problem}")


class TxStateError(StoreError):
    def __init__(self, kind: str, key: str, problem: str) -> None:
        self.kind, self.key = kind, key
        super().__init__(f"tx {kind}/{key}: {problem}")


@dataclass(frozen=True)
class PendingTx:
    kind: str
    key: str
    tx_hash: str
    nonce: int
    status: str  # "sent" | "confirmed"
    attempts: int


def _finite(what: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRecordError(what, f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidRecordError(what, f"{name} is not finite ({value})")
    return float(value)


def _text(what: str, row: Mapping[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = row.get(name)
    if optional and (value is None or value == ""):
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRecordError(what, f"{name} must be a non-empty string")
    return value


def _score_values(window: int, given: Mapping[str, Any]) -> tuple[str, str | None, list[float], float]:
    row = {SCORE_ALIASES.get(name, name): value for name, value in given.items()}
    trainer = _text(f"window {window} score", row, "trainer")
    assert trainer is not None
    what = f"window {window} score of {trainer}"
    missing = [name for name in SCORE_FIELDS if name not in row]
    if missing:
        raise InvalidRecordError(what, f"missing {', '.join(missing)}")
    numbers = [_finite(what, name, row[name]) for name in SCORE_FIELDS]
    penalty = _finite(what, "penalty", row.get("penalty", 1.0))
    return trainer.lower(), _text(what, row, "cid", optional=True), numbers, penalty


def _ranks(scores: Sequence[tuple[str, float]]) -> dict[str, int]:
    """Competition ranks by s, best first; ties share a rank, broken by nothing (their order is arbitrary)."""
    ordered = sorted(scores, key=lambda item: -item[1])
    ranks: dict[str, int] = {}
    for position, (trainer, s) in enumerate(ordered, start=1):
        previous = ordered[position - 2] if position > 1 else None
        ranks[trainer] = ranks[previous[0]] if previous and previous[1] == s else position
    return ranks


class ValidatorStore:
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
        self._migrate()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ValidatorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def _migrate(self) -> None:
        with self._transaction() as conn:
            has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            if not has_meta:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                return
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            found = int(row["value"]) if row else 0
            if found > SCHEMA_VERSION or found < 1:
                raise SchemaVersionError(self.path, found, SCHEMA_VERSION)

    def schema_version(self) -> int:
        return int(self._query("SELECT value FROM meta WHERE key='schema_version'")[0]["value"])

    # -- key/value -------------------------------------------------------------------------------------------

    def set_value(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def get_value(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE key=?", (key,))
        return str(rows[0]["value"]) if rows else None

    # -- windows ---------------------------------------------------------------------------------------------

    def public_before(self) -> int:
        """The first window whose scores are still sealed: the service serves only the windows before it."""
        return int(self.get_value(PUBLIC_BEFORE_KEY) or 0)

    def make_public_before(self, window: int) -> None:
        """Windows before `window` may be served from now on (never moves back)."""
        if window > self.public_before():
            self.set_value(PUBLIC_BEFORE_KEY, str(window))

    def begin_window(self, window: int) -> None:
        """Mark a window as being worked on (status pending); a no-op if it is already known."""
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO windows (window, status) VALUES (?, 'pending')", (window,))

    def window_status(self, window: int) -> str | None:
        rows = self._query("SELECT status FROM windows WHERE window=?", (window,))
        return str(rows[0]["status"]) if rows else None

    def record_window(
        self,
        window: int,
        report_json: str,
        scores: Sequence[Mapping[str, Any]],
        rejections: Sequence[Mapping[str, Any]],
        ratings: Mapping[str, Mapping[str, Any]],
        global_loss: float,
    ) -> None:
        """Store a scored window in one transaction: its report, every score and rejection, the new ratings.

        scores: {trainer, cid, s, b, B, mu, sigma, ordinal, sync, final, weight[, penalty, rank]} per
        contribution (or `asdict(ContributionScore)`: s_i, b_i, binary_avg are accepted for s, b, B).
        rejections: {trainer, reason[, cid, detail]} (or `asdict(Rejection)`).
        ratings: trainer -> {mu, sigma, B[, misses, last_window]}."""
        if window < 0:
            raise InvalidRecordError(f"window {window}", "window must be >= 0")
        loss = _finite(f"window {window}", "global_loss", global_loss)
        try:
            json.loads(report_json)
        except json.JSONDecodeError as err:
            raise InvalidRecordError(f"window {window}", f"report is not JSON ({err})") from err
        # Validate everything before the transaction opens; the transaction still guards the writes.
        score_rows = [_score_values(window, row) for row in scores]
        given_ranks = {t: row.get("rank") for (t, *_), row in zip(score_rows, scores, strict=True)}
        ranks = _ranks([(trainer, numbers[0]) for trainer, _, numbers, _ in score_rows])
        rejection_rows = []
        for row in rejections:
            trainer = _text(f"window {window} rejection", row, "trainer")
            what = f"window {window} rejection of {trainer}"
            reason = _text(what, row, "reason")
            rejection_rows.append((
                str(trainer).lower(), _text(what, row, "cid", optional=True), str(reason),
                _text(what, row, "detail", optional=True),
            ))
        rating_rows = []
        for trainer, rating in ratings.items():
            what = f"window {window} rating of {trainer}"
            missing = [name for name in RATING_FIELDS if name not in rating]
            if missing:
                raise InvalidRecordError(what, f"missing {', '.join(missing)}")
            numbers = [_finite(what, name, rating[name]) for name in RATING_FIELDS]
            misses = int(rating.get("misses", 0))
            last_window = int(rating.get("last_window", window))
            rating_rows.append((trainer.lower(), *numbers, misses, last_window))

        with self._transaction() as conn:
            existing = conn.execute("SELECT status FROM windows WHERE window=?", (window,)).fetchone()
            if existing and existing["status"] != "pending":
                raise WindowAlreadyRecordedError(window, str(existing["status"]))
            conn.execute(
                "INSERT OR REPLACE INTO windows (window, status, global_loss, report_json, scored_at) "
                "VALUES (?, 'scored', ?, ?, ?)",
                (window, loss, report_json, time.time()),
            )
            columns = ", ".join(SCORE_FIELDS.values())
            for trainer, cid, numbers, penalty in score_rows:
                given = given_ranks[trainer]
                rank = int(given) if given is not None else ranks[trainer]
                conn.execute(
                    f"INSERT INTO contributions (window, trainer, cid, status, rank, penalty, {columns}) "
                    f"VALUES (?, ?, ?, 'scored', ?, ?, {', '.join('?' * len(numbers))})",
                    (window, trainer, cid, rank, penalty, *numbers),
                )
            conn.executemany(
                "INSERT INTO contributions (window, trainer, cid, status, reason, detail) "
                "VALUES (?, ?, ?, 'rejected', ?, ?)",
                [(window, *row) for row in rejection_rows],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO ratings (trainer, mu, sigma, b_average, misses, last_window) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rating_rows,
            )
            conn.execute("INSERT OR REPLACE INTO kv VALUES ('processed_through_window', ?)", (str(window),))

    def mark_published(self, window: int, model_cid: str, report_cid: str, tx_hash: str) -> None:
        """The window's model and report CIDs are on chain; confirms the pending publish tx in the same step."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE windows SET status='published', model_cid=?, report_cid=?, publish_tx_hash=?, "
                "published_at=? WHERE window=? AND status IN ('scored', 'published')",
                (model_cid, report_cid, tx_hash, time.time(), window),
            )
            if cursor.rowcount == 0:
                raise UnknownWindowError(window)
            self._confirm(conn, TX_PUBLISH, str(window), required=False)

    def last_processed_window(self) -> int | None:
        """The highest window that is scored (or published); None on a fresh store."""
        rows = self._query("SELECT MAX(window) AS w FROM windows WHERE status IN ('scored', 'published')")
        value = rows[0]["w"]
        return None if value is None else int(value)

    def unpublished_windows(self) -> list[int]:
        """Scored windows whose publish step has not been confirmed (a restart finishes these first)."""
        rows = self._query("SELECT window FROM windows WHERE status='scored' ORDER BY window")
        return [int(row["window"]) for row in rows]

    # -- pending transactions --------------------------------------------------------------------------------

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
            self._confirm(conn, kind, key, required=True)

    @staticmethod
    def _confirm(conn: sqlite3.Connection, kind: str, key: str, *, required: bool) -> None:
        cursor = conn.execute(
            "UPDATE pending_txs SET status='confirmed', confirmed_at=? WHERE kind=? AND key=?",
            (time.time(), kind, key),
        )
        if required and cursor.rowcount == 0:
            raise TxStateError(kind, key, "was never recorded as sent")

    def pending_tx(self, kind: str, key: str) -> PendingTx | None:
        rows = self._query(
            "SELECT kind, key, tx_hash, nonce, status, attempts FROM pending_txs WHERE kind=? AND key=?",
            (kind, key),
        )
        return PendingTx(**dict(rows[0])) if rows else None

    def unconfirmed_txs(self) -> list[PendingTx]:
        rows = self._query(
            "SELECT kind, key, tx_hash, nonce, status, attempts FROM pending_txs WHERE status='sent' "
            "ORDER BY nonce"
        )
        return [PendingTx(**dict(row)) for row in rows]

    # -- epochs and rewards ----------------------------------------------------------------------------------

    def record_epoch_submission(self, epoch: int, weights: Mapping[str, float], tx_hash: str) -> None:
        """The epoch's weight vector is on chain; confirms the pending submit_weights tx in the same step."""
        clean = {t.lower(): _finite(f"epoch {epoch} weights", t, w) for t, w in weights.items()}
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM epochs WHERE epoch=?", (epoch,)).fetchone():
                raise StoreError(f"epoch {epoch} weights were already submitted")
            conn.execute(
                "INSERT INTO epochs VALUES (?, ?, ?, 'submitted', ?)",
                (epoch, json.dumps(clean, sort_keys=True), tx_hash, time.time()),
            )
            self._confirm(conn, TX_SUBMIT_WEIGHTS, str(epoch), required=False)

    def epoch_submitted(self, epoch: int) -> bool:
        return bool(self._query("SELECT 1 FROM epochs WHERE epoch=?", (epoch,)))

    def epoch_weights(self, epoch: int) -> dict[str, float] | None:
        rows = self._query("SELECT weights_json FROM epochs WHERE epoch=?", (epoch,))
        return dict(json.loads(rows[0]["weights_json"])) if rows else None

    def record_rewards(self, epoch: int, rewards: Mapping[str, int]) -> None:
        """Rewards credited on chain for an epoch (read from settlement events), in wei."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO rewards VALUES (?, ?, ?)",
                [(epoch, trainer.lower(), str(int(amount))) for trainer, amount in rewards.items()],
            )

    # -- readers ---------------------------------------------------------------------------------------------

    def ratings(self) -> dict[str, dict[str, Any]]:
        rows = self._query("SELECT * FROM ratings ORDER BY trainer")
        return {
            str(row["trainer"]): {
                "mu": row["mu"], "sigma": row["sigma"], "B": row["b_average"],
                "misses": row["misses"], "last_window": row["last_window"],
            }
            for row in rows
        }

    def window_report(self, window: int) -> dict[str, Any] | None:
        """The stored window: status, CIDs, loss, the report (parsed) and every contribution row."""
        rows = self._query("SELECT * FROM windows WHERE window=?", (window,))
        if not rows:
            return None
        row = rows[0]
        contributions = self._query(
            "SELECT * FROM contributions WHERE window=? ORDER BY rank IS NULL, rank, trainer", (window,)
        )
        return {
            "window": row["window"], "status": row["status"], "global_loss": row["global_loss"],
            "model_cid": row["model_cid"], "report_cid": row["report_cid"],
            "publish_tx_hash": row["publish_tx_hash"],
            "report": json.loads(row["report_json"]) if row["report_json"] else None,
            "contributions": [_contribution(c) for c in contributions],
        }

    def trainer_history(self, address: str, before: int = SEALED_NONE) -> list[dict[str, Any]]:
        """The trainer's contributions in windows before `before`."""
        rows = self._query("SELECT * FROM contributions WHERE trainer=? AND window<? ORDER BY window",
                           (address.lower(), before))
        return [_contribution(row) for row in rows]

    def trainer_rewards(self, address: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT epoch, amount_wei FROM rewards WHERE trainer=? ORDER BY epoch", (address.lower(),)
        )
        return [{"epoch": row["epoch"], "amount_wei": int(row["amount_wei"])} for row in rows]

    def leaderboard(self, before: int = SEALED_NONE) -> list[dict[str, Any]]:
        """Every rated trainer, best latest ordinal first, with totals over the windows it was scored in; with
        `before`, as of the windows before it (ratings from the trainer's last scored window among them)."""
        latest = ("(SELECT c.{0} FROM contributions c WHERE c.trainer = r.trainer AND c.status = 'scored' "
                  "AND c.window < :before ORDER BY c.window DESC LIMIT 1)")
        # A trainer never scored anywhere: its rating holds no score (only misses), so it can be shown as is.
        unscored = ("(CASE WHEN NOT EXISTS (SELECT 1 FROM contributions c WHERE c.trainer = r.trainer "
                    "AND c.status = 'scored') THEN r.{0} END)")

        def rated(column: str, rating: str) -> str:
            return f"r.{rating}" if before == SEALED_NONE else \
                f"COALESCE({latest.format(column)}, {unscored.format(rating)})"

        rows = self._query(
            f"""
            SELECT r.trainer, r.misses,
                   {rated("mu", "mu")} AS mu,
                   {rated("sigma", "sigma")} AS sigma,
                   {rated("b_average", "b_average")} AS b_average,
                   {rated("window", "last_window")} AS last_window,
                   {latest.format("ordinal")} AS ordinal,
                   (SELECT COUNT(*) FROM contributions c
                    WHERE c.trainer = r.trainer AND c.status = 'scored' AND c.window < :before) AS windows_scored,
                   (SELECT COUNT(*) FROM contributions c
                    WHERE c.trainer = r.trainer AND c.status = 'rejected' AND c.window < :before)
                       AS windows_rejected,
                   (SELECT COALESCE(SUM(c.weight), 0) FROM contributions c
                    WHERE c.trainer = r.trainer AND c.window < :before) AS total_weight
            FROM ratings r
            """,
            {"before": before},
        )
        rows = [row for row in rows if row["mu"] is not None]  # rated only in windows still sealed
        # Summed in Python: wei amounts overflow SQLite's 64-bit integers.
        rewards: dict[str, int] = {}
        for reward in self._query("SELECT trainer, amount_wei FROM rewards"):
            trainer = str(reward["trainer"])
            rewards[trainer] = rewards.get(trainer, 0) + int(reward["amount_wei"])
        board = [
            {
                "trainer": row["trainer"], "mu": row["mu"], "sigma": row["sigma"], "B": row["b_average"],
                # OpenSkill's ordinal is mu - 3 sigma; used until the trainer has a scored window.
                "ordinal": row["ordinal"] if row["ordinal"] is not None else row["mu"] - 3 * row["sigma"],
                "misses": row["misses"], "last_window": row["last_window"],
                "windows_scored": row["windows_scored"], "windows_rejected": row["windows_rejected"],
                "total_weight": row["total_weight"], "rewards_wei": rewards.get(str(row["trainer"]), 0),
            }
            for row in rows
        ]
        board.sort(key=lambda entry: (-entry["ordinal"], entry["trainer"]))
        return board

    def loss_history(self) -> list[tuple[int, float]]:
        rows = self._query("SELECT window, global_loss FROM windows WHERE global_loss IS NOT NULL ORDER BY window")
        return [(int(row["window"]), float(row["global_loss"])) for row in rows]

    def rejections(self, limit: int = 100, before: int = SEALED_NONE) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT window, trainer, cid, reason, detail FROM contributions WHERE status='rejected' AND window<? "
            "ORDER BY window DESC, trainer LIMIT ?",
            (before, max(0, limit)),
        )
        return [dict(row) for row in rows]

    def counts(self) -> dict[str, Any]:
        """Totals for metrics: windows processed, contributions scored, rejections by reason. Contributions count
        only in windows whose scores are public (`public_before`): per-window counts of a sealed window would tell
        who was rejected before the validator's ballot is sealed."""
        windows = self._query("SELECT COUNT(*) AS n FROM windows WHERE status IN ('scored', 'published')")
        published = self._query("SELECT COUNT(*) AS n FROM windows WHERE status='published'")
        public = self.public_before()
        scored = self._query("SELECT COUNT(*) AS n FROM contributions WHERE status='scored' AND window < ?", (public,))
        by_reason = self._query(
            "SELECT reason, COUNT(*) AS n FROM contributions WHERE status='rejected' AND window < ? GROUP BY reason",
            (public,),
        )
        return {
            "windows_processed": int(windows[0]["n"]),
            "windows_published": int(published[0]["n"]),
            "contributions_scored": int(scored[0]["n"]),
            "rejections_by_reason": {str(row["reason"]): int(row["n"]) for row in by_reason},
        }


def _contribution(row: sqlite3.Row) -> dict[str, Any]:
    view: dict[str, Any] = {
        "window": row["window"], "trainer": row["trainer"], "cid": row["cid"], "status": row["status"],
        "reason": row["reason"], "detail": row["detail"], "rank": row["rank"], "penalty": row["penalty"],
    }
    view.update({name: row[column] for name, column in SCORE_FIELDS.items()})
    return view
