"""The per-window evaluation report: every number behind each contribution's score, the rejections and the
aggregate. Validators write it to IPFS; trainers (`node status`), auditors and the dashboard read it, so it is
a shared wire type. Everything in it is plain JSON, so the report's bytes (and so its CID) are a deterministic
function of its content."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from base.errors import TrainmarketError
from base.jsonguard import loads as bounded_json

REPORT_FORMAT_VERSION = 1


class ReportFormatError(TrainmarketError):
    """A window report's JSON does not parse into a `WindowReport` (tampered, truncated, other version)."""


class RejectReason(StrEnum):
    """Why a contribution got no score. Values are stable strings: they land in reports and the API."""

    MISSING_REVEAL = "missing_reveal"
    UNAVAILABLE = "unavailable"  # revealed, but nobody served the payload before the fetch deadline
    MALFORMED = "malformed"
    UNRELIABLE = "unreliable"
    STALE = "stale"
    DUPLICATE_CID = "duplicate_cid"
    COPY_OF_EARLIER = "copy_of_earlier"
    MISSING_OWN_DATA = "missing_own_data"
    NONFINITE_LOSS = "nonfinite_loss"


@dataclass(frozen=True)
class Rejection:
    trainer: str
    window: int
    reason: RejectReason
    detail: str = ""
    cid: str = ""


@dataclass(frozen=True)
class ContributionScore:
    """Every number behind one contribution's weight, in the order they are computed (validator/strategy.py).

    "random" in the older names means the common rows: other trainers' same-window data that the contribution
    does not own (validator/eval_data.py). The pay is `final` = value⁺ × effort × norm_factor × sync × penalty
    (validator/scoring.py `pay_score`); s_i, b_i, binary_avg and the OpenSkill rating are signals recorded
    beside it, no longer factors of it."""

    trainer: str
    cid: str
    loss_before_own: float
    loss_after_own: float
    loss_before_random: float
    loss_after_random: float
    s_i: float  # relative loss reduction on the common rows (decides whether the update is aggregated)
    own_gain: float  # relative loss reduction on the trainer's own data
    random_gain: float
    b_i: int  # +1 when the own-row excess gain `specificity` is positive
    binary_avg: float  # B_i after this window's update
    mu: float
    sigma: float
    ordinal: float
    sync: float
    penalty: float
    final: float
    weight: float
    value: float = 0.0  # marginal value of its new information to the applied aggregate (nats per common row)
    value_full: float = 0.0  # the same for its whole share of the aggregate, public part included
    novelty: float = 0.0  # share of the update's energy outside the span of public directions
    specificity: float = 0.0  # own-row gain in excess of the common rows' (control variate applied), nats/row
    specificity_se: float = 0.0
    value_ratio: float = 0.0  # value / the window's median value of the aggregated updates (clipped)
    effort_ratio: float = 0.0  # specificity / the window's median specificity of the aggregated updates
    value_standing: float = 0.0  # its record of value ratios over windows (validator/scoring.Standing)
    effort_standing: float = 0.0  # its evidence-weighted record of effort ratios
    value_factor: float = 0.0  # value_standing against the typical record, folded at 1
    effort: float = 0.0  # min(1, effort_standing / the typical record) ** effort_power
    maturity: float = 0.0  # evidence in its effort record / (evidence + prior)
    norm_factor: float = 1.0  # min(1, median norm / own norm)
    share: float = 1.0  # its share of its Sybil cluster's contribution (1 outside clusters)
    clip_scale: float = 1.0  # the factor its update was clipped by (to the median norm)
    potential: float = 0.0  # `final` at full maturity: the epoch's payout is Σ final / Σ potential


