"""`trainmarket node status`: what happened to each of the trainer's windows and why it was paid what it
was — read from the validators' own evaluation reports (report CID on chain → JSON on IPFS, CID-verified)
— how close the trainer is to being slashed, and what is claimable now. One `TrainerStatus` value, which
the CLI prints as text or as JSON."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from base.errors import TrainmarketError
from base.units import eth
from contracts.types import RunInfo, TrainerInfo
from contracts.views import TrainingRunViews
from node.data import BlobStore
from node.journal import WindowEntry

if TYPE_CHECKING:
    from base.report import ContributionScore, WindowReport

REPORT_MAX_BYTES = 16 * 1024 * 1024
BPS = 10_000


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
    why: str = ""  # why the weight is what it is, in words


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
    from base.report import WindowReport  # a shared wire type (base/report.py)

    me = trainer.lower()
    rows: list[WindowVerdict] = []
    for entry in entries:
        base = WindowVerdict(entry.window, journal_state(entry), entry.cid, note=entry.note)
        publications = views.publications(run_id, entry.window)
        if not publications:
            why = ("missed: nothing to score" if entry.missed else
                   "no validator has published this window yet (it is scored after its reveal period)")
            rows.append(replace(base, why=why))
            continue
        for validator, pub in sorted(publications.items()):
            if pub.report_cid is None:
                rows.append(_with(base, validator=validator, note="report sealed",
                                  why="the validator's report is revealed once its epoch's weight commits close "
                                      "(one epoch later)"))
                continue
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
        reason = f"{r.reason.value}: {r.detail}".rstrip(": ")
        return _with(base, validator=validator, rejection=reason, weight=0.0, why=f"rejected ({reason}): weight 0")
    mine = next((s for s in report.scores if s.trainer.lower() == me), None)
    if mine is None:
        return _with(base, validator=validator, note="not in this validator's report",
                     why="not scored: the validator saw no reveal of this window")
    ranked = sorted(report.scores, key=lambda s: -s.s_i)
    rank = 1 + sum(1 for s in ranked if s.s_i > mine.s_i)
    return _with(
        base, validator=validator, score=mine.s_i, rank=rank, of=len(report.scores),
        rating=f"{mine.mu:.2f}±{mine.sigma:.2f} ({mine.ordinal:.2f})", weight=mine.weight,
        why=explain_weight(mine, len(report.scores)),
    )


def explain_weight(s: ContributionScore, scored: int) -> str:
    """Why a scored contribution got its window weight, in the terms of the report's own numbers. With the
    current pay (validator/pay.py, scoring.py): final = aggregated × value factor × effort × maturity × norm
    factor × cluster share × penalty, and an epoch's weight is a trainer's Σ final over everyone's, paid out of
    the epoch's payout (Σ final / Σ potential, the potential being the final at full maturity: what maturity
    holds back stays in the pool). Names the factor that made a zero."""
    factors = (("value factor", s.value_factor), ("effort", s.effort), ("maturity", s.maturity),
               ("norm factor", s.norm_factor), ("share", s.share), ("penalty", s.penalty))
    if s.weight > 0:
        product = " × ".join(f"{name} {value:.3g}" for name, value in factors)
        held = f"; {s.potential:.3g} at full maturity" if s.potential > s.final else ""
        return f"weight {s.weight:.3g} = final/Σfinal over {scored} scored; final {s.final:.3g} = {product}{held}"
    why = {
        "value factor": "what its update added to the applied step, against the typical record",
        "effort": "its proof of training on its own rows (own-row specificity), against the typical record",
        "maturity": "evidence builds up over windows; the first windows of a trainer weigh little",
        "norm factor": "its update's norm against the window's median",
        "share": "a Sybil or copy cluster shares one contribution's pay",
        "penalty": "missed reveals",
    }
    for name, value in factors:
        if value <= 0:
            return f"weight 0: {name} 0 ({why[name]})"
    if s.final <= 0:
        return "weight 0: not aggregated into the window's model (its s_i was below the aggregation bar)"
    return f"weight 0: final {s.final:.3g} rounds to nothing against the window's other contributions"


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


@dataclass(frozen=True)
class Slashing:
    """How close the trainer is to a slash for missed reveals (the contract's counter and threshold)."""

    misses: int  # missed reveals counted since the last slash
    threshold: int  # the count that triggers a slash (and resets the counter)
    slash_bps: int
    slash_wei: int  # what the next slash takes from the current stake
    slashed_times: int

    def sentence(self) -> str:
        left = self.threshold - self.misses
        return (f"missed reveals {self.misses} of {self.threshold}: {left} more and {self.slash_bps / 100:g}% of the "
                f"stake ({eth(self.slash_wei)} ETH) is slashed" + (f"; slashed {self.slashed_times} time(s) so far"
                                                                  if self.slashed_times else ""))


@dataclass(frozen=True)
class TrainerStatus:
    trainer: str
    run_id: int
    block: int
    registered: bool
    stake_wei: int = 0
    unbonding_at: int = 0  # 0: active
    claimable_wei: int = 0
    slashing: Slashing | None = None
    windows: list[WindowVerdict] = field(default_factory=list)
    epochs: list[EpochPayout] = field(default_factory=list)
    next_epoch: int = 0  # epochs before it are finalised

    def summary(self) -> str:
        state = f"unbonding until block {self.unbonding_at}" if self.unbonding_at else "active"
        return f"stake {eth(self.stake_wei)} ETH ({state}), claimable now {eth(self.claimable_wei)} ETH"


def trainer_status(views: TrainingRunViews, blobs: BlobStore | None, run_id: int, trainer: str,
                   entries: list[WindowEntry], last: int) -> TrainerStatus:
    """The trainer's status over its `last` journalled windows and the `last` finalised epochs (`blobs`, to read
    the validators' reports, may be None for an account that is not registered)."""
    info: TrainerInfo = views.trainer_info(run_id, trainer)
    block = views.block_number()
    if not info.registered or blobs is None:
        return TrainerStatus(trainer, run_id, block, registered=info.registered)
    run: RunInfo = views.get_run(run_id)
    slashing = Slashing(info.misses, run.miss_threshold, run.slash_bps, info.stake * run.slash_bps // BPS,
                        info.slash_count)
    epochs = range(max(0, run.next_epoch - last), run.next_epoch)
    return TrainerStatus(
        trainer=trainer, run_id=run_id, block=block, registered=True, stake_wei=info.stake,
        unbonding_at=info.unbonding_at, claimable_wei=views.claimable(run_id, trainer), slashing=slashing,
        windows=window_verdicts(views, blobs, run_id, trainer, entries[-last:]),
        epochs=epoch_payouts(views, run_id, info.index, epochs), next_epoch=run.next_epoch,
    )


def epoch_sentence(p: EpochPayout) -> str:
    if p.reward_wei:
        return f"epoch {p.epoch}: consensus weight {p.consensus_weight}/65535, reward {eth(p.reward_wei)} ETH"
    why = ("the validators' consensus gave this trainer weight 0 (see the windows' reasons above)"
           if p.finalized else "not finalised yet")
    return f"epoch {p.epoch}: consensus weight {p.consensus_weight}/65535, reward 0 ETH: {why}"
