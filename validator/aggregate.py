"""Aggregation of the accepted pseudo-gradients into the next global model.

Deterministic by construction so that anyone holding the reveals can recompute the published model CID:
contributions are processed in trainer-address order, norms are summed in float64 over sorted tensor names,
and the base parameters are never modified in place (new tensors are returned)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from base.report import AggregateInfo
from validator.domain import Contribution, ParamDict


@dataclass(frozen=True)
class AggregateResult:
    params: ParamDict
    momentum: ParamDict  # outer optimiser state, plain tensors
    info: AggregateInfo


Shares = dict[str, dict[str, tuple[Tensor, Tensor]]]


class Aggregator(Protocol):
    name: str

    def aggregate(self, params: ParamDict, contributions: Sequence[Contribution], momentum: ParamDict
                  ) -> AggregateResult: ...

    def shares(self, params: ParamDict, contributions: Sequence[Contribution]) -> Shares:
        """Per trainer, per tensor: (flat indices, float64 coefficients) such that this window's part of the
        applied step θ_old − θ_new is Σ_trainers values[indices] × coefficients (validator/marginal.py splits the
        step's gain along these shares). The rest of the step (momentum) is earlier windows' public steps."""
        ...


def delta_norm(delta: ParamDict) -> float:
    """Global L2 norm over all tensors, accumulated in float64 in sorted-name order."""
    return math.sqrt(math.fsum(float(delta[n].double().pow(2).sum()) for n in sorted(delta)))


def support_norm(c: Contribution) -> float:
    """‖Δ‖ from the chosen coefficients only (Δ is zero elsewhere once format-checked): k values, not P."""
    return math.sqrt(math.fsum(float(vals.double().pow(2).sum()) for _, vals in c.support.values()))


def median_clip_scales(contributions: Sequence[Contribution]) -> dict[str, float]:
    """Per trainer, the factor that clips its Δ to the median norm of the set (1.0 at or below the median).

    The same clip is applied when scoring and when aggregating, so a contribution is judged as the update
    that would actually be applied: scaling an update up (a poisoner's trick) buys no extra score."""
    norms = {c.trainer: support_norm(c) for c in contributions}
    if not norms:
        return {}
    clip = statistics.median(norms.values())
    return {t: min(1.0, clip / n) if n > 0 else 1.0 for t, n in norms.items()}


def _unchanged(params: ParamDict, momentum: ParamDict, method: str, lr: float) -> AggregateResult:
    info = AggregateInfo(method=method, contributors=(), clip_norm=0.0, update_norm=0.0, learning_rate=lr)
    return AggregateResult(params=dict(params), momentum=dict(momentum), info=info)


class MedianNormClipMean:
    """Clip each Δ to the median norm of the set, average each coordinate over the contributions that chose it
    (nonzero there), then one outer SGD step with Nesterov momentum: θ ← θ − lr·(g + μ·buf), buf ← μ·buf + g.

    Clipping to the median bounds what any minority of scaled-up updates can do; the per-coordinate count
    keeps sparse (top-k) updates from being diluted by contributors that did not touch a coordinate."""

    name = "median_norm_clip_mean"

    def __init__(self, lr: float = 0.7, momentum: float = 0.9, nesterov: bool = True) -> None:
        self.lr = lr
        self.beta = momentum
        self.nesterov = nesterov

    def aggregate(self, params: ParamDict, contributions: Sequence[Contribution], momentum: ParamDict
                  ) -> AggregateResult:
        if not contributions:
            # No accepted update: the model and the optimiser state stay as they are.
            return _unchanged(params, momentum, self.name, self.lr)
        ordered = sorted(contributions, key=lambda c: c.trainer)
        norms = {c.trainer: support_norm(c) for c in ordered}
        clip = statistics.median(norms.values())
        by_trainer = median_clip_scales(ordered)
        scales = [by_trainer[c.trainer] for c in ordered]
        grad: ParamDict = {}
        for name in sorted(params):
            # Sparse accumulation over each update's chosen coefficients, in trainer order, so every
            # coordinate sees the same sequence of float32 additions as a dense sum would.
            total = torch.zeros(params[name].numel(), dtype=torch.float32, device=params[name].device)
            count = torch.zeros_like(total)
            for c, scale in zip(ordered, scales, strict=True):
                if name in c.support:
                    idx, vals = c.support[name]
                    chosen = vals.ne(0)
                    idx, vals = idx[chosen].to(total.device), vals[chosen].to(total.device, torch.float32)
                    total.index_add_(0, idx, scale * vals)
                    count.index_add_(0, idx, torch.ones_like(vals))
            mean = torch.where(count > 0, total / count.clamp_min(1.0), torch.zeros_like(total))
            grad[name] = mean.view_as(params[name])
        new_params, new_momentum = self._outer_step(params, grad, momentum)
        info = AggregateInfo(
            method=self.name, contributors=tuple(c.trainer for c in ordered), clip_norm=float(clip),
            update_norm=delta_norm(grad), learning_rate=self.lr, delta_norms=norms,
        )
        return AggregateResult(params=new_params, momentum=new_momentum, info=info)

    def shares(self, params: ParamDict, contributions: Sequence[Contribution]) -> Shares:
        """lr·(1 + μ if Nesterov)·clip scale / (contributors of the coordinate), on each chosen coefficient."""
        ordered = sorted(contributions, key=lambda c: c.trainer)
        scales = median_clip_scales(ordered)
        factor = self.lr * (1.0 + self.beta if self.nesterov else 1.0)
        out: Shares = {c.trainer: {} for c in ordered}
        for name in sorted(params):
            count = torch.zeros(params[name].numel(), dtype=torch.float64)
            chosen: dict[str, Tensor] = {}
            for c in ordered:
                if name in c.support:
                    idx, vals = c.support[name]
                    chosen[c.trainer] = idx[vals.ne(0)].cpu()
                    count.index_add_(0, chosen[c.trainer], torch.ones(chosen[c.trainer].numel(), dtype=torch.float64))
            for trainer, idx in chosen.items():
                out[trainer][name] = (idx, factor * scales[trainer] / count[idx])
        return out

    def _outer_step(self, params: ParamDict, grad: ParamDict, momentum: ParamDict) -> tuple[ParamDict, ParamDict]:
        new_params: ParamDict = {}
        new_momentum: ParamDict = {}
        for name in sorted(params):
            g = grad[name]
            previous = momentum.get(name)
            buf = g.clone() if previous is None else self.beta * previous.to(g.device) + g
            step = g + self.beta * buf if self.nesterov else buf
            new_params[name] = (params[name].detach() - self.lr * step.to(params[name].dtype))
            new_momentum[name] = buf
        return new_params, new_momentum


class MeanAggregator:
    """The plain mean of all Δ (zeros counted) applied with SGD, no clipping, no state: the baseline rule."""

    name = "mean"

    def __init__(self, lr: float = 1.0) -> None:
        self.lr = lr

    def aggregate(self, params: ParamDict, contributions: Sequence[Contribution], momentum: ParamDict
                  ) -> AggregateResult:
        if not contributions:
            return _unchanged(params, momentum, self.name, self.lr)
        ordered = sorted(contributions, key=lambda c: c.trainer)
        new_params: ParamDict = {}
        mean: ParamDict = {}
        for name in sorted(params):
            total: Tensor = torch.zeros_like(params[name], dtype=torch.float32)
            for c in ordered:
                if name in c.delta:
                    total = total + c.delta[name].to(total.device, torch.float32)
            mean[name] = total / len(ordered)
            new_params[name] = params[name].detach() - self.lr * mean[name].to(params[name].dtype)
        info = AggregateInfo(method=self.name, contributors=tuple(c.trainer for c in ordered), clip_norm=0.0,
                             update_norm=delta_norm(mean), learning_rate=self.lr,
                             delta_norms={c.trainer: delta_norm(c.delta) for c in ordered})
        return AggregateResult(params=new_params, momentum=dict(momentum), info=info)

    def shares(self, params: ParamDict, contributions: Sequence[Contribution]) -> Shares:
        """lr / N on every nonzero coefficient of every update."""
        factor = self.lr / max(1, len(contributions))
        out: Shares = {}
        for c in sorted(contributions, key=lambda c: c.trainer):
            out[c.trainer] = {}
            for name, (idx, vals) in c.support.items():
                if name in params:
                    nz = idx[vals.ne(0)].cpu()
                    out[c.trainer][name] = (nz, torch.full((nz.numel(),), factor, dtype=torch.float64))
        return out
