"""Writes of the window loop and the settlement: a scored window in one transaction (report, every score and
rejection, the new ratings, the loop's notes), its publication, an epoch's weights and its rewards. Each
validates its record before its transaction opens; the transaction still guards the writes."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence

from base.report import ContributionScore
from validator.store.base import StoreBase
from validator.store.errors import InvalidRecordError, StoreError, UnknownWindowError, WindowAlreadyRecordedError
from validator.store.records import TX_PUBLISH, TX_SUBMIT_WEIGHTS, WindowRecord
from validator.store.schema import SCORE_COLUMNS
from validator.store.txs import confirm

_SCORE_INSERT = (
    f"INSERT INTO contributions (window, trainer, cid, status, rank, penalty, {', '.join(SCORE_COLUMNS.values())}) "
    f"VALUES (?, ?, ?, 'scored', ?, ?, {', '.join('?' * len(SCORE_COLUMNS))})"
)


def _finite(what: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRecordError(what, f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidRecordError(what, f"{name} is not finite ({value})")
    return float(value)


def _trainer(what: str, trainer: object) -> str:
    if not isinstance(trainer, str) or not trainer:
        raise InvalidRecordError(what, "trainer must be a non-empty string")
    return trainer.lower()  # the canonical key; reports keep whatever spelling the loop wrote


def _score_row(window: int, score: ContributionScore) -> tuple[str, str | None, float, list[float]]:
    trainer = _trainer(f"window {window} score", score.trainer)
    what = f"window {window} score of {trainer}"
    numbers = [_finite(what, name, getattr(score, name)) for name in SCORE_COLUMNS]
    return trainer, score.cid or None, _finite(what, "penalty", score.penalty), numbers


def _ranks(scores: Sequence[tuple[str, float]]) -> dict[str, int]:
    """Competition ranks by s_i, best first; ties share a rank, broken by nothing (their order is arbitrary)."""
    ordered = sorted(scores, key=lambda item: -item[1])
    ranks: dict[str, int] = {}
    for position, (trainer, s) in enumerate(ordered, start=1):
        previous = ordered[position - 2] if position > 1 else None
        ranks[trainer] = ranks[previous[0]] if previous and previous[1] == s else position
    return ranks


class Writes(StoreBase):
    def begin_window(self, window: int) -> str:
        """Mark a window as being worked on (status pending) unless it is known; returns its status now."""
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO windows (window, status) VALUES (?, 'pending')", (window,))
            return str(conn.execute("SELECT status FROM windows WHERE window=?", (window,)).fetchone()["status"])

    def record_window(self, record: WindowRecord) -> None:
        """Store a scored window in one transaction: its report, every score and rejection, the new ratings
        (whose last window is this one) and its notes. A window is scored once: WindowAlreadyRecordedError."""
        window = record.window
        if window < 0:
            raise InvalidRecordError(f"window {window}", "window must be >= 0")
        loss = _finite(f"window {window}", "global_loss", record.global_loss)
        try:
            json.loads(record.report_json)
        except json.JSONDecodeError as err:
            raise InvalidRecordError(f"window {window}", f"report is not JSON ({err})") from err
        scores = [_score_row(window, score) for score in record.scores]
        ranks = _ranks([(trainer, numbers[0]) for trainer, _, _, numbers in scores])
        rejections = []
        for rejection in record.rejections:
            trainer = _trainer(f"window {window} rejection", rejection.trainer)
            rejections.append((window, trainer, rejection.cid or None, str(rejection.reason),
                               rejection.detail or None))
        ratings = []
        for rating in record.ratings:
            what = f"window {window} rating of {rating.trainer}"
            numbers = [_finite(what, name, getattr(rating, name)) for name in ("mu", "sigma", "binary_avg")]
            ratings.append((_trainer(what, rating.trainer), *numbers, int(rating.misses), window))

        with self._transaction() as conn:
            existing = conn.execute("SELECT status FROM windows WHERE window=?", (window,)).fetchone()
            if existing and existing["status"] != "pending":
                raise WindowAlreadyRecordedError(window, str(existing["status"]))
            conn.execute(
                "INSERT OR REPLACE INTO windows (window, status, global_loss, report_json, scored_at) "
                "VALUES (?, 'scored', ?, ?, ?)",
                (window, loss, record.report_json, time.time()),
            )
            for trainer, cid, penalty, numbers in scores:
                conn.execute(_SCORE_INSERT, (window, trainer, cid, ranks[trainer], penalty, *numbers))
            conn.executemany(
                "INSERT INTO contributions (window, trainer, cid, status, reason, detail) "
                "VALUES (?, ?, ?, 'rejected', ?, ?)",
                rejections,
            )
            conn.executemany(
                "INSERT OR REPLACE INTO ratings (trainer, mu, sigma, b_average, misses, last_window) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                ratings,
            )
            conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", sorted(record.notes.items()))
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
            confirm(conn, TX_PUBLISH, str(window), required=False)

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
            confirm(conn, TX_SUBMIT_WEIGHTS, str(epoch), required=False)

    def record_rewards(self, epoch: int, rewards: Mapping[str, int]) -> None:
        """Rewards credited on chain for an epoch (read from settlement events), in wei."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO rewards VALUES (?, ?, ?)",
                [(epoch, trainer.lower(), str(int(amount))) for trainer, amount in rewards.items()],
            )
