"""The scoring pipeline of one window as a chain of swappable steps (in the spirit of Flower's strategies):
filters → evaluator → rating → aggregator → valuation → pay.

`ScoringStrategy.score_window` is pure: no chain, no IPFS, no database. Everything it depends on comes in
through `WindowInputs` and `ValidatorState`, everything it decides goes out in the `WindowReport`, the new
global parameters and the new state, so the audit can call the very same function on the same inputs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from base.report import ContributionScore, Rejection, RejectReason, WindowReport, WindowReportInputs
from validator.aggregate import Aggregator, MedianNormClipMean, median_clip_scales, support_norm
from validator.domain import Contribution, ParamDict
from validator.evaluate import RowLosses, evaluate_rows
from validator.filters import (
    Filter,
    FilterConfig,
    FilterContext,
    default_filters,
    fingerprint,
    run_filters,
)
from validator.pay import PayConfig, pay_window
from validator.rating import PlackettLuceRater, RatingModel
from validator.scoring import (
    BINARY_DECAY,
    aggregation_bar,
    gradient_score,
    power_normalise,
    relative_gain,
    update_binary_average,
)
from validator.state import ValidatorState
from validator.valuation import Valuation, value_window

__all__ = ["ScoringStrategy", "StrategyConfig", "ValidatorState", "WindowInputs"]

# evaluate_rows' signature: (model, deltas, own batches, common batch, step size, device, base=…).
Evaluate = Callable[..., list[RowLosses]]
Valuate = Callable[..., Valuation]  # value_window's signature


@dataclass(frozen=True)
class StrategyConfig:
    eval_step_size: float = 1.0  # η in θ − η·Δ when measuring a contribution
    binary_decay: float = BINARY_DECAY
    min_gradient_score: float = 0.0  # only updates with s_i above this go into the aggregate
    # ... and above this share of the median helpful s_i (scoring.aggregation_bar): keeps out what helps only by
    # chance (the demo's noise trainer was aggregated in 4 of 6 windows at 0.0, its poisoner in window 1 at 0.25)
    min_relative_gradient_score: float = 0.25
    public_steps: int = 2  # how many earlier aggregate steps count as public directions
    pay: PayConfig = field(default_factory=PayConfig)


@dataclass(frozen=True)
class WindowInputs:
    window: int
    block_hash: str  # the window's closing block hash (it chose the evaluation rows)
    base_model_cid: str
    params: ParamDict  # the global model the window trained from
    contributions: Sequence[Contribution]  # fetched, decoded payloads
    own_batches: Mapping[str, Tensor]  # trainer → its evaluated rows (validator/eval_data.py)
    common_batch: Tensor  # rows of the committed trainers' assignments (validator/eval_data.py)
    common_owners: Sequence[str] = ()  # the trainer each common row belongs to ("" or empty: nobody's)
    prior_rejections: Sequence[Rejection] = ()  # found upstream: missing reveal, undecodable payload
    stale_bases: Mapping[str, int] = field(default_factory=dict)  # older accepted bases → windows behind

    def owners(self) -> tuple[str, ...]:
        return tuple(self.common_owners) if self.common_owners else ("",) * self.common_batch.size(0)


class ScoringStrategy:
    def __init__(
        self,
        model: nn.Module,
        filters: Sequence[Filter] | None = None,
        rater: RatingModel | None = None,
        aggregator: Aggregator | None = None,
        config: StrategyConfig | None = None,
        filter_config: FilterConfig | None = None,
        device: torch.device | str | None = None,
        evaluate: Evaluate | None = None,
        valuate: Valuate | None = None,
    ) -> None:
        self.model = model
        # The hooks that run the per-contribution evaluation and the valuation: a torchrun validator spreads the
        # evaluation over its ranks (validator/distributed.py) and the loop times both (validator/timing.py);
        # results must not change. Unset, the module's own names are called (bench.validator wraps them).
        self.evaluate: Evaluate | None = evaluate
        self.valuate: Valuate | None = valuate
        self.filter_config = filter_config or FilterConfig()
        self.filters = list(filters) if filters is not None else default_filters(self.filter_config)
        self.rater: RatingModel = rater or PlackettLuceRater()
        self.aggregator: Aggregator = aggregator or MedianNormClipMean()
        self.config = config or StrategyConfig()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def describe(self) -> dict[str, Any]:
        """The pipeline's configuration, recorded in every report so a changed threshold is visible."""
        return {
            "filters": [f.name for f in self.filters],
            "filter_config": asdict(self.filter_config),
            "rater": self.rater.name,
            "aggregator": self.aggregator.name,
            "config": asdict(self.config),
        }

    def score_window(self, inputs: WindowInputs, state: ValidatorState
                     ) -> tuple[WindowReport, ParamDict, ValidatorState]:
        w = inputs.window
        shapes = {n: tuple(t.shape) for n, t in inputs.params.items()}
        horizon = self.filter_config.copy_horizon
        ctx = FilterContext(
            window=w, current_model_cid=inputs.base_model_cid, stale_bases=inputs.stale_bases, param_shapes=shapes,
            misses=state.miss_counts(w, self.filter_config.reliability_horizon),
            recent_accepted=[fp for fp in state.recent_accepted if w - horizon <= fp.window < w],
        )
        kept, rejections = run_filters(self.filters, list(inputs.contributions), ctx)
        rejections = list(inputs.prior_rejections) + rejections
        evaluable = [c for c in kept if c.trainer in inputs.own_batches]
        rejections += [Rejection(c.trainer, w, RejectReason.MISSING_OWN_DATA, "no assigned batch", c.cid)
                       for c in kept if c.trainer not in inputs.own_batches]

        # Judged as applied: clipped to the median norm of the set (aggregate.median_clip_scales).
        clip = median_clip_scales(evaluable)
        norms = {c.trainer: support_norm(c) for c in evaluable}
        median_norm = statistics.median(norms.values()) if norms else 0.0
        applied = [c.delta if clip[c.trainer] == 1.0 else {k: v * clip[c.trainer] for k, v in c.delta.items()}
                   for c in evaluable]
        rows = (self.evaluate or evaluate_rows)(
            self.model, applied, [inputs.own_batches[c.trainer] for c in evaluable], inputs.common_batch,
            self.config.eval_step_size, self.device, base=inputs.params)
        owners = inputs.owners()
        scored: list[Contribution] = []
        losses: dict[str, RowLosses] = {}
        for c, r in zip(evaluable, rows, strict=True):
            if all(math.isfinite(x) for x in asdict(r.means()).values()):
                scored.append(c)
                losses[c.trainer] = r
            else:
                rejections.append(Rejection(c.trainer, w, RejectReason.NONFINITE_LOSS, repr(r.means()), c.cid))

        # s_i: the relative gain on the common rows it does not own. It decides aggregation and the rating.
        common = {c.trainer: _not_own(losses[c.trainer], owners, c.trainer) for c in scored}
        s = {t: gradient_score(before, after) for t, (before, after) in common.items()}
        ratings = {**state.ratings, **self.rater.update(state.ratings, s)}
        bar = aggregation_bar(list(s.values()), self.config.min_gradient_score,
                              self.config.min_relative_gradient_score)
        improving = [c for c in scored if s[c.trainer] > bar]
        aggregated = _one_per_cluster(improving, s)
        result = self.aggregator.aggregate(inputs.params, aggregated, state.momentum)

        public = [fp for fp in state.recent_accepted if w - horizon <= fp.window < w] + list(state.recent_steps)
        valued = (self.valuate or value_window)(
            self.model, self.device, w, inputs.params, result.params, inputs.common_batch, owners, inputs.own_batches,
            losses, scored, aggregated, self.aggregator.shares(inputs.params, aggregated), public, median_norm)
        paid = pay_window(scored, aggregated, valued, norms, median_norm, {c.trainer: c.penalty for c in scored},
                          state.standing, self.config.pay)
        binary_avg = dict(state.binary_avg)
        partial: list[dict[str, Any]] = []
        for c in scored:
            t, m, spec = c.trainer, losses[c.trainer].means(), valued.specificity[c.trainer]
            b = 1 if spec.delta > 0.0 else -1  # the own-vs-common indicator, a signal (bench.incentives: FP/FN)
            binary_avg[t] = update_binary_average(binary_avg.get(t, 0.0), b, self.config.binary_decay)
            rating = ratings[t]
            partial.append(dict(
                trainer=t, cid=c.cid, loss_before_own=m.loss_before_own, loss_after_own=m.loss_after_own,
                loss_before_random=common[t][0], loss_after_random=common[t][1], s_i=s[t],
                own_gain=relative_gain(m.loss_before_own, m.loss_after_own), random_gain=s[t], b_i=b,
                binary_avg=binary_avg[t], mu=rating.mu, sigma=rating.sigma, ordinal=rating.ordinal, sync=c.sync,
                penalty=c.penalty, value=valued.value[t], value_full=valued.value_full[t],
                novelty=valued.novelty[t], specificity=spec.delta, specificity_se=spec.se, clip_scale=clip[t],
                **paid.rows[t],
            ))
        finals = [p["final"] for p in partial]
        weights = power_normalise(finals, 1.0)
        scores = tuple(ContributionScore(**p, weight=wt) for p, wt in zip(partial, weights, strict=True))

        new_state = ValidatorState(
            ratings=ratings,
            binary_avg=binary_avg,
            missed_windows=_record_misses(state.missed_windows, inputs.prior_rejections, w,
                                          self.filter_config.reliability_horizon),
            recent_accepted=tuple(fp for fp in state.recent_accepted if fp.window > w - horizon)
            + tuple(fingerprint(c, shapes) for c in improving),
            momentum=result.momentum,
            last_window=w,
            standing=paid.standing,
            recent_steps=(tuple(state.recent_steps) + ((valued.step,) if aggregated else ()))[
                -self.config.public_steps:] if self.config.public_steps > 0 else (),
        )
        cids = {c.trainer: c.cid for c in inputs.contributions}
        cids.update({r.trainer: r.cid for r in inputs.prior_rejections if r.cid})
        counts: dict[str, int] = {}
        for o in owners:
            counts[o] = counts.get(o, 0) + 1
        report = WindowReport(
            window=w,
            inputs=WindowReportInputs(cids=cids, block_hash=inputs.block_hash, base_model_cid=inputs.base_model_cid,
                                      eval_step_size=self.config.eval_step_size, strategy=self.describe(),
                                      stale_bases={c.trainer: c.base_model_cid for c in inputs.contributions
                                                   if c.base_model_cid != inputs.base_model_cid},
                                      common_rows=dict(sorted(counts.items()))),
            scores=tuple(sorted(scores, key=lambda x: x.trainer)),
            rejections=tuple(sorted(rejections, key=lambda r: (r.trainer, r.reason.value, r.cid))),
            accepted=result.info.contributors,
            aggregate=result.info,
            valuation=paid.info,
        )
        return report, result.params, new_state


