"""What crosses the store's boundary: typed records in (a scored window, its ratings) and typed rows out. The
scores and rejections go in as the domain's own ContributionScore and Rejection; stored scores come out under
the same field names (s_i, b_i, binary_avg), so no caller renames anything to fit a column."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from base.report import ContributionScore, Rejection, WindowReport

# Transaction kinds whose confirmation the store records together with the fact they settle.
TX_PUBLISH = "publish"
TX_SUBMIT_WEIGHTS = "submit_weights"
# `before` of the readers when nothing is withheld (SQLite integers are 64-bit).
SEALED_NONE = 2**63 - 1

WindowStatus = Literal["pending", "scored", "published"]
ContributionStatus = Literal["scored", "rejected"]


@dataclass(frozen=True)
class RatingRecord:
    """A trainer's rating after a window: OpenSkill (mu, sigma), the indicator's moving average, and its
    missed windows within the reliability horizon. Recorded with the window it follows."""

    trainer: str
    mu: float
    sigma: float
    binary_avg: float
    misses: int = 0


@dataclass(frozen=True)
class WindowRecord:
    """A scored window, written in one transaction. `report_json` is the report exactly as it is sealed
    (WindowReport.to_json()); `notes` are key/value entries (JSON text) written in the same transaction."""

    window: int
    report_json: str
    scores: Sequence[ContributionScore]
    rejections: Sequence[Rejection]
    ratings: Sequence[RatingRecord]
    global_loss: float
    notes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, report: WindowReport, ratings: Sequence[RatingRecord], global_loss: float,
           notes: Mapping[str, str] | None = None) -> WindowRecord:
        return cls(report.window, report.to_json(), report.scores, report.rejections, ratings, global_loss,
                   dict(notes or {}))


@dataclass(frozen=True)
class PendingTx:
    kind: str
    key: str
    tx_hash: str
    nonce: int
    status: str  # "sent" | "confirmed"
    attempts: int


@dataclass(frozen=True)
class Rating:
    """A stored rating: the trainer's latest, and the window it was last updated in."""

    trainer: str
    mu: float
    sigma: float
    binary_avg: float
    misses: int
    last_window: int


@dataclass(frozen=True)
class StoredContribution:
    """One trainer's row of a window: scored (the numbers set, reason None) or rejected (reason set)."""

    window: int
    trainer: str
    cid: str | None
    status: ContributionStatus
    reason: str | None
    detail: str | None
    rank: int | None
    penalty: float | None
    s_i: float | None
    b_i: float | None
    binary_avg: float | None
    mu: float | None
    sigma: float | None
    ordinal: float | None
    sync: float | None
    final: float | None
    weight: float | None


@dataclass(frozen=True)
class StoredWindow:
    window: int
    status: WindowStatus
    global_loss: float | None
    model_cid: str | None
    report_cid: str | None
    publish_tx_hash: str | None
    report_json: str | None  # the report as sealed; None while pending
    contributions: tuple[StoredContribution, ...]

    def report(self) -> WindowReport | None:
        return None if self.report_json is None else WindowReport.from_json(self.report_json)


@dataclass(frozen=True)
class StoredRejection:
    window: int
    trainer: str
    cid: str | None
    reason: str
    detail: str | None


@dataclass(frozen=True)
class Reward:
    epoch: int
    amount_wei: int


@dataclass(frozen=True)
class LeaderboardRow:
    """A rated trainer as of the windows before a bound: its rating then, its latest ordinal and its totals."""

    trainer: str
    mu: float
    sigma: float
    binary_avg: float
    ordinal: float
    misses: int
    last_window: int
    windows_scored: int
    windows_rejected: int
    total_weight: float
    rewards_wei: int


@dataclass(frozen=True)
class StoreCounts:
    """Totals for metrics (contributions count only in windows whose scores are public)."""

    windows_processed: int
    windows_published: int
    contributions_scored: int
    rejections_by_reason: dict[str, int]
