"""What a contribution adds: its new information, its marginal value to the applied aggregate, and how
specific it is to the data it was assigned. Tensor-side measurements only; the pay formula that combines them
is in validator/scoring.py, and validator/strategy.py wires both into a window.

**New information** (`public_residual`). Everything revealed before a window is public: the published
aggregate steps (one is the difference of two global models) and every earlier accepted payload. A trainer can
replay any of them, or averages, rescalings, re-sparsifications and noisy versions of them, for free, and the
previous aggregate step is a momentum-like direction that still lowers the loss: replaying it earned ~11× an
honest trainer under the old scoring (issue 13). So each update's values on its own support are regressed on the
public vectors' values on that same support, and only the residual counts as new. The span is linear, so
averages and rescalings of public vectors lie in it; restricting to the update's support puts any
re-sparsification of a public vector in it exactly; noise added to a public vector is the residual, and noise
has no value. On bench.incentives (seed 1) two thirds (0.67) of an honest update's energy is new: its carried
AdamW moments and error feedback make the rest look like the last windows' steps and its own last payload.

**Marginal value** (`attribute`). The aggregate step is a sum of per-contribution shares (each value times its
clip scale over the number of contributors of that coordinate, times the outer lr: `Aggregator.shares`). Its
gain on the evaluation rows, L(θ) − L(θ − step), is split by integrated gradients along the straight path
θ → θ − step, with one midpoint node: gain ≈ ⟨∇L(θ − step/2), step⟩ = Σ_i ⟨∇L(θ − step/2), share_i⟩, exact up to
third-order terms (the report records the measured gain beside the attributed sum). This is the Aumann–Shapley
value of the shares (the continuous Shapley value): it sums to the aggregate's gain and is additive, so
splitting one update into parts attributes the same total to the parts. A contribution is paid for the part of
its share that is new information: ⟨∇L, coefficient ⊙ residual⟩. Prototyped on the bench.incentives set-up
(5 honest trainers, 16–20 windows): leave-one-out differences on 32 common rows had a per-window standard error
of 41% of their mean, needed one forward pass per contribution, and paid a replay of the previous aggregate
step like an honest update; the midpoint attribution summed to within 5% of the measured aggregate gain
(e.g. 0.312 vs 0.319, 0.115 vs 0.113 nats) at one backward pass per window. In the tournament the honest
trainers' new-information values spread by 39% within a window (median over windows), most of it real
differences between their data, which the records of validator/scoring.py average out.
Contribution i is valued on the common rows it does not own (validator/eval_data.py), so fitting its own rows
buys no value: the gradient is taken per owner group of rows (one backward pass over all rows in total) and i's
group is left out of its sum.

**Specificity** (`specificity`). Honest work is training on one's own assignment, and that shows: the update
lowers the loss of its own rows more than that of other trainers' rows of the same distribution. Per row the
signal is small beside the row-to-row spread (honest, tiny model: 6e-3 nats against a per-row SD of 4e-2), so a
control variate removes what is common to every good update: each row's gain under the reference model (the
midpoint of the aggregate step), regressed out with a pooled slope. The prototype measured the per-window SD of
the estimate (8 own rows, 32 common) falling from 8.2e-3 to 4.2e-3 against a mean of 5.8e-3. It grows with the
share of one's own rows trained on: on bench.incentives (seed 1, windows ≥ 3, against the same window's honest
mean) H/2 steps showed 0.55, H/3 steps 0.44, a single step 0.28, replayed or copied updates 0.0 ± 0.1. It is
weak early in training, when generic learning swamps the memory of single rows (an honest trainer's t-statistic
is ~1 for the first 8 windows of the tiny model, 3–4 from window 12 on): validator/scoring.py weighs each
window's effort evidence by it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from validator.domain import ParamDict
from validator.evaluate import batched_row_losses, per_row_losses
from validator.filters import UpdateFingerprint

# Shares: trainer → tensor name → (flat indices, coefficient): its values there enter the step × coefficient.
Shares = Mapping[str, Mapping[str, tuple[Tensor, Tensor]]]
RIDGE = 1e-9  # relative ridge of the public regression: keeps it solvable when public vectors coincide


@dataclass(frozen=True)
class Residual:
    """An update's values on its support, minus their least-squares fit by the public vectors there."""

    values: dict[str, Tensor]  # name → residual values, aligned with Contribution.support[name][0]
    novelty: float  # ‖residual‖² / ‖values‖² (1: nothing public in it; 0: a public direction)


