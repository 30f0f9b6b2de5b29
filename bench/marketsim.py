"""The marketplace in one process: trainers, the payload codec and the validator's scoring, window by window,
with the chain and IPFS left out. Benchmarks (bench.convergence, bench.incentives) build on it.

Per window w every trainer's `Behaviour` makes a Δ from what it may know (the global model of w − 1 − lag, its
assigned rows, everything public: earlier global models and revealed payloads); honest training is
`ctx.train()`, the node's own `train_inner` with the AdamW moments the trainer carries over. Δ then goes through
the node's error feedback and the run's codec (`RunPayloads.encode_contribution`), is decoded as a validator
decodes it (`decode_contribution`) and scored by the validator's own `ScoringStrategy`, whose aggregate becomes
the model of window w. Nothing here reimplements the protocol; it only wires the real pieces together."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from base.model import GPT, build_model, evaluate_loss, model_spec
from base.report import WindowReport
from base.run_config import RunConfig
from node.carry import CarriedState
from node.data import Dataset, assigned_batches
from node.payloads import RunPayloads
from node.train import InnerLoopConfig, train_inner
from tensors.payload import decode_contribution
from validator.domain import Contribution, ParamDict
from validator.eval_data import assignment_size, common_eval_rows, own_eval_rows
from validator.loop import build_strategy
from validator.strategy import ScoringStrategy, ValidatorState, WindowInputs


def model_cid(index: int) -> str:
    """The simulated CID of `models[index]` (0: the initial model): what a contribution names as its base."""
    return f"sim-model-{index}"


def trainer_address(i: int) -> str:
    return "0x" + f"{i + 1:040x}"


def params_of(model: GPT) -> ParamDict:
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}


@dataclass
class SimContext:
    """What one trainer may use in one window. `train(rows, steps)` runs the node's inner loop from `base`
    with the trainer's carried moments, and counts the optimiser steps and the rows trained on (forward and
    backward passes: the compute) as the trainer's work."""

    window: int
    trainer: str
    base: ParamDict
    rows: Tensor  # the trainer's assigned rows for this window
    models: Sequence[ParamDict]  # public: the global model after each earlier window (index 0: initial)
    revealed: Sequence[Mapping[str, ParamDict]]  # public: decoded Δ of every earlier window, by trainer
    generator: torch.Generator
    inner_steps: int  # H, an honest window's optimiser steps
    inner_lr: float  # the run's inner learning rate
    _train: Callable[[ParamDict, Tensor, int, float | None], dict[str, Tensor]]
    assign: Callable[[str], Tensor] | None = None  # another address's rows for this window (public data)
    base_index: int = 0  # which global model the update names as its base (index into `models`)
    steps_used: int = 0
    rows_used: int = 0

    def train(self, rows: Tensor | None = None, steps: int | None = None, base: ParamDict | None = None,
              lr: float | None = None) -> dict[str, Tensor]:
        """`steps` optimiser steps (default H) on `rows` (default the assigned rows; their count must split
        evenly over the steps) from `base` (default the window's base model) at `lr` (default the run's inner
        lr); Δ = θ_start − θ_end, float32."""
        steps = steps or self.inner_steps
        rows = self.rows if rows is None else rows
        delta = self._train(self.base if base is None else base, rows, steps, lr)
        self.steps_used += steps
        self.rows_used += rows.size(0)
        return delta

    def rows_of(self, address: str) -> Tensor:
        """The window assignment of any address (a pure function of public values)."""
        if self.assign is None:
            raise ValueError("this context has no data assignment")
        return self.assign(address)


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
    rows_used: dict[str, int] = field(default_factory=dict)


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
    seed: bytes = b""  # varies the simulated block hashes (and so the evaluation rows) between runs
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

    def _trainer_fn(self, trainer: str) -> Callable[[ParamDict, Tensor, int, float | None], dict[str, Tensor]]:
        def train(base: ParamDict, rows: Tensor, steps: int, lr: float | None) -> dict[str, Tensor]:
            self.worker.load_state_dict(base, strict=False)
            inner = InnerLoopConfig(steps=steps, lr=lr or self.inner.lr, weight_decay=self.inner.weight_decay,
                                    micro_batch_size=self.inner.micro_batch_size)
            carried = self.carry[trainer].optimizer if self.persistent else None
            result = train_inner(self.worker, rows, inner, self.device, optimizer_state=carried)
            if self.persistent:
                self.carry[trainer].optimizer = result.optimizer
            return result.pseudo_gradient
        return train

    def step(self) -> WindowOutcome:
        """Run the next window; the new global model is appended to `models`. The evaluation rows are chosen
        as the validator chooses them (validator/eval_data.py), from a per-window stand-in for the closing
        block hash that the behaviours never see."""
        w = len(self.models) - 1
        cfg = self.config
        base_index = max(0, len(self.models) - 1 - self.lag)
        contributions: list[Contribution] = []
        sizes: dict[str, int] = {}
        used: dict[str, int] = {}
        rows_used: dict[str, int] = {}
        decoded_now: dict[str, ParamDict] = {}
        per = assignment_size(cfg)

        def assign(address: str) -> Tensor:
            return assigned_batches(self.dataset, cfg.run_seed, address, w, per, cfg.seq_len)

        for i, (t, behaviour) in enumerate(self.behaviours.items()):
            ctx = SimContext(window=w, trainer=t, base=self.models[base_index], rows=assign(t), models=self.models,
                             revealed=self.revealed, generator=torch.Generator().manual_seed(w * 100_003 + i),
                             inner_steps=cfg.inner_steps, inner_lr=cfg.inner_lr, _train=self._trainer_fn(t),
                             assign=assign,
                             base_index=base_index)
            delta = behaviour.delta(ctx)
            used[t], rows_used[t] = ctx.steps_used, ctx.rows_used
            if delta is None:
                continue
            carry = self.carry[t]
            acc = carry.feedback.accumulate({n: d.float().cpu() for n, d in delta.items()})
            named_base = model_cid(ctx.base_index)
            encoded = self.payloads.encode_contribution(acc, t, w, named_base)
            carry.feedback.record(acc, encoded.estimate)
            decoded = decode_contribution(encoded.data, self.spec, cfg.max_payload_bytes)
            contributions.append(Contribution(trainer=t, window=w, cid=f"sim-{t}-{w}", base_model_cid=named_base,
                                              delta=decoded.delta, indices=decoded.indices))
            decoded_now[t] = decoded.delta
            sizes[t] = len(encoded.data)
        block_hash = hashlib.sha256(b"marketsim/closing-block|" + self.seed + w.to_bytes(8, "big")).digest()
        committed = [c.trainer for c in contributions]
        common, owners = common_eval_rows(self.dataset, cfg, committed, w, block_hash)
        current = len(self.models) - 1
        inputs = WindowInputs(
            window=w, block_hash="0x" + block_hash.hex(), base_model_cid=model_cid(current), params=self.models[-1],
            contributions=sorted(contributions, key=lambda c: c.trainer),
            own_batches={c.trainer: own_eval_rows(self.dataset, cfg, c.trainer, w, block_hash) for c in contributions},
            common_batch=common, common_owners=owners,
            stale_bases={model_cid(current - age): age for age in range(1, cfg.max_stale_windows + 1)
                         if current - age >= 0})
        assert self.strategy is not None
        report, new_params, self.state = self.strategy.score_window(inputs, self.state)
        self.models.append({n: p.float().cpu() for n, p in new_params.items()})
        self.revealed.append(decoded_now)
        loss = math.nan
        if self.monitor is not None:
            self.worker.load_state_dict(self.models[-1], strict=False)
            loss = evaluate_loss(self.worker, self.monitor.to(self.device))
        return WindowOutcome(w, report, loss, sizes, used, rows_used)


def dense_bf16_bytes(spec: Mapping[str, tuple[tuple[int, ...], str]]) -> int:
    return 2 * sum(math.prod(shape) for shape, _ in spec.values())
