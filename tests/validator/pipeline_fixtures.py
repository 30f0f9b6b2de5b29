"""Shared builders for the scoring-pipeline tests: a very small GPT from base.model, real text (CPython's own
sources, no download), honest updates trained on a trainer's own rows, and the adversaries' updates."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import Tensor

from base.model import GPT, GPTConfig
from validator.domain import Contribution, ParamDict
from validator.evaluate import base_params

CONFIG = GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=32)
WIDTH = CONFIG.block_size + 1
BASE_CID = "bafkbasemodel"


def make_model(seed: int = 0) -> GPT:
    return GPT.from_seed(CONFIG, seed)


def corpus() -> Tensor:
    """Bytes of a few standard-library modules as int64 tokens (fixed files, so fixed content per Python)."""
    root = Path(json.__file__).parent.parent
    data = b"".join(p.read_bytes() for p in sorted(root.glob("*.py"))[:60])
    return torch.tensor(list(data[:200_000]), dtype=torch.int64)


def rows(tokens: Tensor, start: int, n: int, stride: int = WIDTH) -> Tensor:
    return torch.stack([tokens[start + i * stride : start + i * stride + WIDTH] for i in range(n)])


def random_rows(tokens: Tensor, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - WIDTH, (n,), generator=g)
    return torch.stack([tokens[s : s + WIDTH] for s in starts.tolist()])


def train_delta(model: GPT, params: ParamDict, batch: Tensor, steps: int = 8, lr: float = 3e-3) -> ParamDict:
    """Δ = θ_start − θ_end after a few Adam steps on `batch` (what an honest trainer publishes, before codec)."""
    local = copy.deepcopy(model)
    local.load_state_dict({**local.state_dict(), **{n: t.clone() for n, t in params.items()}})
    local.train()
    opt = torch.optim.Adam(local.parameters(), lr=lr)
    for _ in range(steps):
        _, loss = local(batch[:, :-1], batch[:, 1:])
        assert loss is not None
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = base_params(local)
    return {n: (params[n] - end[n]).detach().clone() for n in params}


def sparsify(delta: ParamDict, fraction: float = 0.25) -> tuple[ParamDict, dict[str, Tensor]]:
    """Top-k by magnitude per tensor, as the codec does: dense Δ zero off the chosen flat indices."""
    out: ParamDict = {}
    idx: dict[str, Tensor] = {}
    for name, t in delta.items():
        flat = t.flatten()
        k = max(1, int(flat.numel() * fraction))
        chosen = torch.sort(flat.abs().topk(k).indices).values
        sparse = torch.zeros_like(flat)
        sparse[chosen] = flat[chosen]
        out[name] = sparse.view_as(t)
        idx[name] = chosen
    return out, idx


def contribution(trainer: str, window: int, delta: ParamDict, indices: dict[str, Tensor], cid: str | None = None,
                 base: str = BASE_CID) -> Contribution:
    return Contribution(trainer=trainer, window=window, cid=cid or f"bafk-{trainer}-{window}", base_model_cid=base,
                        delta=delta, indices=indices)


def perturbed(delta: ParamDict, indices: dict[str, Tensor], scale: float, seed: int) -> ParamDict:
    """The same coefficients with small multiplicative noise: what a copier publishes to dodge a CID match."""
    g = torch.Generator().manual_seed(seed)
    return {n: t * (1 + scale * torch.randn(t.shape, generator=g)) for n, t in delta.items()}


def noise_update(params: ParamDict, scale: float, seed: int, fraction: float = 0.25
                 ) -> tuple[ParamDict, dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return sparsify({n: scale * torch.randn(t.shape, generator=g) for n, t in params.items()}, fraction)


def zero_update(params: ParamDict, fraction: float = 0.25) -> tuple[ParamDict, dict[str, Tensor]]:
    idx = {n: torch.arange(max(1, int(t.numel() * fraction))) for n, t in params.items()}
    return {n: torch.zeros_like(t) for n, t in params.items()}, idx
