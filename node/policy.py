"""What a node sends each window, as a pluggable policy. `UpdatePolicy` itself is the honest node: train
from the latest global model, send the payload as encoded, always reveal. An adversary (demo, tests)
subclasses it and overrides one hook, so the honest path carries no adversary branches:

    class ZeroUpdate(UpdatePolicy):
        def make_delta(self, ctx: TrainingContext) -> dict[str, Tensor] | None:
            return {name: torch.zeros_like(p) for name, p in ctx.base_params().items()}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from base.model import GPT
from base.run_config import RunConfig
from contracts.views import TrainingRunViews
from node.chain_view import base_model_for
from node.data import BlobStore
from node.ddp import Cluster, lead_window
from node.train import InnerLoopConfig, InnerOptimizerState, ProgressFn, train_inner


@dataclass
class TrainingContext:
    """Everything one window's update may be computed from. `model` holds the base model's weights."""

    window: int
    trainer: str
    run_id: int
    config: RunConfig
    model: GPT
    base_model_cid: str
    batches: Tensor  # the trainer's assigned rows for this window, [steps·seqs_per_step, seq_len + 1]
    device: torch.device
    views: TrainingRunViews
    blobs: BlobStore
    progress: ProgressFn | None = None
    losses: list[float] = field(default_factory=list)  # filled by train(); reported in the window summary
    tokens: int = 0
    seconds: float = 0.0
    cluster: Cluster | None = None  # set under torchrun (see LeadingPolicy): train() then leads the followers
    # The inner AdamW moments the trainer carries across windows; train() starts from them and replaces them
    # with the moments after this window (the runner persists whatever is here after make_delta).
    optimizer_state: InnerOptimizerState = field(default_factory=InnerOptimizerState)

    def inner_loop_config(self) -> InnerLoopConfig:
        cfg = self.config
        return InnerLoopConfig(
            steps=cfg.inner_steps, lr=cfg.inner_lr, weight_decay=cfg.inner_weight_decay,
            micro_batch_size=cfg.seqs_per_step,
        )

    def train(self) -> dict[str, Tensor]:
        """H AdamW steps on the assigned batches; returns θ_start − θ_end (CPU, float32)."""
        if self.cluster is not None and self.cluster.distributed:
            result = lead_window(self.cluster, self.model, self.batches, self.inner_loop_config(), self.config,
                                 self.progress, self.optimizer_state)
        else:
            result = train_inner(self.model, self.batches, self.inner_loop_config(), self.device, self.progress,
                                 optimizer_state=self.optimizer_state)
        self.optimizer_state = result.optimizer
        self.losses = result.losses
        self.tokens = result.tokens
        self.seconds = result.seconds
        return result.pseudo_gradient

    def base_params(self) -> dict[str, Tensor]:
        """A CPU float32 copy of the base model's parameters (call before train() to see the base)."""
        return {name: p.detach().float().cpu().clone() for name, p in self.model.named_parameters()}


class UpdatePolicy:
    """The honest node. Each hook is one decision an adversary may make differently."""

    name = "honest"

    def choose_base(self, window: int, published: Mapping[int, str], initial_cid: str) -> str:
        """The global model to train from: the latest published before `window`, else the initial one."""
        cid, _ = base_model_for(published, initial_cid, window)
        return cid

    def make_delta(self, ctx: TrainingContext) -> dict[str, Tensor] | None:
        """The pseudo-gradient to send for `ctx.window`; None sends nothing this window."""
        return ctx.train()

    def tamper_payload(self, payload: bytes) -> bytes:
        """The bytes actually committed and published (honest: the encoded payload, unchanged)."""
        return payload

    def should_reveal(self, window: int) -> bool:
        return True


HonestPolicy = UpdatePolicy


class LeadingPolicy(UpdatePolicy):
    """Rank 0 of a torchrun node: `inner` decides everything; its training runs across the whole cluster."""

    def __init__(self, inner: UpdatePolicy, cluster: Cluster) -> None:
        self.inner = inner
        self.cluster = cluster
        self.name = inner.name

    def choose_base(self, window: int, published: Mapping[int, str], initial_cid: str) -> str:
        return self.inner.choose_base(window, published, initial_cid)

    def make_delta(self, ctx: TrainingContext) -> dict[str, Tensor] | None:
        ctx.cluster = self.cluster
        return self.inner.make_delta(ctx)

    def tamper_payload(self, payload: bytes) -> bytes:
        return self.inner.tamper_payload(payload)

    def should_reveal(self, window: int) -> bool:
        return self.inner.should_reveal(window)

# `trainmarket node run --policy NAME`; the demo registers its adversaries here.
POLICIES: dict[str, type[UpdatePolicy]] = {"honest": UpdatePolicy}
