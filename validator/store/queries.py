"""Reads of the loop, the settlement and the service, each returning typed rows (validator/store/records.py).
`before` bounds what the service may show: windows at or past it are still sealed."""

from __future__ import annotations

import json
import sqlite3
from typing import cast

from validator.store.base import StoreBase
from validator.store.records import (
    SEALED_NONE,
    ContributionStatus,
    LeaderboardRow,
    Rating,
    Reward,
    StoreCounts,
    StoredContribution,
    StoredRejection,
    StoredWindow,
    WindowStatus,
)
from validator.store.schema import SCORE_COLUMNS

# The leaderboard as of the windows before :before. A trainer's rating then is the one of its latest scored
# window among them; a trainer never scored anywhere holds no score (only misses), so its rating shows as is.
_LATEST = ("(SELECT c.{0} FROM contributions c WHERE c.trainer = r.trainer AND c.status = 'scored' "
           "AND c.window < :before ORDER BY c.window DESC LIMIT 1)")
_UNSCORED = ("(CASE WHEN NOT EXISTS (SELECT 1 FROM contributions c WHERE c.trainer = r.trainer "
             "AND c.status = 'scored') THEN r.{0} END)")


def _rated(column: str, rating: str, sealed: bool) -> str:
    return f"COALESCE({_LATEST.format(column)}, {_UNSCORED.format(rating)})" if sealed else f"r.{rating}"


# The status casts below hold because the schema's CHECK constraints admit no other value.