def public_residual(support: Mapping[str, tuple[Tensor, Tensor]], offsets: Mapping[str, int],
                    public: Sequence[UpdateFingerprint]) -> Residual:
    """The part of an update (its `support`: name → (sorted flat indices, values)) that no public vector
    predicts. `offsets` maps tensor names to global keys (filters.layout_offsets), like the fingerprints."""
    names = sorted(support)
    keys = torch.cat([support[n][0].long() + offsets[n] for n in names]) if names else torch.empty(0, dtype=torch.long)
    y = torch.cat([support[n][1].double() for n in names]) if names else torch.empty(0, dtype=torch.float64)
    energy = float(y.pow(2).sum())
    columns = [_values_at(fp, keys) for fp in public]
    columns = [c for c in columns if float(c.pow(2).sum()) > 0.0]
    if energy <= 0.0 or not columns:
        residual = y
    else:
        x = torch.stack(columns, dim=1)
        gram = x.T @ x
        gram += RIDGE * float(gram.diagonal().mean()) * torch.eye(gram.size(0), dtype=torch.float64)
        residual = y - x @ torch.linalg.solve(gram, x.T @ y)
    out: dict[str, Tensor] = {}
    start = 0
    for n in names:
        size = support[n][0].numel()
        out[n] = residual[start : start + size]
        start += size
    novelty = float(residual.pow(2).sum()) / energy if energy > 0.0 else 0.0
    return Residual(values=out, novelty=min(1.0, max(0.0, novelty)))


def _values_at(fp: UpdateFingerprint, keys: Tensor) -> Tensor:
    """The fingerprint's values at `keys` (0 where it has none); its keys are sorted and unique."""
    if fp.keys.numel() == 0 or keys.numel() == 0:
        return torch.zeros(keys.numel(), dtype=torch.float64)
    pos = torch.searchsorted(fp.keys, keys).clamp_max(fp.keys.numel() - 1)
    hit = fp.keys[pos] == keys
    return torch.where(hit, fp.values[pos].double(), torch.zeros(keys.numel(), dtype=torch.float64))


@dataclass(frozen=True)
class Attribution:
    full: dict[str, float]  # trainer → ⟨∇L_mid, share⟩ on the common rows it does not own (mean per row)
    novel: dict[str, float]  # the same for the share's new-information part
    measured_gain: float  # L(θ) − L(θ − step), mean over all common rows
    attributed_gain: float  # Σ_i ⟨∇L_mid, share_i⟩ over all common rows (≈ measured_gain)
    midpoint_common: Tensor  # per-row losses of the midpoint model on the common rows (the control variate)


def attribute(model: nn.Module, params: ParamDict, step: ParamDict, shares: Shares, novel_shares: Shares,
              common: Tensor, owners: Sequence[str], common_before: Tensor, device: torch.device) -> Attribution:
    """Integrated-gradient (midpoint) attribution of the step θ → θ − `step` to each trainer's share (values
    already multiplied by their coefficients; see the module docstring). `owners[r]` is the trainer whose
    assignment common row r comes from; `common_before` the rows' losses at θ."""
    names = sorted(params)
    buffers = {n: b.to(device) for n, b in model.named_buffers()}
    mid = {n: (params[n].to(device) - 0.5 * step[n].to(device, params[n].dtype)).detach() for n in names}
    groups = sorted(set(owners))
    rows_of = {g: [r for r, o in enumerate(owners) if o == g] for g in groups}
    trainers = sorted(shares)
    full_map, novel_map = _share_map(shares, trainers, params), _share_map(novel_shares, trainers, params)
    full: dict[str, dict[str, float]] = {t: {} for t in trainers}
    novel: dict[str, dict[str, float]] = {t: {} for t in trainers}
    mid_losses = torch.zeros(common.size(0), dtype=torch.float64)
    model.eval()
    with torch.enable_grad():
        for g in groups:
            leaves = {n: mid[n].clone().requires_grad_(True) for n in names}
            index = torch.tensor(rows_of[g], dtype=torch.long)
            losses = per_row_losses(model, {**leaves, **buffers}, common[index].to(device))
            grads = torch.autograd.grad(losses.sum(), [leaves[n] for n in names])
            mid_losses[index] = losses.detach().cpu()
            flat = torch.cat([gr.detach().reshape(-1) for gr in grads]).cpu().double()
            for target, mapping in ((full, full_map), (novel, novel_map)):
                for t, value in zip(trainers, _dots(flat, mapping, len(trainers)), strict=True):
                    target[t][g] = value
    with torch.inference_mode():
        after_state = {**{n: params[n].to(device) - step[n].to(device, params[n].dtype) for n in names}, **buffers}
        after = per_row_losses(model, after_state, common.to(device)).cpu()
    total_rows = common.size(0)

    def per_row(parts: dict[str, float], trainer: str) -> float:
        others = [g for g in groups if g != trainer]
        n = sum(len(rows_of[g]) for g in others)
        return math.fsum(parts[g] for g in others) / n if n else 0.0

    return Attribution(
        full={t: per_row(v, t) for t, v in sorted(full.items())},
        novel={t: per_row(v, t) for t, v in sorted(novel.items())},
        measured_gain=float((common_before.double() - after).mean()),
        attributed_gain=math.fsum(math.fsum(v.values()) for v in full.values()) / max(1, total_rows),
        midpoint_common=mid_losses,
    )


