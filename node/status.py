"""`trainmarket node status`: what happened to each of the trainer's windows and why it was paid what it
was — read from the validators' own evaluation reports (report CID on chain → JSON on IPFS, CID-verified)
— plus what is claimable now."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from contracts.views import TrainingRunViews
from node.data import BlobStore
from node.journal import WindowEntry
from trainmarket.errors import TrainmarketError

if TYPE_CHECKING:
    from validator.domain import WindowReport

REPORT_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class WindowVerdict:
    """One validator's verdict on one of the trainer's windows (or the journal's state when none exists)."""

    window: int
    state: str  # journal: revealed / committed / missed / prepared; "-" when not in the journal
    cid: str
    validator: str = ""
    score: float | None = None  # s_i: relative loss reduction on common random data
    rank: int | None = None  # 1 = the best s_i of the window
    of: int = 0  # how many contributions were scored in the window
    rating: str = ""  # OpenSkill mu ± sigma (ordinal)
    weight: float | None = None
    rejection: str = ""
    note: str = ""


def journal_state(entry: WindowEntry) -> str:
    if entry.revealed:
        return "revealed"
    if entry.missed:
        return "missed"
    return "committed" if entry.committed else "prepared"


def window_verdicts(
    views: TrainingRunViews, blobs: BlobStore, run_id: int, trainer: str, entries: Iterable[WindowEntry]
) -> list[WindowVerdict]:
    """Per journalled window, one row per validator report (or one row saying no report exists yet)."""
    from validator.domain import WindowReport  # the report's shape is owned by the validator

    me = trainer.lower()
    rows: list[WindowVerdict] = []
    for entry in entries:
        base = WindowVerdict(entry.window, journal_state(entry), entry.cid, note=entry.note)
        publications = views.publications(run_id, entry.window)
        if not publications:
            rows.append(base)
            continue
        for validator, pub in sorted(publications.items()):
            try:
                report = WindowReport.from_json(blobs.cat(pub.report_cid, REPORT_MAX_BYTES))
            except TrainmarketError as err:
                rows.append(_with(base, validator=validator, note=f"report {pub.report_cid} unreadable: {err}"))
                continue
            rows.append(_verdict(base, validator, report, me))
    return rows


def _verdict(base: WindowVerdict, validator: str, report: WindowReport, me: str) -> WindowVerdict:
    rejected = [r for r in report.rejections if r.trainer.lower() == me]
    if rejected:
        r = rejected[0]
        return _with(base, validator=validator, rejection=f"{r.reason.value}: {r.detail}".rstrip(": "))
    mine = next((s for s in report.scores if s.trainer.lower() == me), None)
    if mine is None:
        return _with(base, validator=validator, note="not in this validator's report")
    ranked = sorted(report.scores, key=lambda s: -s.s_i)
    rank = 1 + sum(1 for s in ranked if s.s_i > mine.s_i)
    return _with(
        base, validator=validator, score=mine.s_i, rank=rank, of=len(report.scores),
        rating=f"{mine.mu:.2f}±{mine.sigma:.2f} ({mine.ordinal:.2f})", weight=mine.weight,
    )


def _with(base: WindowVerdict, **changes: Any) -> WindowVerdict:
    return replace(base, **changes)


@dataclass(frozen=True)
class EpochPayout:
    epoch: int
    finalized: bool
    consensus_weight: int  # uint16, scaled so the epoch's top trainer has 65535
    reward_wei: int  # this trainer's share: consensus weight × reward per weight (0 until finalized)


def epoch_payouts(
    views: TrainingRunViews, run_id: int, trainer_index: int, epochs: Iterable[int]
) -> list[EpochPayout]:
    out = []
    for epoch in epochs:
        info = views.epoch_info(run_id, epoch)
        weight = views.consensus_weight(run_id, epoch, trainer_index) if info.finalized else 0
        out.append(EpochPayout(epoch, info.finalized, weight, weight * info.reward_per_weight))
    return out