def _not_own(losses: RowLosses, owners: Sequence[str], trainer: str) -> tuple[float, float]:
    """(mean loss before, after) over the common rows `trainer` does not own (all of them if it owns every one)."""
    mask = torch.tensor([o != trainer for o in owners], dtype=torch.bool)
    if not bool(mask.any()):
        mask = torch.ones_like(mask)
    return float(losses.common_before[mask].mean()), float(losses.common_after[mask].mean())


def _one_per_cluster(contribs: Sequence[Contribution], s: Mapping[str, float]) -> list[Contribution]:
    """A Sybil cluster enters the aggregate once, through its best-scoring member (ties: lowest address),
    so that many identities cannot outweigh one honest contributor in the coordinate-wise mean."""
    best: dict[tuple[str, ...], Contribution] = {}
    out: list[Contribution] = []
    for c in sorted(contribs, key=lambda c: (-s[c.trainer], c.trainer)):
        if not c.sybil_cluster:
            out.append(c)
        elif c.sybil_cluster not in best:
            best[c.sybil_cluster] = c
    return sorted(out + list(best.values()), key=lambda c: c.trainer)


def _record_misses(previous: Mapping[str, tuple[int, ...]], rejections: Sequence[Rejection], window: int,
                   horizon: int) -> dict[str, tuple[int, ...]]:
    missed = {r.trainer for r in rejections if r.reason == RejectReason.MISSING_REVEAL}
    out: dict[str, tuple[int, ...]] = {}
    for trainer in sorted(set(previous) | missed):
        kept = tuple(x for x in previous.get(trainer, ()) if x > window - horizon)
        kept += (window,) if trainer in missed else ()
        if kept:
            out[trainer] = kept
    return out
