"""The demo's adversaries, each one hook of `UpdatePolicy` done differently. They attack the protocol the
way a real cheater could: copying what is already public, sending noise or nothing, training on an old
model, splitting into Sybil identities, poisoning, or sending bytes that are no payload at all."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from base.errors import TrainmarketError
from node.data import assigned_batches, fetch_dataset
from node.policy import TrainingContext, UpdatePolicy
from node.train import train_inner


class CopierPolicy(UpdatePolicy):
    """Under commit–reveal the only update a copier can see is one revealed in an earlier window: it takes
    another trainer's last revealed payload, perturbs it lightly and sends it as its own."""

    name = "copier"

    def __init__(self, victim_index: int = 0, noise: float = 0.01) -> None:
        self.victim_index = victim_index
        self.noise = noise

    def make_delta(self, ctx: TrainingContext) -> dict[str, Tensor] | None:
        from base.model import model_spec
        from tensors.payload import decode_contribution  # the copier decodes like a validator would

        for window in range(ctx.window - 1, -1, -1):
            reveals = [r for r in ctx.views.reveals(ctx.run_id, window) if r.trainer.lower() != ctx.trainer.lower()]
            if not reveals:
                continue
            victim = sorted(reveals, key=lambda r: r.trainer.lower())[self.victim_index % len(reveals)]
            try:
                data = ctx.blobs.cat(victim.cid, ctx.config.max_payload_bytes)
                delta = decode_contribution(data, model_spec(ctx.model), ctx.config.max_payload_bytes).delta
            except TrainmarketError:  # an unreadable victim payload just means "nothing to copy"
                continue
            gen = torch.Generator().manual_seed(ctx.window)
            return {k: v + self.noise * v.std() * torch.randn(v.shape, generator=gen) for k, v in delta.items()}
        return ctx.train()  # nothing public yet: behave honestly until there is something to copy


class NoisePolicy(UpdatePolicy):
    """A random update of plausible norm: no training, just noise scaled like a real pseudo-gradient."""

    name = "noise"

    def make_delta(self, ctx: TrainingContext) -> dict[str, Tensor] | None:
        gen = torch.Generator().manual_seed(1000 + ctx.window)
        return {k: 0.01 * p.abs().mean() * torch.randn(p.shape, generator=gen) for k, p in ctx.base_params().items()}


class ZeroPolicy(UpdatePolicy):
    """A free rider that sends an empty update."""

    name = "zero"

    def make_delta(self, ctx: TrainingContext) -> dict[str, Tensor] | None:
        return {k: torch.zeros_like(p) for k, p in ctx.base_params().items()}


class SilentPolicy(UpdatePolicy):
    """A free rider that commits every window and never reveals."""

    name = "freerider"

    def should_reveal(self, window: int) -> bool:
        return False


class StalePolicy(UpdatePolicy):
    """Trains, but always from the run's initial model instead of the current global one."""

    name = "stale"

    def choose_base(self, window: int, published: Mapping[int, str], initial_cid: str) -> str:
        return initial_cid


class SybilPolicy(UpdatePolicy):
    """One operator behind several registered identities: every member trains on the leader's data from the
    same model, so the updates are identical (member 0) or near-identical (members add tiny noise)."""

    name = "sybil"

    def __init__(self, leader: str, member: int, cache_dir: Path) -> None:
        self.leader = leader.lower()
        self.member = member
        self.cache_dir = cache_dir

    def make_delta(self, ctx: TrainingContext) -> dict[str, Tensor] | None:
        cfg = ctx.config
        dataset = fetch_dataset(ctx.blobs, cfg.dataset_cid, self.cache_dir)
        batches = assigned_batches(dataset, cfg.run_seed, self.leader, ctx.window, cfg.inner_steps * cfg.seqs_per_step,
                                   cfg.seq_len)
        delta = train_inner(ctx.model, batches, ctx.inner_loop_config(), ctx.device).pseudo_gradient
        if self.member == 0:
            return delta
        gen = torch.Generator().manual_seed(self.member * 7919 + ctx.window)
        return {k: v + 1e-3 * v.std() * torch.randn(v.shape, generator=gen) for k, v in delta.items()}


class PoisonerPolicy(UpdatePolicy):
    """Trains honestly, then sends the update sign-flipped and scaled up, to push the model uphill."""

    name = "poisoner"

    def __init__(self, scale: float = -5.0) -> None:
        self.scale = scale

    def make_delta(self, ctx: TrainingContext) -> dict[str, Tensor] | None:
        return {k: self.scale * v for k, v in ctx.train().items()}


class MalformedPolicy(UpdatePolicy):
    """Publishes bytes that must be rejected: garbage, a truncated payload, NaN-laden floats, or a payload
    over the size limit, in turn."""

    name = "malformed"

    def __init__(self, max_payload_bytes: int) -> None:
        self.max_payload_bytes = max_payload_bytes
        self._window = 0

    def make_delta(self, ctx: TrainingContext) -> dict[str, Tensor] | None:
        self._window = ctx.window
        return ctx.train()

    def tamper_payload(self, payload: bytes) -> bytes:
        kind = self._window % 4
        if kind == 0:
            return b"\x00garbage, not safetensors\x00" * 64
        if kind == 1:
            return payload[: len(payload) // 2]
        if kind == 2:
            # Overwrite the tail (tensor data) with NaN bit patterns, keeping the header intact.
            nan = b"\x00\x00\xc0\x7f" * 64
            return payload[: len(payload) - len(nan)] + nan if len(payload) > 2 * len(nan) else payload
        return payload + b"\x00" * (self.max_payload_bytes + 1 - len(payload))


def adversary(role: str, **kwargs: object) -> UpdatePolicy:
    """The policy for a demo role name (honest included)."""
    roles: dict[str, type[UpdatePolicy]] = {
        "honest": UpdatePolicy, "copier": CopierPolicy, "noise": NoisePolicy, "zero": ZeroPolicy,
        "freerider": SilentPolicy, "stale": StalePolicy, "sybil": SybilPolicy, "poisoner": PoisonerPolicy,
        "malformed": MalformedPolicy,
    }
    if role not in roles:
        raise ValueError(f"unknown demo role {role!r}; one of {', '.join(sorted(roles))}")
    return roles[role](**kwargs)
