"""Batched loss-before/after evaluation of pseudo-gradients.

Cost model, in units of one forward pass of the common random ("eval") batch of R rows, for N contributions
with o own-data rows each:
  * 1 shared "before" pass on the random batch;
  * the N own-data "before" batches concatenated and run in chunks of R rows: N·o/R passes;
  * per contribution ONE forward of [own_i | random] at θ − η·Δ_i: (o + R)/R passes.
Total ≈ 1 + N·(1 + 2·o/R). With o = R/8 that is 1.25 forward-equivalents per contribution (≤ 1.3 target);
`own_rows_for_budget` picks o for a given budget.

The base weights are never touched: every "after" pass is `torch.func.functional_call` with a fresh params
dict θ − η·Δ_i, so repeated evaluation (and an auditor's re-run) sees bit-identical base weights."""

from __future__ import annotations

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
    loss_before_random: float
    loss_after_random: float


def own_rows_for_budget(random_rows: int, budget: float = DEFAULT_OWN_BUDGET) -> int:
    """Largest own-data row count o with 1 + 2·o/R ≤ budget (at least 1): own rows are paid twice
    (before pass and after pass), random rows once per contribution."""
    if random_rows < 1 or budget < 1.0:
        raise EvaluationError(f"need random_rows >= 1 and budget >= 1, got {random_rows}, {budget}")
    return max(1, int((budget - 1.0) * random_rows / 2.0))


def forward_equivalents(n_contributions: int, own_rows: int, random_rows: int) -> float:
    """Predicted cost per contribution in forward passes of the random batch (see module docstring)."""
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
    """Loss before and after applying each Δ_i (θ − step_size·Δ_i) on its own batch and on the shared random
    batch. `base` overrides the model's own parameters (the global model of the window); buffers come from
    the model. Deterministic on CPU: same inputs → same floats.

    `indices`: only these contributions (results in that order). Their "before" losses come from the same
    batches as when every contribution is evaluated (the chunks of all own rows that hold theirs), so a result
    does not depend on which others were asked for (validator/distributed.py splits a window this way)."""
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

    results: list[EvalResult] = []
    with torch.inference_mode():
        state = {**params, **buffers}
        loss_before_random = float(per_row_losses(model, state, random_rows).mean())
        chosen = range(len(deltas)) if indices is None else indices
        before_own = _batched_own_losses(model, state, own, chunk_rows=random_rows.size(0),
                                         wanted=None if indices is None else set(chosen))
        for delta, own_batch, loss_before_own in ((deltas[i], own[i], before_own[i]) for i in chosen):
            shifted = {n: (p - step_size * delta[n].to(device, p.dtype)) if n in delta else p for n, p in
                       params.items()}
            rows = per_row_losses(model, {**shifted, **buffers}, torch.cat([own_batch, random_rows]))
            n_own = own_batch.size(0)
            results.append(
                EvalResult(
                    loss_before_own=loss_before_own,
                    loss_after_own=float(rows[:n_own].mean()),
                    loss_before_random=loss_before_random,
                    loss_after_random=float(rows[n_own:].mean()),
                )
            )
    return results


def _batched_own_losses(model: nn.Module, state: ParamDict, own: list[Tensor], chunk_rows: int,
                        wanted: set[int] | None = None) -> list[float]:
    """All own-data "before" losses in ⌈Σ rows / chunk_rows⌉ passes instead of one pass per contribution. With
    `wanted`, only the chunks holding those contributions' rows run (the others' losses are NaN)."""
    if not own:
        return []
    bounds: list[tuple[int, int]] = []
    start = 0
    for batch in own:
        bounds.append((start, start + batch.size(0)))
        start += batch.size(0)
    needed = None if wanted is None else {r // chunk_rows for i in wanted for r in range(*bounds[i])}
    chunks = torch.cat(own).split(chunk_rows)
    row_losses = torch.cat([
        per_row_losses(model, state, chunk) if needed is None or j in needed
        else torch.full((chunk.size(0),), float("nan"), dtype=torch.float64, device=chunk.device)
        for j, chunk in enumerate(chunks)])
    return [float(row_losses[a:b].mean()) for a, b in bounds]


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
