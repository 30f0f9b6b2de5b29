"""The marketplace in one process: trainers, the payload codec and the validator's scoring, window by window,
with the chain and IPFS left out. Benchmarks (bench.convergence, bench.incentives) build on it.

Per window w every trainer's `Behaviour` makes a Δ from what it may know (the global model of w − 1 − lag, its
assigned rows, everything public: earlier global models and revealed payloads); honest training is
`ctx.train()`, the node's own `train_inner` with the AdamW moments the trainer carries over. Δ then goes through
the node's error feedback and the run's codec (`RunPayloads.encode_contribution`), is decoded as a validator
decodes it (`decode_contribution`) and scored by the validator's own `ScoringStrategy`, whose aggregate becomes
the model of window w. Nothing here reimplements the protocol; it only wires the real pieces together."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from ipfs.payload import decode_contribution
from node.carry import CarriedState
from node.data import Dataset, assigned_batches, heldout_batches
from node.model import GPT, evaluate_loss, model_spec
from node.payloads import RunPayloads
from node.protocol import RunConfig
from node.train import InnerLoopConfig, train_inner
from validator.domain import Contribution, ParamDict, WindowReport
from validator.loop import build_model, build_strategy
from validator.strategy import ScoringStrategy, ValidatorState, WindowInputs
from validator.window_inputs import own_rows

BASE = "model"  # the simulated base CID: every contribution is computed on the current model (or says so)


def trainer_address(i: int) -> str:
    return "0x" + f"{i + 1:040x}"


def params_of(model: GPT) -> ParamDict:
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}


@dataclass
class SimContext:
    """What one trainer may use in one window. `train(rows, steps)` runs the node's inner loop from `base`
    with the trainer's carried moments (and counts the optimiser steps as the trainer's compute)."""

    window: int
    trainer: str
    base: ParamDict
    rows: Tensor  # the trainer's assigned rows for this window
    models: Sequence[ParamDict]  # public: the global model after each earlier window (index 0: initial)
    revealed: Sequence[Mapping[str, ParamDict]]  # public: decoded Δ of every earlier window, by trainer
    generator: torch.Generator
    inner_steps: int  # H, an honest window's optimiser steps
    _train: Callable[[ParamDict, Tensor, int], dict[str, Tensor]]
    steps_used: int = 0

    def train(self, rows: Tensor | None = None, steps: int | None = None, base: ParamDict | None = None
              ) -> dict[str, Tensor]:
        """`steps` optimiser steps (default H) on `rows` (default the assigned rows) from `base` (default the
        window's base model); Δ = θ_start − θ_end, float32 on CPU."""
        steps = steps or self.inner_steps
        delta = self._train(self.base if base is None else base, self.rows if rows is None else rows, steps)
        self.steps_used += steps
        return delta


class Behaviour(Protocol):
    """How one identity acts: returns Δ (θ_start − θ_end convention) or None to send nothing."""

    name: str

    def delta(self, ctx: SimContext) -> dict[str, Tensor] | None: ...


class Honest:
    name = "honest"

    def delta(self, ctx: SimContext) -> dict[str, Tensor] | None:
        return ctx.train()


@dataclass
class WindowOutcome:
    window: int
    report: WindowReport
    loss: float
    payload_bytes: dict[str, int]
    steps_used: dict[str, int]


@dataclass
class Marketplace:
    """Trainers (address → behaviour) over one run config. `lag` = how many windows older than w − 1 the base
    of window w is (0 in the protocol; 1 is the old publish lag); `persistent=False` gives every window a fresh
    AdamW (the old protocol)."""

    config: RunConfig
    dataset: Dataset
    behaviours: dict[str, Behaviour]
    device: torch.device
    lag: int = 0
    persistent: bool = True
    monitor: Tensor | None = None
    strategy: ScoringStrategy | None = None
    models: list[ParamDict] = field(default_factory=list)
    revealed: list[dict[str, ParamDict]] = field(default_factory=list)
    state: ValidatorState = field(default_factory=ValidatorState)

    def __post_init__(self) -> None:
        self.worker = build_model(self.config).to(self.device)
        self.spec = model_spec(self.worker)
        self.payloads = RunPayloads(self.config, 1, self.spec)
        self.strategy = self.strategy or build_strategy(self.config, self.device)
        self.models = self.models or [params_of(self.worker)]
        self.carry = {t: CarriedState.fresh(self.config.error_feedback_decay) for t in self.behaviours}
        self.inner = InnerLoopConfig(steps=self.config.inner_steps, lr=self.config.inner_lr,
                                     weight_decay=self.config.inner_weight_decay,
                                     micro_batch_size=self.config.seqs_per_step)

    def _trainer_fn(self, trainer: str) -> Callable[[ParamDict, Tensor, int], dict[str, Tensor]]:
        def train(base: ParamDict, rows: Tensor, steps: int) -> dict[str, Tensor]:
            self.worker.load_state_dict(base, strict=False)
            inner = InnerLoopConfig(steps=steps, lr=self.inner.lr, weight_decay=self.inner.weight_decay,
                                    micro_batch_size=self.inner.micro_batch_size)
            carried = self.carry[trainer].optimizer if self.persistent else None
            result = train_inner(self.worker, rows, inner, self.device, optimizer_state=carried)
            if self.persistent:
                self.carry[trainer].optimizer = result.optimizer
            return result.pseudo_gradient
        return train

    def step(self) -> WindowOutcome:
        """Run the next window; the new global model is appended to `models`."""
        w = len(self.models) - 1
        cfg = self.config
        base = self.models[max(0, len(self.models) - 1 - self.lag)]
        contributions: list[Contribution] = []
        own: dict[str, Tensor] = {}
        sizes: dict[str, int] = {}
        used: dict[str, int] = {}
        decoded_now: dict[str, ParamDict] = {}
        for i, (t, behaviour) in enumerate(self.behaviours.items()):
            rows = assigned_batches(self.dataset, cfg.run_seed, t, w, cfg.inner_steps * cfg.seqs_per_step, cfg.seq_len)
            ctx = SimContext(window=w, trainer=t, base=base, rows=rows, models=self.models, revealed=self.revealed,
                             generator=torch.Generator().manual_seed(w * 100_003 + i), inner_steps=cfg.inner_steps,
                             _train=self._trainer_fn(t))
            delta = behaviour.delta(ctx)
            used[t] = ctx.steps_used
            if delta is None:
                continue
            carry = self.carry[t]
            acc = carry.feedback.accumulate({n: d.float().cpu() for n, d in delta.items()})
            encoded = self.payloads.encode_contribution(acc, t, w, BASE)
            carry.feedback.record(acc, encoded.estimate)
            decoded = decode_contribution(encoded.data, self.spec, cfg.max_payload_bytes)
            contributions.append(Contribution(trainer=t, window=w, cid=f"sim-{t}-{w}", base_model_cid=BASE,
                                              delta=decoded.delta, indices=decoded.indices))
            decoded_now[t] = decoded.delta
            own[t] = own_rows(self.dataset, cfg, t, w)
            sizes[t] = len(encoded.data)
        random_batch = heldout_batches(self.dataset, w.to_bytes(8, "big"), cfg.eval_random_seqs, cfg.seq_len)
        inputs = WindowInputs(window=w, block_hash=f"0x{w:064x}", base_model_cid=BASE, params=self.models[-1],
                              contributions=sorted(contributions, key=lambda c: c.trainer), own_batches=own,
                              random_batch=random_batch)
        assert self.strategy is not None
        report, new_params, self.state = self.strategy.score_window(inputs, self.state)
        self.models.append({n: p.float().cpu() for n, p in new_params.items()})
        self.revealed.append(decoded_now)
        loss = math.nan
        if self.monitor is not None:
            self.worker.load_state_dict(self.models[-1], strict=False)
            loss = evaluate_loss(self.worker, self.monitor.to(self.device))
        return WindowOutcome(w, report, loss, sizes, used)


def dense_bf16_bytes(spec: Mapping[str, tuple[tuple[int, ...], str]]) -> int:
    return 2 * sum(math.prod(shape) for shape, _ in spec.values())
