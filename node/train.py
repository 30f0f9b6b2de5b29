"""The trainer's inner loop (H AdamW steps on the assigned batches -> pseudo-gradient), the inner
optimiser's state that a trainer carries from window to window, and the error feedback that carries what
the codec dropped into the next window.

The AdamW moments persist across windows (as in DiLoCo, SparseLoCo and Templar): each window starts from
the new global model, but the moments still describe the loss surface well, since the model moved by one
outer step. A fresh AdamW every window moves each coordinate by about lr·sign(g) in its first steps and
estimates the second moment from a handful of batches; measured on `bench.convergence --small`, dropping the
state each window costs most of what collaboration gains (see base/run_config.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from base.errors import TrainmarketError
from base.model import autocast_context

if TYPE_CHECKING:
    from node.ddp import Cluster

ProgressFn = Callable[[int, float], None]


class InnerLoopError(TrainmarketError):
    """Inner-loop inputs that cannot be trained on (bad batch shape, non-finite loss, bad state)."""


@dataclass(frozen=True)
class InnerLoopConfig:
    """H = `steps` optimiser steps; the batches are split evenly across them; each step accumulates
    gradients over micro-batches of `micro_batch_size` sequences (memory knob, does not change the math
    beyond float rounding)."""

    steps: int = 20
    lr: float = 3e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    micro_batch_size: int = 8

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.micro_batch_size <= 0 or self.lr <= 0 or self.grad_clip < 0:
            raise InnerLoopError(f"invalid inner-loop config: {self}")


@dataclass
class InnerOptimizerState:
    """AdamW's moments by parameter name, carried from one window to the next (CPU, float32). Empty: a fresh
    optimiser (a new run, or a node that re-synchronised after falling behind)."""

    steps: int = 0
    exp_avg: dict[str, Tensor] = field(default_factory=dict)
    exp_avg_sq: dict[str, Tensor] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.exp_avg

    def install(self, optimizer: torch.optim.Optimizer, named: list[tuple[str, nn.Parameter]]) -> None:
        """Give `optimizer` these moments for `named` parameters (a fresh optimiser when empty)."""
        if self.empty:
            return
        names = {n for n, _ in named}
        if set(self.exp_avg) != names or set(self.exp_avg_sq) != names:
            odd = sorted(set(self.exp_avg) ^ names)[:5]
            raise InnerLoopError(f"optimiser state names {odd} differ from the model's parameters")
        for name, p in named:
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            if m.shape != p.shape or v.shape != p.shape:
                raise InnerLoopError(f"optimiser state {name} has shape {tuple(m.shape)}, parameter {tuple(p.shape)}")
            optimizer.state[p] = {
                "step": torch.tensor(float(self.steps)),
                "exp_avg": m.to(p.device, p.dtype).clone(),
                "exp_avg_sq": v.to(p.device, p.dtype).clone(),
            }

    @classmethod
    def capture(cls, optimizer: torch.optim.Optimizer, named: list[tuple[str, nn.Parameter]]) -> InnerOptimizerState:
        out = cls()
        for name, p in named:
            st = optimizer.state.get(p)
            if not st:
                continue
            out.steps = int(float(st["step"]))
            out.exp_avg[name] = st["exp_avg"].detach().float().cpu().clone()
            out.exp_avg_sq[name] = st["exp_avg_sq"].detach().float().cpu().clone()
        return out


@dataclass
class InnerResult:
    pseudo_gradient: dict[str, Tensor]  # θ_start − θ_end, float32, CPU, keyed like model.named_parameters()
    losses: list[float]  # mean training loss of each step, before that step's update
    tokens: int  # predicted tokens processed
    seconds: float
    optimizer: InnerOptimizerState = field(default_factory=InnerOptimizerState)  # the moments after the window


def snapshot_parameters(model: nn.Module) -> dict[str, Tensor]:
    """A float32 copy of every parameter, on the parameters' own device."""
    return {name: p.detach().float().clone() for name, p in model.named_parameters()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_inner(
    model: nn.Module,
    batches: Tensor,
    cfg: InnerLoopConfig,
    device: torch.device,
    progress: ProgressFn | None = None,
    cluster: Cluster | None = None,
    optimizer_state: InnerOptimizerState | None = None,
) -> InnerResult:
    """Train `model` in place for `cfg.steps` AdamW steps on `batches` ([steps·k, seq_len + 1] token ids)
    and return the pseudo-gradient θ_start − θ_end. `optimizer_state` (the moments the previous window left)
    seeds AdamW; the result carries the moments after this window. Losses stay on the device until the end (no per-step
    host sync) unless a `progress(step, loss)` callback asks for them.

    With a distributed `cluster` (node/ddp.py) every rank passes the same `batches`, trains on its own
    disjoint share of each step's rows, and DDP all-reduces the gradients: the update equals a single
    process's over all the rows (up to float summation order), and so does every rank's pseudo-gradient."""
    if batches.dim() != 2 or batches.shape[1] < 2 or batches.shape[0] % cfg.steps != 0:
        raise InnerLoopError(f"batches {tuple(batches.shape)} must be [steps·k, seq_len+1] with steps={cfg.steps}")
    per_step = batches.shape[0] // cfg.steps
    if per_step == 0:
        raise InnerLoopError(f"{batches.shape[0]} sequences cannot feed {cfg.steps} steps")
    ranks, rank = (cluster.world_size, cluster.rank) if cluster is not None else (1, 0)
    if per_step % ranks:
        raise InnerLoopError(f"{per_step} sequences per step do not split evenly over {ranks} processes")
    share = per_step // ranks  # this rank's rows of every step
    model.to(device)
    model.train()
    start = snapshot_parameters(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, foreach=device.type == "cuda"
    )
    if optimizer_state is not None:
        optimizer_state.install(optimizer, named)
    data = batches.to(device=device, dtype=torch.long, non_blocking=True)
    step_losses = torch.zeros(cfg.steps, device=device)
    forward: nn.Module = model
    if ranks > 1:
        # DDP averages gradients over ranks; scaling each rank's loss by the rank count turns that mean into
        # the sum of the shares, i.e. exactly the single-process mean over the whole step.
        forward = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    _sync(device)
    began = time.perf_counter()
    for step in range(cfg.steps):
        step_batch = data[step * per_step + rank * share : step * per_step + (rank + 1) * share]
        n_micro = -(-share // cfg.micro_batch_size)
        for micro in range(n_micro):
            part = step_batch[micro * cfg.micro_batch_size : (micro + 1) * cfg.micro_batch_size]
            # Only the step's last micro-batch all-reduces; the others accumulate locally.
            local_only = ranks > 1 and micro < n_micro - 1
            with forward.no_sync() if local_only else contextlib.nullcontext():  # type: ignore[operator]
                with autocast_context(device):
                    _, loss = forward(part[:, :-1], part[:, 1:])
                assert loss is not None
                # Weight each micro-batch by its share of the step so unequal tails still average exactly.
                scaled = loss * (part.shape[0] / per_step)
                (scaled * ranks if ranks > 1 else scaled).backward()
            step_losses[step] += scaled.detach()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=device.type == "cuda")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if progress is not None and ranks == 1:
            progress(step, float(step_losses[step]))
    if ranks > 1:
        dist.all_reduce(step_losses)  # each rank holds its share of every step's loss
        if progress is not None:
            for step, loss_sum in enumerate(step_losses.tolist()):
                progress(step, loss_sum)
    losses = step_losses.tolist()
    _sync(device)
    seconds = time.perf_counter() - began
    if not all(map(_finite, losses)):
        raise InnerLoopError(f"training loss became non-finite: {losses}")
    with torch.no_grad():
        delta = {name: (start[name] - p.detach().float()).cpu() for name, p in model.named_parameters()}
    tokens = batches.shape[0] * (batches.shape[1] - 1)
    return InnerResult(pseudo_gradient=delta, losses=losses, tokens=tokens, seconds=seconds,
                       optimizer=InnerOptimizerState.capture(optimizer, named))


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


@dataclass
class ErrorFeedback:
    """Decayed residual: acc = decay·residual + Δ; the codec compresses acc; residual = acc − estimate,
    where estimate is what the receiver will decode. Whatever the codec drops is sent later, decayed."""

    decay: float  # RunConfig.error_feedback_decay
    residual: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay <= 1.0:
            raise InnerLoopError(f"error-feedback decay must lie in [0, 1]: {self.decay}")

    def accumulate(self, delta: dict[str, Tensor]) -> dict[str, Tensor]:
        """acc = decay·residual + Δ (a missing residual counts as zero). Does not change the state."""
        acc = {}
        for name, d in delta.items():
            d = d.detach().float().cpu()
            prev = self.residual.get(name)
            if prev is not None and prev.shape != d.shape:
                raise InnerLoopError(f"residual {name} has shape {tuple(prev.shape)}, delta {tuple(d.shape)}")
            acc[name] = d if prev is None else self.decay * prev + d
        return acc

    def record(self, acc: dict[str, Tensor], estimate: dict[str, Tensor]) -> None:
        """residual = acc − estimate, once the payload built from `acc` is final."""
        missing = set(acc) ^ set(estimate)
        if missing:
            raise InnerLoopError(f"estimate and accumulator name different tensors: {sorted(missing)}")
        self.residual = {name: acc[name] - estimate[name].detach().float().cpu() for name in acc}
