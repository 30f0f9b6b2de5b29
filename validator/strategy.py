"""The scoring pipeline of one window as a chain of swappable steps (in the spirit of Flower's strategies):
filters → evaluator → rating → weighting → aggregator.

`ScoringStrategy.score_window` is pure: no chain, no IPFS, no database. Everything it depends on comes in
through `WindowInputs` and `ValidatorState`, everything it decides goes out in the `WindowReport`, the new
global parameters and the new state, so the audit can call the very same function on the same inputs."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from validator.aggregate import Aggregator, MedianNormClipMean, median_clip_scales
from validator.domain import (
    Contribution,
    ContributionScore,
    ParamDict,
    Rejection,
    RejectReason,
    WindowReport,
    WindowReportInputs,
)
from validator.evaluate import EvalResult, evaluate_contributions
from validator.filters import (
    Filter,
    FilterConfig,
    FilterContext,
    UpdateFingerprint,
    default_filters,
    fingerprint,
    run_filters,
)
from validator.rating import PlackettLuceRater, Rating, RatingModel
from validator.scoring import (
    BINARY_DECAY,
    final_score,
    gradient_score,
    own_vs_random_indicator,
    power_normalise,
    relative_gain,
    update_binary_average,
)

# evaluate_contributions' signature: (model, deltas, own batches, random batch, step size, device, base=…).
Evaluate = Callable[..., list[EvalResult]]


@dataclass(frozen=True)
class StrategyConfig:
    eval_step_size: float = 1.0  # η in θ − η·Δ when measuring a contribution
    weight_power: float = 2.0  # p of the power normalisation
    binary_decay: float = BINARY_DECAY
    min_gradient_score: float = 0.0  # only updates with s_i above this go into the aggregate


@dataclass(frozen=True)
class WindowInputs:
    window: int
    block_hash: str  # the window's closing block hash (seeded `random_batch`)
    base_model_cid: str
    params: ParamDict  # the global model the window trained from
    contributions: Sequence[Contribution]  # fetched, decoded payloads
    own_batches: Mapping[str, Tensor]  # trainer → its assigned data, recomputed by the validator
    random_batch: Tensor
    prior_rejections: Sequence[Rejection] = ()  # found upstream: missing reveal, undecodable payload
    stale_bases: Mapping[str, int] = field(default_factory=dict)  # older accepted bases → windows behind


@dataclass(frozen=True)
class ValidatorState:
    ratings: dict[str, Rating] = field(default_factory=dict)
    binary_avg: dict[str, float] = field(default_factory=dict)
    missed_windows: dict[str, tuple[int, ...]] = field(default_factory=dict)
    recent_accepted: tuple[UpdateFingerprint, ...] = ()
    momentum: ParamDict = field(default_factory=dict)
    last_window: int | None = None

    def miss_counts(self, window: int, horizon: int) -> dict[str, int]:
        return {t: sum(1 for w in ws if window - horizon <= w < window) for t, ws in self.missed_windows.items()}

    def to_parts(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """(JSON-able dict, flat tensor dict for safetensors): how the store persists the state."""
        plain = {
            "ratings": {t: [r.mu, r.sigma] for t, r in sorted(self.ratings.items())},
            "binary_avg": dict(sorted(self.binary_avg.items())),
            "missed_windows": {t: list(ws) for t, ws in sorted(self.missed_windows.items())},
            "recent_accepted": [[fp.trainer, fp.window, fp.cid] for fp in self.recent_accepted],
            "last_window": self.last_window,
        }
        tensors = {f"momentum/{n}": t.detach().cpu().contiguous() for n, t in self.momentum.items()}
        for i, fp in enumerate(self.recent_accepted):
            tensors[f"fingerprint/{i}/keys"] = fp.keys.contiguous()
            tensors[f"fingerprint/{i}/values"] = fp.values.contiguous()
        return plain, tensors

    @classmethod
    def from_parts(cls, plain: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> ValidatorState:
        fps = tuple(
            UpdateFingerprint(trainer=str(t), window=int(w), cid=str(cid), keys=tensors[f"fingerprint/{i}/keys"],
                              values=tensors[f"fingerprint/{i}/values"])
            for i, (t, w, cid) in enumerate(plain["recent_accepted"])
        )
        return cls(
            ratings={t: Rating(mu=float(mu), sigma=float(sigma)) for t, (mu, sigma) in plain["ratings"].items()},
            binary_avg={t: float(b) for t, b in plain["binary_avg"].items()},
            missed_windows={t: tuple(int(w) for w in ws) for t, ws in plain["missed_windows"].items()},
            recent_accepted=fps,
            momentum={k.removeprefix("momentum/"): v for k, v in tensors.items() if k.startswith("momentum/")},
            last_window=plain["last_window"],
        )


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
    ) -> None:
        self.model = model
        # The hook that runs the per-contribution evaluation: a torchrun validator spreads it over its ranks
        # (validator/distributed.py) and the loop times it (validator/timing.py); results must not change.
        self.evaluate: Evaluate = evaluate or evaluate_contributions
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

        clip = median_clip_scales(evaluable)
        applied = [c.delta if clip[c.trainer] == 1.0 else {k: v * clip[c.trainer] for k, v in c.delta.items()}
                   for c in evaluable]
        results = self.evaluate(
            self.model, applied, [inputs.own_batches[c.trainer] for c in evaluable],
            inputs.random_batch, self.config.eval_step_size, self.device, base=inputs.params,
        )
        scored: list[tuple[Contribution, EvalResult]] = []
        for c, r in zip(evaluable, results, strict=True):
            if all(math.isfinite(x) for x in asdict(r).values()):
                scored.append((c, r))
            else:
                rejections.append(Rejection(c.trainer, w, RejectReason.NONFINITE_LOSS, repr(r), c.cid))

        s = {c.trainer: gradient_score(r.loss_before_random, r.loss_after_random) for c, r in scored}
        ratings = {**state.ratings, **self.rater.update(state.ratings, s)}
        binary_avg = dict(state.binary_avg)
        partial: list[dict[str, Any]] = []
        for c, r in scored:
            own = relative_gain(r.loss_before_own, r.loss_after_own)
            b = own_vs_random_indicator(own, s[c.trainer])
            binary_avg[c.trainer] = update_binary_average(binary_avg.get(c.trainer, 0.0), b, self.config.binary_decay)
            rating = ratings[c.trainer]
            partial.append(dict(
                trainer=c.trainer, cid=c.cid, loss_before_own=r.loss_before_own, loss_after_own=r.loss_after_own,
                loss_before_random=r.loss_before_random, loss_after_random=r.loss_after_random, s_i=s[c.trainer],
                own_gain=own, random_gain=s[c.trainer], b_i=b, binary_avg=binary_avg[c.trainer], mu=rating.mu,
                sigma=rating.sigma, ordinal=rating.ordinal, sync=c.sync, penalty=c.penalty,
                final=final_score(rating.ordinal, binary_avg[c.trainer], c.sync, c.penalty),
            ))
        weights = power_normalise([p["final"] for p in partial], self.config.weight_power)
        scores = tuple(ContributionScore(**p, weight=wt) for p, wt in zip(partial, weights, strict=True))

        improving = [c for c, _ in scored if s[c.trainer] > self.config.min_gradient_score]
        aggregated = _one_per_cluster(improving, s)
        result = self.aggregator.aggregate(inputs.params, aggregated, state.momentum)

        new_state = ValidatorState(
            ratings=ratings,
            binary_avg=binary_avg,
            missed_windows=_record_misses(state.missed_windows, inputs.prior_rejections, w,
                                          self.filter_config.reliability_horizon),
            recent_accepted=tuple(fp for fp in state.recent_accepted if fp.window > w - horizon)
            + tuple(fingerprint(c, shapes) for c in improving),
            momentum=result.momentum,
            last_window=w,
        )
        cids = {c.trainer: c.cid for c in inputs.contributions}
        cids.update({r.trainer: r.cid for r in inputs.prior_rejections if r.cid})
        report = WindowReport(
            window=w,
            inputs=WindowReportInputs(cids=cids, block_hash=inputs.block_hash, base_model_cid=inputs.base_model_cid,
                                      eval_step_size=self.config.eval_step_size, strategy=self.describe(),
                                      stale_bases={c.trainer: c.base_model_cid for c in inputs.contributions
                                                   if c.base_model_cid != inputs.base_model_cid}),
            scores=tuple(sorted(scores, key=lambda x: x.trainer)),
            rejections=tuple(sorted(rejections, key=lambda r: (r.trainer, r.reason.value, r.cid))),
            accepted=result.info.contributors,
            aggregate=result.info,
        )
        return report, result.params, new_state


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
