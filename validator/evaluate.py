"""Batched loss-before/after evaluation of pseudo-gradients, row by row.

Cost model, in units of one forward pass of the common ("eval") batch of R rows, for N contributions with o
own-data rows each:
  * 1 shared "before" pass on the common batch;
  * the N own-data "before" batches concatenated and run in chunks of R rows: N·o/R passes;
  * per contribution ONE forward of [own_i | common] at θ − η·Δ_i: (o + R)/R passes.
Total ≈ 1 + N·(1 + 2·o/R). With the run's defaults (o = 8, R = 48) that is 1.33 forward-equivalents per
contribution; `own_rows_for_budget` picks o for a budget. Per-row losses come back (not only means): the
own-vs-common comparison is a paired, row-level statistic (validator/marginal.py `specificity`), and its
reference pass over the own rows (o/R more) is counted with the marginal estimate (validator/valuation.py).

The base weights are never touched: every "after" pass is `torch.func.functional_call` with a fresh params
dict θ − η·Δ_i, so repeated evaluation (and an auditor's re-run) sees bit-identical base weights."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from validator.domain import EvaluationError, ParamDict

DEFAULT_OWN_BUDGET = 1.3


@dataclass(frozen=True)
class EvalResult:
    loss_before_own: float
    loss_after_own: float
    loss_before_random: float  # "random": the common rows (other trainers' data, chosen after the commit)
    loss_after_random: float


@dataclass(frozen=True)
class RowLosses:
    """Per-row mean token losses (float64, CPU) of one contribution: its own rows before and after, the
    common rows before (shared by every contribution) and after."""

    own_before: Tensor
    own_after: Tensor
    common_before: Tensor
    common_after: Tensor

    def means(self) -> EvalResult:
        return EvalResult(float(self.own_before.mean()), float(self.own_after.mean()),
                          float(self.common_before.mean()), float(self.common_after.mean()))


def own_rows_for_budget(random_rows: int, budget: float = DEFAULT_OWN_BUDGET) -> int:
    """Largest own-data row count o with 1 + 2·o/R ≤ budget (at least 1): own rows are paid twice
    (before pass and after pass), common rows once per contribution."""
    if random_rows < 1 or budget < 1.0:
        raise EvaluationError(f"need random_rows >= 1 and budget >= 1, got {random_rows}, {budget}")
    return max(1, int((budget - 1.0) * random_rows / 2.0))


def forward_equivalents(n_contributions: int, own_rows: int, random_rows: int) -> float:
    """Predicted cost per contribution of the evaluation proper, in forward passes of the common batch (see
    the module docstring; the marginal estimate's passes are `marginal.marginal_forward_equivalents`)."""
    total = 1.0 + n_contributions * (1.0 + 2.0 * own_rows / random_rows)
    return total / max(1, n_contributions)


def base_params(model: nn.Module) -> ParamDict:
    return {name: p.detach() for name, p in model.named_parameters()}


def per_row_losses(model: nn.Module, params: ParamDict, batch: Tensor) -> Tensor:
    """Mean next-token cross-entropy per row of `batch` [n, T+1] (input [:, :-1], target [:, 1:]), float64.

    The model is called with targets so that it returns logits for every position (a nanoGPT-style
    model returns only the last position without them); its own mean loss is not used."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits, _ = functional_call(model, params, (inputs, targets))
    token_losses = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), reduction="none"
    ).view(targets.shape)
    return token_losses.double().mean(dim=1)


def evaluate_contributions(
    model: nn.Module,
    deltas: Sequence[ParamDict],
    own_batches: Sequence[Tensor],
    random_batch: Tensor,
    step_size: float,
    device: torch.device | str,
    base: ParamDict | None = None,
    indices: Sequence[int] | None = None,
) -> list[EvalResult]:
    """Mean losses before and after applying each Δ_i (θ − step_size·Δ_i) on its own batch and on the shared
    common batch (see `evaluate_rows`)."""
    return [r.means() for r in evaluate_rows(model, deltas, own_batches, random_batch, step_size, device, base,
                                             indices)]


def evaluate_rows(
    model: nn.Module,
    deltas: Sequence[ParamDict],
    own_batches: Sequence[Tensor],
    random_batch: Tensor,
    step_size: float,
    device: torch.device | str,
    base: ParamDict | None = None,
    indices: Sequence[int] | None = None,
) -> list[RowLosses]:
    """Per-row losses before and after applying each Δ_i (θ − step_size·Δ_i) on its own batch and on the
    shared common batch. `base` overrides the model's own parameters (the global model of the window); buffers
    come from the model. Deterministic on CPU: same inputs → same floats.

    `indices`: only these contributions (results in that order). Their "before" rows come from the same chunks
    as when every contribution is evaluated (the chunks of all own rows that hold theirs), so a result does not
    depend on which others were asked for (validator/distributed.py splits a window this way)."""
    if len(deltas) != len(own_batches):
        raise EvaluationError(f"{len(deltas)} deltas but {len(own_batches)} own batches")
    device = torch.device(device)
    model.eval()
    params = {n: t.to(device) for n, t in (base if base is not None else base_params(model)).items()}
    buffers = {n: b.to(device) for n, b in model.named_buffers()}
    random_rows = _check_batch(random_batch, "random batch").to(device)
    own = [_check_batch(b, f"own batch {i}", random_batch.size(1)).to(device) for i, b in enumerate(own_batches)]
    for i, delta in enumerate(deltas):
        _check_delta(delta, params, i)

    results: list[RowLosses] = []
    with torch.inference_mode():
        state = {**params, **buffers}
        common_before = per_row_losses(model, state, random_rows).cpu()
        chosen = range(len(deltas)) if indices is None else indices
        before_own = batched_row_losses(model, state, own, chunk_rows=random_rows.size(0),
                                        wanted=None if indices is None else set(chosen))
        for delta, own_batch, own_before in ((deltas[i], own[i], before_own[i]) for i in chosen):
            shifted = {n: (p - step_size * delta[n].to(device, p.dtype)) if n in delta else p for n, p in
                       params.items()}
            rows = per_row_losses(model, {**shifted, **buffers}, torch.cat([own_batch, random_rows])).cpu()
            n_own = own_batch.size(0)
            results.append(RowLosses(own_before=own_before, own_after=rows[:n_own], common_before=common_before,
                                     common_after=rows[n_own:]))
    return results


def batched_row_losses(model: nn.Module, state: ParamDict, batches: Sequence[Tensor], chunk_rows: int,
                       wanted: set[int] | None = None) -> list[Tensor]:
    """Per-row losses of several batches in ⌈Σ rows / chunk_rows⌉ passes instead of one pass per batch (CPU).
    With `wanted` (batch indices), only the chunks holding those batches' rows run (the others' rows are NaN):
    the chunks themselves stay the same, so the wanted rows' floats are those of the full call."""
    if not batches:
        return []
    sizes = [b.size(0) for b in batches]
    needed: set[int] | None = None
    if wanted is not None:
        starts = [0, *itertools.accumulate(sizes)]
        needed = {r // chunk_rows for i in wanted for r in range(starts[i], starts[i] + sizes[i])}
    chunks = torch.cat(list(batches)).split(chunk_rows)
    row_losses = torch.cat([
        per_row_losses(model, state, chunk).cpu() if needed is None or j in needed
        else torch.full((chunk.size(0),), float("nan"), dtype=torch.float64)
        for j, chunk in enumerate(chunks)])
    return list(row_losses.split(sizes))


def _check_batch(batch: Tensor, what: str, width: int | None = None) -> Tensor:
    if batch.dim() != 2 or batch.size(0) < 1 or batch.size(1) < 2:
        raise EvaluationError(f"{what} must be [rows >= 1, block_size + 1 >= 2], got {tuple(batch.shape)}")
    if batch.dtype != torch.int64:
        raise EvaluationError(f"{what} must be int64 tokens, got {batch.dtype}")
    if width is not None and batch.size(1) != width:
        raise EvaluationError(f"{what} has width {batch.size(1)}, the random batch {width}")
    return batch


def _check_delta(delta: ParamDict, params: ParamDict, index: int) -> None:
    for name, tensor in delta.items():
        if name not in params:
            raise EvaluationError(f"delta {index} names unknown tensor {name!r}")
        if tensor.shape != params[name].shape:
            raise EvaluationError(
                f"delta {index} tensor {name!r} has shape {tuple(tensor.shape)}, model {tuple(params[name].shape)}"
            )