def _share_map(shares: Shares, trainers: Sequence[str], params: ParamDict) -> tuple[Tensor, Tensor, Tensor]:
    """All trainers' shares as flat (owner index, global key, value) vectors over the parameters laid end to end
    in sorted-name order: one gather-multiply-scatter per gradient dots it with every share at once."""
    offsets, total = {}, 0
    for name in sorted(params):
        offsets[name] = total
        total += params[name].numel()
    owner, keys, values = [], [], []
    for i, t in enumerate(trainers):
        for name, (idx, vals) in sorted(shares.get(t, {}).items()):
            owner.append(torch.full((idx.numel(),), i, dtype=torch.long))
            keys.append(idx.long().cpu() + offsets[name])
            values.append(vals.double().cpu())
    empty = torch.empty(0, dtype=torch.long)
    return (torch.cat(owner) if owner else empty, torch.cat(keys) if keys else empty,
            torch.cat(values) if values else torch.empty(0, dtype=torch.float64))


def _dots(flat: Tensor, mapping: tuple[Tensor, Tensor, Tensor], n: int) -> list[float]:
    """⟨gradient, share_i⟩ for every trainer i, in float64 (index_add_ sums in a fixed order on CPU)."""
    owner, keys, values = mapping
    out = torch.zeros(n, dtype=torch.float64)
    out.index_add_(0, owner, flat[keys] * values)
    return out.tolist()


def midpoint_row_losses(model: nn.Module, params: ParamDict, step: ParamDict, batches: Sequence[Tensor],
                        chunk_rows: int, device: torch.device) -> list[Tensor]:
    """Per-row losses of every batch at the midpoint model θ − step/2 (the specificity control variate)."""
    buffers = {n: b.to(device) for n, b in model.named_buffers()}
    state = {**{n: p.to(device) - 0.5 * step[n].to(device, p.dtype) for n, p in params.items()}, **buffers}
    with torch.inference_mode():
        return batched_row_losses(model, state, [b.to(device) for b in batches], chunk_rows)


@dataclass(frozen=True)
class Specificity:
    delta: float  # own-row gain in excess of the common rows', after the control variate (nats per row)
    se: float  # its standard error from the row-to-row spread
    slope: float  # the fitted control-variate slope


def specificity(own_gain: Tensor, own_ref: Tensor, common_gain: Tensor, common_ref: Tensor) -> Specificity:
    """δ = mean_own(y − β·x) − mean_common(y − β·x), where y is a row's loss reduction under the update, x the
    same row's reduction under the reference model, and β their pooled least-squares slope (0 when the
    reference does not vary). Rows are independent draws, so the standard error follows from the residuals."""
    y = torch.cat([own_gain, common_gain]).double()
    x = torch.cat([own_ref, common_ref]).double()
    xc = x - x.mean()
    var = float(xc.pow(2).sum())
    slope = float((xc * (y - y.mean())).sum()) / var if var > 1e-24 else 0.0
    res_own = own_gain.double() - slope * own_ref.double()
    res_common = common_gain.double() - slope * common_ref.double()
    delta = float(res_own.mean()) - float(res_common.mean())
    se = math.sqrt(_var(res_own) / max(1, res_own.numel()) + _var(res_common) / max(1, res_common.numel()))
    return Specificity(delta=delta, se=se, slope=slope)


def _var(t: Tensor) -> float:
    return float(t.var(unbiased=True)) if t.numel() > 1 else 0.0


def marginal_forward_equivalents(n_contributions: int, own_rows: int, common_rows: int) -> float:
    """Predicted cost of the marginal estimate per contribution, in forward passes of the common batch: the own
    rows at the reference model (o/R), and, shared by the window's contributions, the backward pass at the
    midpoint (~3 forwards' work over the common rows) and the forward at θ − step (bench.validator measures
    the real figure, the fixed cost of each owner group's pass included)."""
    return own_rows / common_rows + 4.0 / max(1, n_contributions)