class Queries(StoreBase):
    def window_status(self, window: int) -> str | None:
        rows = self._query("SELECT status FROM windows WHERE window=?", (window,))
        return str(rows[0]["status"]) if rows else None

    def last_processed_window(self) -> int | None:
        """The highest window that is scored (or published); None on a fresh store."""
        rows = self._query("SELECT MAX(window) AS w FROM windows WHERE status IN ('scored', 'published')")
        value = rows[0]["w"]
        return None if value is None else int(value)

    def unpublished_windows(self) -> list[int]:
        """Scored windows whose publish step has not been confirmed (a restart finishes these first)."""
        rows = self._query("SELECT window FROM windows WHERE status='scored' ORDER BY window")
        return [int(row["window"]) for row in rows]

    def window_report(self, window: int) -> StoredWindow | None:
        """The stored window: status, CIDs, loss, the report as sealed and every contribution row."""
        rows = self._query("SELECT * FROM windows WHERE window=?", (window,))
        if not rows:
            return None
        row = rows[0]
        contributions = self._query(
            "SELECT * FROM contributions WHERE window=? ORDER BY rank IS NULL, rank, trainer", (window,)
        )
        return StoredWindow(
            window=int(row["window"]), status=cast(WindowStatus, row["status"]), global_loss=row["global_loss"],
            model_cid=row["model_cid"], report_cid=row["report_cid"], publish_tx_hash=row["publish_tx_hash"],
            report_json=row["report_json"], contributions=tuple(_contribution(c) for c in contributions),
        )

    def epoch_submitted(self, epoch: int) -> bool:
        return bool(self._query("SELECT 1 FROM epochs WHERE epoch=?", (epoch,)))

    def epoch_weights(self, epoch: int) -> dict[str, float] | None:
        rows = self._query("SELECT weights_json FROM epochs WHERE epoch=?", (epoch,))
        return {str(t): float(w) for t, w in json.loads(rows[0]["weights_json"]).items()} if rows else None

    def ratings(self) -> dict[str, Rating]:
        rows = self._query("SELECT * FROM ratings ORDER BY trainer")
        return {str(row["trainer"]): Rating(str(row["trainer"]), row["mu"], row["sigma"], row["b_average"],
                                            int(row["misses"]), int(row["last_window"])) for row in rows}

    def trainer_history(self, address: str, before: int = SEALED_NONE) -> list[StoredContribution]:
        """The trainer's contributions in windows before `before`."""
        rows = self._query("SELECT * FROM contributions WHERE trainer=? AND window<? ORDER BY window",
                           (address.lower(), before))
        return [_contribution(row) for row in rows]

    def trainer_rewards(self, address: str) -> list[Reward]:
        rows = self._query(
            "SELECT epoch, amount_wei FROM rewards WHERE trainer=? ORDER BY epoch", (address.lower(),)
        )
        return [Reward(int(row["epoch"]), int(row["amount_wei"])) for row in rows]

    def leaderboard(self, before: int = SEALED_NONE) -> list[LeaderboardRow]:
        """Every rated trainer, best latest ordinal first, with totals over the windows it was scored in; with
        `before`, as of the windows before it (ratings from the trainer's last scored window among them)."""
        sealed = before != SEALED_NONE
        rows = self._query(
            f"""
            SELECT r.trainer, r.misses,
                   {_rated("mu", "mu", sealed)} AS mu,
                   {_rated("sigma", "sigma", sealed)} AS sigma,
                   {_rated("b_average", "b_average", sealed)} AS b_average,
                   {_rated("window", "last_window", sealed)} AS last_window,
                   {_LATEST.format("ordinal")} AS ordinal,
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
        # Summed in Python: wei amounts overflow SQLite's 64-bit integers.
        rewards: dict[str, int] = {}
        for reward in self._query("SELECT trainer, amount_wei FROM rewards"):
            trainer = str(reward["trainer"])
            rewards[trainer] = rewards.get(trainer, 0) + int(reward["amount_wei"])
        board = [
            LeaderboardRow(
                trainer=str(row["trainer"]), mu=row["mu"], sigma=row["sigma"], binary_avg=row["b_average"],
                # OpenSkill's ordinal is mu - 3 sigma; used until the trainer has a scored window.
                ordinal=row["ordinal"] if row["ordinal"] is not None else row["mu"] - 3 * row["sigma"],
                misses=int(row["misses"]), last_window=int(row["last_window"]),
                windows_scored=int(row["windows_scored"]), windows_rejected=int(row["windows_rejected"]),
                total_weight=float(row["total_weight"]), rewards_wei=rewards.get(str(row["trainer"]), 0),
            )
            for row in rows
            if row["mu"] is not None  # rated only in windows still sealed
        ]
        board.sort(key=lambda entry: (-entry.ordinal, entry.trainer))
        return board

    def loss_history(self) -> list[tuple[int, float]]:
        rows = self._query("SELECT window, global_loss FROM windows WHERE global_loss IS NOT NULL ORDER BY window")
        return [(int(row["window"]), float(row["global_loss"])) for row in rows]

    def rejections(self, limit: int = 100, before: int = SEALED_NONE) -> list[StoredRejection]:
        rows = self._query(
            "SELECT window, trainer, cid, reason, detail FROM contributions WHERE status='rejected' AND window<? "
            "ORDER BY window DESC, trainer LIMIT ?",
            (before, max(0, limit)),
        )
        return [StoredRejection(int(row["window"]), str(row["trainer"]), row["cid"], str(row["reason"]),
                                row["detail"]) for row in rows]

    def counts(self) -> StoreCounts:
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
        return StoreCounts(
            windows_processed=int(windows[0]["n"]), windows_published=int(published[0]["n"]),
            contributions_scored=int(scored[0]["n"]),
            rejections_by_reason={str(row["reason"]): int(row["n"]) for row in by_reason},
        )


def _contribution(row: sqlite3.Row) -> StoredContribution:
    scores = {name: row[column] for name, column in SCORE_COLUMNS.items()}
    return StoredContribution(
        window=int(row["window"]), trainer=str(row["trainer"]), cid=row["cid"],
        status=cast(ContributionStatus, row["status"]),
        reason=row["reason"], detail=row["detail"], rank=row["rank"], penalty=row["penalty"], **scores,
    )
