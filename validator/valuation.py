"""The marginal-value stage of a window (after aggregation): what each scored contribution's new information
was worth to the applied step, and how specific it was to its own rows. Measurements only (validator/marginal.py
explains each one); the pay formula is in validator/scoring.py and validator/strategy.py assembles the scores.

Cost, in forward passes of the common batch (R rows) for N contributions with o own rows each: the grouped
backward pass at the midpoint (~3), one forward at θ − step (1), and the midpoint model on every own row
(N·o/R), all on top of the evaluation (evaluate.py); predicted o/R + 4/N per contribution
(marginal.marginal_forward_equivalents). bench.validator measures it: on the
small preset (R = 48, o = 8), 0.37 forward passes per contribution at N = 32 and 0.76 at N = 8, on top of the
evaluation's 1.39 and 1.48 (bench/results/validator.json, CPU seconds of one thread)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from base.report import ValuationInfo
from validator.aggregate import Shares
from validator.domain import Contribution, ParamDict
from validator.evaluate import RowLosses
from validator.filters import UpdateFingerprint, layout_offsets
from validator.marginal import Specificity, attribute, midpoint_row_losses, public_residual, specificity


@dataclass(frozen=True)
class Valuation:
    value: dict[str, float]  # new-information value (a Sybil cluster's members share their representative's)
    value_full: dict[str, float]
    novelty: dict[str, float]
    specificity: dict[str, Specificity]
    info: ValuationInfo
    step: UpdateFingerprint  # the applied step, sparse: a public direction from the next window on


def step_fingerprint(step: ParamDict, window: int) -> UpdateFingerprint:
    """The step's nonzero coefficients with global keys (names sorted, as filters.fingerprint)."""
    offsets = layout_offsets({n: tuple(t.shape) for n, t in step.items()})
    keys: list[Tensor] = []
    values: list[Tensor] = []
    for name in sorted(step):
        flat = step[name].detach().reshape(-1).cpu()
        nz = flat.nonzero().flatten()
        keys.append(nz + offsets[name])
        values.append(flat[nz].double())
    return UpdateFingerprint(trainer="aggregate", window=window, cid="", keys=torch.cat(keys) if keys else
                             torch.empty(0, dtype=torch.long),
                             values=torch.cat(values) if values else torch.empty(0, dtype=torch.float64))


def value_window(model: nn.Module, device: torch.device, window: int, params: ParamDict, new_params: ParamDict,
                 common: Tensor, owners: Sequence[str], own_rows: Mapping[str, Tensor],
                 losses: Mapping[str, RowLosses], scored: Sequence[Contribution], aggregated: Sequence[Contribution],
                 shares: Shares, public: Sequence[UpdateFingerprint], median_norm: float) -> Valuation:
    names = sorted(params)
    step = {n: (params[n].float() - new_params[n].to(params[n].device).float()) for n in names}
    offsets = layout_offsets({n: tuple(t.shape) for n, t in params.items()})
    residuals = {c.trainer: public_residual(c.support, offsets, public) for c in scored}
    by_trainer = {c.trainer: c for c in scored}
    full_shares: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
    novel_shares: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
    for trainer, parts in shares.items():
        support = by_trainer[trainer].support
        full_shares[trainer], novel_shares[trainer] = {}, {}
        for name, (idx, coeff) in parts.items():
            s_vals = support[name][1]
            chosen = s_vals.ne(0)  # the aggregator skips zero values; `idx` lists the nonzero ones in order
            full_shares[trainer][name] = (idx, coeff * s_vals[chosen].double())
            novel_shares[trainer][name] = (idx, coeff * residuals[trainer].values[name][chosen])
    common_before = next(iter(losses.values())).common_before if losses else torch.zeros(0, dtype=torch.float64)
    order = [c.trainer for c in scored]
    if aggregated:
        attribution = attribute(model, params, step, full_shares, novel_shares, common, owners, common_before,
                                device)
        mid_own = dict(zip(order, midpoint_row_losses(model, params, step, [own_rows[t] for t in order],
                                                      max(1, common.size(0)), device), strict=True))
        ref_common = common_before - attribution.midpoint_common
        measured, attributed = attribution.measured_gain, attribution.attributed_gain
    else:
        mid_own = {t: losses[t].own_before for t in order}  # no step: the reference gains nothing
        ref_common = torch.zeros_like(common_before)
        measured = attributed = 0.0
    specs: dict[str, Specificity] = {}
    for t in order:
        r = losses[t]
        mask = torch.tensor([o != t for o in owners], dtype=torch.bool)
        if not bool(mask.any()):
            mask = torch.ones_like(mask)
        specs[t] = specificity(r.own_before - r.own_after, r.own_before - mid_own[t],
                               (r.common_before - r.common_after)[mask], ref_common[mask])
    aggregated_names = [c.trainer for c in aggregated]
    reference = statistics.median([specs[t].delta for t in aggregated_names]) if aggregated_names else 0.0
    value = {t: attribution.novel[t] for t in aggregated_names} if aggregated else {}
    value_full = {t: attribution.full[t] for t in aggregated_names} if aggregated else {}
    for c in scored:  # a cluster is one contribution: every member is valued as its aggregated representative
        rep = next((t for t in c.sybil_cluster if t in value), None) if c.sybil_cluster else None
        if rep is not None:
            value[c.trainer], value_full[c.trainer] = value[rep], value_full[rep]
    info = ValuationInfo(measured_gain=measured, attributed_gain=attributed, specificity_ref=reference,
                         median_norm=median_norm, public_vectors=len(public))
    return Valuation(value={t: value.get(t, 0.0) for t in order}, value_full={t: value_full.get(t, 0.0) for t in order},
                     novelty={t: residuals[t].novelty for t in order}, specificity=specs, info=info,
                     step=step_fingerprint(step, window))