@dataclass(frozen=True)
class AggregateInfo:
    method: str
    contributors: tuple[str, ...]
    clip_norm: float
    update_norm: float
    learning_rate: float
    delta_norms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ValuationInfo:
    """Window-level numbers of the marginal-value and pay stages (validator/marginal.py, validator/pay.py)."""

    measured_gain: float = 0.0  # L(θ) − L(θ − step) on the common rows, mean per row
    attributed_gain: float = 0.0  # Σ of the contributions' attributed values on the same rows (≈ measured)
    value_ref: float = 0.0  # median value of the aggregated contributions (the window's value yardstick)
    specificity_ref: float = 0.0  # median specificity of the aggregated contributions (effort's yardstick)
    evidence: float = 0.0  # weight of this window's effort ratios: (median specificity t-statistic)²
    typical_value: float = 0.0  # shorth centre of the aggregated trainers' value records
    typical_effort: float = 0.0  # shorth centre of their effort records
    median_norm: float = 0.0  # median update norm of the evaluated contributions
    public_vectors: int = 0  # public directions the new-information residual is taken against
    total_final: float = 0.0  # Σ final: weights are final / total_final


@dataclass(frozen=True)
class WindowReportInputs:
    """What the scores are a function of; an auditor starts from these."""

    cids: dict[str, str]  # trainer -> revealed CID
    block_hash: str  # closing block hash, seeds the common random batch
    base_model_cid: str
    eval_step_size: float
    strategy: dict[str, Any]  # the pipeline's configuration, so a changed threshold is visible
    stale_bases: dict[str, str] = field(default_factory=dict)  # trainer → the older base its payload names
    common_rows: dict[str, int] = field(default_factory=dict)  # owner → common evaluation rows from its data


@dataclass(frozen=True)
class WindowReport:
    window: int
    inputs: WindowReportInputs
    scores: tuple[ContributionScore, ...]
    rejections: tuple[Rejection, ...]
    accepted: tuple[str, ...]  # trainers whose Δ went into the aggregate
    aggregate: AggregateInfo
    model_cid: str | None = None  # filled in once the new global model is on IPFS
    version: int = REPORT_FORMAT_VERSION
    valuation: ValuationInfo = field(default_factory=ValuationInfo)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, no NaN (a NaN would not round-trip)."""
        try:
            return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), allow_nan=False)
        except ValueError as err:
            raise ReportFormatError(f"window {self.window} report holds a non-finite number: {err}") from err

    @classmethod
    def from_json(cls, text: str | bytes) -> WindowReport:
        try:
            raw = bounded_json(text)
            if raw.get("version") != REPORT_FORMAT_VERSION:
                raise ReportFormatError(f"report version {raw.get('version')!r} is not {REPORT_FORMAT_VERSION}")
            return cls(
                window=int(raw["window"]),
                inputs=_build(WindowReportInputs, raw["inputs"]),
                scores=tuple(_build(ContributionScore, s) for s in raw["scores"]),
                rejections=tuple(
                    Rejection(
                        trainer=r["trainer"],
                        window=int(r["window"]),
                        reason=RejectReason(r["reason"]),
                        detail=r["detail"],
                        cid=r["cid"],
                    )
                    for r in raw["rejections"]
                ),
                accepted=tuple(raw["accepted"]),
                aggregate=_build(AggregateInfo, {**raw["aggregate"], "contributors": tuple(
                    raw["aggregate"]["contributors"])}),
                model_cid=raw["model_cid"],
                version=int(raw["version"]),
                valuation=_build(ValuationInfo, raw.get("valuation", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as err:  # Recursion: [[[[… nesting
            raise ReportFormatError(f"not a window report: {err}") from err

    def score_of(self, trainer: str) -> ContributionScore | None:
        return next((s for s in self.scores if s.trainer == trainer), None)


def _build(cls: type[Any], raw: dict[str, Any]) -> Any:
    """Construct a flat dataclass from a dict, refusing unknown or missing keys (a tampered report)."""
    names = {f.name for f in fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ReportFormatError(f"unknown fields in {cls.__name__}: {sorted(unknown)}")
    obj = cls(**raw)
    for f in fields(cls):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ReportFormatError(f"{cls.__name__}.{f.name} is not finite")
    return obj
