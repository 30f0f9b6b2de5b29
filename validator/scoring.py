"""Pure scoring formulas (DESIGN.md, "Scoring"). No tensors, no I/O: floats in, floats out.

Pay (issue 13). Each scored contribution gets a `final` score in units of one typical honest contribution; an
epoch pays each trainer its share of the epoch's summed finals (`epoch_weights`), out of the fraction of the
epoch's reward that the finals' evidence supports (`epoch_payout`; the rest stays in the pool). validator/pay.py
applies:

    final = counted × value_factor × effort × maturity × norm_factor × share × penalty          (`pay_score`)

* counted: the update entered the aggregate (a Sybil cluster enters through one member). Nothing else is paid.
* value_factor: what the trainer's updates are worth to the aggregate the run applies. Per window, the marginal
  value of its *new information* (validator/marginal.py: its integrated-gradient share of the applied step's
  loss reduction on common rows it does not own, counting only the part of its update outside the span of public
  directions, so replays of published steps or payloads are worth 0) over the median of the aggregated ones:
  the value ratio. Its record (`Standing`, decayed over ~1/(1 − decay) windows) against the typical record
  (the `weighted_median` of the aggregated trainers' records, each counted by its effort) is folded at 1
  (`value_factor`) and squared: less than typical is paid less than in proportion (value grows faster than
  compute), and more than typical is paid less too. Value above the typical contribution comes from more than
  one unit of work (merged identities, extra epochs) or from measurement luck; paying it at the typical rate
  would let a strategy that is always at the cap out-earn honest trainers whose measured value scatters around
  it, and paying it more would let merging pay. Folded, the typical honest contribution is the best response.
* effort: proof of work on one's own data. Per window, the contribution's specificity (own-row gain beyond the
  common rows', validator/marginal.py) over the median of the aggregated ones: the effort ratio. Its record is
  weighted window by window by the evidence of that window's test (the squared median t-statistic: early in
  training it is ~1 and the ratios are noise, later 3–4), and enters as min(1, record / typical)^2
  (`effort_factor`). Specificity adds up over the parts of a split update and grows with the share of one's
  assignment trained on; marginal value grows faster than compute (H/2 steps are worth ~0.55 of an honest update,
  a single step ~0.5), so squaring the effort is what keeps partial work and split identities below their share.
* maturity: evidence in the effort record / (evidence + prior): a newcomer, or anyone during the first windows,
  whose specificity test says nothing yet, is paid little. It makes a fresh identity per window worthless. The
  epoch's payout (`epoch_payout`) keeps what maturity withholds in the pool, so that an epoch in which everyone
  is immature does not hand its whole reward to whoever its noisy first windows favour.
* norm_factor = min(1, median norm / ‖Δ‖): updates are scored and applied clipped to the median norm, and a
  larger one is paid less in proportion, so scaling an update up buys nothing.
* share: a Sybil cluster's members together earn 1/|cluster| of one contribution, split by specificity
  (validator/pay.cluster_shares); 1 outside clusters. penalty: reliability (recent missed reveals).

The loss before/after, s_i, the OpenSkill rating, the own-vs-common indicator b_i and its moving average stay in
every report as signals; none is a factor of pay (a squared OpenSkill ordinal × a ±1 moving average paid five
identical honest trainers in a 4,600:1 ratio in the demo, issue 13).

Identity games. Splitting one trainer's work over n identities: value is additive over the parts and
specificity too, so n parts with effort ratios summing to 1 earn Σ ρ_j² ≤ 1 of the effort (and each part also
needs maturity); spreading the training over the n assignments does not help, since each identity's own rows
then get 1/n of it. Merging n trainers' work into one identity: one update per identity per window, with more
value than typical (folded down), the specificity of one assignment at most, and a larger norm (paid in
inverse proportion). Near-identical updates: one cluster, 1/|cluster| of one contribution.
bench.incentives measures each of these against honest trainers; tests/validator/test_pay.py checks them.

The invariants that close Templar's known exploits live here:
  * every factor of the final score is clamped at 0 before multiplying, so two negatives (a newcomer's
    negative ordinal × a negative moving average) never make a positive score;
  * penalties are multipliers in [0, 1] applied to positive scores only, so a penalised negative score can
    never move towards (or past) zero."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from base.report import WindowReport
from validator.domain import ScoringError

BINARY_DECAY = 0.95
U16_MAX = 65535
RATIO_LOW, RATIO_HIGH = -1.0, 3.0


def relative_gain(loss_before: float, loss_after: float) -> float:
    """(L_before − L_after) / L_before: the fraction of the loss a contribution removes (negative if it hurts)."""
    _require_finite(loss_before=loss_before, loss_after=loss_after)
    if loss_before <= 0.0:
        # A zero loss cannot be improved; any change is no gain rather than a division by zero.
        return 0.0
    return (loss_before - loss_after) / loss_before


def gradient_score(loss_before_random: float, loss_after_random: float) -> float:
    """s_i: relative loss reduction on the common random data."""
    return relative_gain(loss_before_random, loss_after_random)


def aggregation_bar(scores: Sequence[float], floor: float, relative: float) -> float:
    """The s_i an update must exceed to enter the aggregate: `floor`, raised to `relative` × the median of the
    scores above it. The median speaks for the majority of the helpful updates; one that helps far less than
    the typical one adds little and risks much: noise that helps by chance, or a sign-flipped update that helps
    only through its clip at the random initial model (the demo's poisoner in its first window: s 0.011 against
    an honest median of 0.078). Honest spread stays well above the bar (the demo's window 4: honest s 0.031 to
    0.048, median 0.037)."""
    helpful = [s for s in scores if s > floor]
    if not helpful or relative <= 0.0:
        return floor
    return max(floor, relative * statistics.median(helpful))


def update_binary_average(previous: float, indicator: int, decay: float = BINARY_DECAY) -> float:
    """B ← decay·B + (1 − decay)·b."""
    if indicator not in (-1, 1):
        raise ScoringError(f"indicator must be ±1, got {indicator}")
    return decay * previous + (1.0 - decay) * indicator


def apply_penalty(score: float, factor: float) -> float:
    """Shrink a positive score by `factor` ∈ [0, 1]; a non-positive score is returned unchanged (a penalty
    must never improve a negative score, e.g. −5 × 0.5 = −2.5)."""
    _require_finite(score=score, factor=factor)
    if not 0.0 <= factor <= 1.0:
        raise ScoringError(f"penalty factor must be in [0, 1], got {factor}")
    return score * factor if score > 0.0 else score


def power_normalise(scores: Sequence[float], power: float = 2.0) -> list[float]:
    """weights_i = f_i^p / Σ f_j^p over the non-negative scores; negatives count as 0; all zero → all zero."""
    if power <= 0.0 or not math.isfinite(power):
        raise ScoringError(f"power must be a positive finite number, got {power}")
    _require_finite(**{f"score[{i}]": s for i, s in enumerate(scores)})
    powered = [max(0.0, s) ** power for s in scores]
    total = math.fsum(powered)
    if total <= 0.0:
        return [0.0] * len(scores)
    return [p / total for p in powered]


@dataclass(frozen=True)
class Standing:
    """A trainer's record over windows: decayed sums of its per-window value ratios (each window weight 1) and
    of its specificity ratios (each window weighted by how informative that window's specificity test was)."""

    value_sum: float = 0.0
    value_weight: float = 0.0
    effort_sum: float = 0.0
    effort_weight: float = 0.0

    @property
    def value(self) -> float:
        return self.value_sum / self.value_weight if self.value_weight > 0.0 else 0.0

    @property
    def effort(self) -> float:
        return self.effort_sum / self.effort_weight if self.effort_weight > 0.0 else 0.0

    def updated(self, value_ratio: float | None, effort_ratio: float | None, evidence: float, decay: float
                ) -> Standing:
        """One window later. A ratio is None when the window had no yardstick for it (nothing aggregated, or a
        median that is not positive); that half of the record is then left as it was."""
        _require_finite(evidence=evidence, decay=decay)
        if not 0.0 <= decay < 1.0 or evidence < 0.0:
            raise ScoringError(f"decay must be in [0, 1) and evidence >= 0, got {decay}, {evidence}")
        vs, vw, es, ew = self.value_sum, self.value_weight, self.effort_sum, self.effort_weight
        if value_ratio is not None:
            _require_finite(value_ratio=value_ratio)
            vs, vw = decay * vs + value_ratio, decay * vw + 1.0
        if effort_ratio is not None:
            _require_finite(effort_ratio=effort_ratio)
            es, ew = decay * es + evidence * effort_ratio, decay * ew + evidence
        return Standing(vs, vw, es, ew)


def window_ratio(x: float, reference: float, low: float = RATIO_LOW, high: float = RATIO_HIGH) -> float | None:
    """x / reference clipped to [low, high], or None when the reference is not positive. The clip keeps one
    window whose yardstick happened to be tiny from dominating a trainer's record."""
    _require_finite(x=x, reference=reference)
    if reference <= 0.0:
        return None
    return min(high, max(low, x / reference))


def shorth_centre(values: Sequence[float]) -> float:
    """Centre of the shortest interval holding a majority (⌊n/2⌋ + 1) of `values`: where the densest half
    lies. Unlike the median it is not dragged towards a minority that sits on one side (three weak identities
    among five honest ones move the median to the weakest honest trainer); it stands as long as honest
    trainers are the majority (ties: the lowest interval). Fewer than three values: their median."""
    xs = sorted(values)
    _require_finite(**{f"value[{i}]": x for i, x in enumerate(xs)})
    if not xs:
        return 0.0
    if len(xs) < 3:
        return (xs[0] + xs[-1]) / 2.0
    h = len(xs) // 2 + 1
    i = min(range(len(xs) - h + 1), key=lambda j: (xs[j + h - 1] - xs[j], j))
    return (xs[i] + xs[i + h - 1]) / 2.0


def weighted_median(pairs: Sequence[tuple[float, float]]) -> float:
    """The lower weighted median of (value, weight) pairs: the smallest value at which the cumulative weight of
    the values up to it reaches half the total. No positive weight: the plain median; no pairs: 0."""
    ordered = sorted(pairs)
    _require_finite(**{f"{kind}[{i}]": x for i, pair in enumerate(ordered) for kind, x in zip(("value", "weight"),
                                                                                               pair, strict=True)})
    if any(w < 0.0 for _, w in ordered):
        raise ScoringError("weights must be non-negative")
    total = math.fsum(w for _, w in ordered)
    if not ordered:
        return 0.0
    if total <= 0.0:
        values = [v for v, _ in ordered]
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2.0
    cumulative = 0.0
    for value, weight in ordered:
        cumulative += weight
        if cumulative >= total / 2.0:
            return value
    return ordered[-1][0]


def value_factor(standing_value: float, typical: float) -> float:
    """ρ for ρ ≤ 1 and 1/ρ above, with ρ = the trainer's value record over the typical one: 1 for a typical
    contribution, less for a smaller one, and less for a larger one too (see the module docstring). The pay
    stage raises it to `PayConfig.value_power`."""
    _require_finite(standing_value=standing_value, typical=typical)
    if typical <= 0.0 or standing_value <= 0.0:
        return 0.0
    ratio = standing_value / typical
    return min(ratio, 1.0 / ratio)


def effort_factor(standing_effort: float, typical: float, power: float) -> float:
    """min(1, ρ)^power with ρ = the trainer's specificity record over the typical one (convex below 1)."""
    _require_finite(standing_effort=standing_effort, typical=typical, power=power)
    if typical <= 0.0 or standing_effort <= 0.0:
        return 0.0
    return min(1.0, standing_effort / typical) ** power


def maturity(evidence_weight: float, prior: float) -> float:
    """W / (W + prior): how much specificity evidence the trainer's record holds (0 for a newcomer)."""
    _require_finite(evidence_weight=evidence_weight, prior=prior)
    return evidence_weight / (evidence_weight + prior) if evidence_weight + prior > 0.0 else 0.0


def norm_factor(norm: float, median: float) -> float:
    """min(1, median / norm): 1 up to the median norm, inversely proportional above it."""
    _require_finite(norm=norm, median=median)
    return 1.0 if norm <= median or norm <= 0.0 else median / norm


def pay_score(*factors: float, penalty: float = 1.0) -> float:
    """The product of factors that each lie in [0, 1], then the reliability penalty; always in [0, 1]."""
    _require_finite(**{f"factor[{i}]": f for i, f in enumerate(factors)})
    for i, factor in enumerate(factors):
        if not 0.0 <= factor <= 1.0:
            raise ScoringError(f"factor {i} must be in [0, 1], got {factor}")
    return apply_penalty(math.prod(factors), penalty)


def epoch_weights(reports: Sequence[WindowReport]) -> dict[str, float]:
    """An epoch's weight per trainer from its window reports: its `final` scores summed over the windows, over
    the sum of everyone's. A final is in units of one typical honest contribution, so pay accumulates per
    contribution made, whatever the window's loss scale; a window a validator did not record adds nothing.
    Sums to 1 (or is empty when nobody scored); trainers sorted."""
    totals: dict[str, float] = {}
    for report in reports:
        for s in report.scores:
            _require_finite(final=s.final)
            totals[s.trainer] = totals.get(s.trainer, 0.0) + s.final
    total = math.fsum(totals.values())
    return {t: v / total for t, v in sorted(totals.items())} if total > 0.0 else {}


def epoch_payout(reports: Sequence[WindowReport]) -> float:
    """The fraction of an epoch's trainer reward its weights assign: Σ final / Σ potential over the epoch's
    scored contributions, where a `potential` is the same final at full maturity.

    A trainer's pay for the epoch is then reward × its Σ final / everyone's Σ potential. An epoch whose records
    are all thin (the run's first windows, when the specificity tests are noise) pays little, so relative pay
    settled epoch by epoch is about what settling the whole run as one epoch gives (bench.incentives,
    `per_epoch_settlement`). The rest stays in the pool (no epoch pays more than the run's reward per epoch: the
    budget lasts longer, and the sponsor reclaims what is left when it ends the run). A newcomer's immature
    part is kept in the pool rather than handed to the incumbents, so one trainer's pay does not depend on the
    others' maturity. 0 when nobody scored; 1 for reports that predate `potential` (the old rule)."""
    return payout_fraction(math.fsum(s.final for r in reports for s in r.scores),
                           math.fsum(s.potential for r in reports for s in r.scores))


def payout_fraction(finals: float, potentials: float) -> float:
    """Σ final / Σ potential, capped at 1 (see `epoch_payout`): 0 when nothing was earned, 1 without potentials."""
    _require_finite(finals=finals, potentials=potentials)
    if finals <= 0.0:
        return 0.0
    return min(1.0, finals / potentials) if potentials > 0.0 else 1.0


def to_u16(fraction: float) -> int:
    """A fraction in [0, 1] as the contract's uint16 (of 65535), rounded to nearest."""
    _require_finite(fraction=fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ScoringError(f"fraction must be in [0, 1], got {fraction}")
    return round(fraction * U16_MAX)


def to_u16_weights(weights: Sequence[float]) -> list[int]:
    """Weights (non-negative, Σ ≤ 1) → the contract's packed uint16 vector, Σ ≤ 65535.

    Largest-remainder rounding: floors first, then the leftover units go to the largest fractional parts
    (ties to the lower index), so a weight vector summing to 1 maps to exactly 65535 and the result is
    deterministic."""
    _require_finite(**{f"weight[{i}]": w for i, w in enumerate(weights)})
    if any(w < 0.0 for w in weights):
        raise ScoringError("weights must be non-negative")
    total = math.fsum(weights)
    if total > 1.0 + 1e-9:
        raise ScoringError(f"weights sum to {total}, more than 1")
    scaled = [w * U16_MAX for w in weights]
    floors = [math.floor(x) for x in scaled]
    budget = min(U16_MAX, round(total * U16_MAX)) - sum(floors)
    by_remainder = sorted(range(len(scaled)), key=lambda i: (-(scaled[i] - floors[i]), i))
    for i in by_remainder[: max(0, budget)]:
        floors[i] += 1
    return floors


def _require_finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ScoringError(f"{name} is not finite: {value}")
