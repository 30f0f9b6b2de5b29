"""The shared model: a nanoGPT-style byte-level decoder, its presets, its deterministic initialisation and
a pure loss evaluation. Trainers and validators import this file, so everything a checkpoint's identity
depends on (config, init order, parameter names) lives here and nowhere else."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from eth_utils import keccak
from torch import Tensor, nn

from base.errors import TrainmarketError

if TYPE_CHECKING:
    from base.run_config import RunConfig

BYTE_VOCAB = 256
# Tensor name -> (shape, dtype name): what a payload must hold for this model (tensors/payload.py checks it).
ModelSpec = dict[str, tuple[tuple[int, ...], str]]
INIT_STD = 0.02


class ModelConfigError(TrainmarketError):
    """A model configuration that cannot describe a valid GPT (unknown preset, bad override, bad shape)."""


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the decoder. Byte-level vocabulary, so no tokenizer ever has to be downloaded."""

    vocab_size: int = BYTE_VOCAB
    block_size: int = 64
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.block_size, self.n_layer, self.n_head, self.n_embd) <= 0:
            raise ModelConfigError(f"every size must be positive: {self}")
        if self.n_embd % self.n_head != 0:
            raise ModelConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"dropout must lie in [0, 1): {self.dropout}")

    def with_overrides(self, overrides: dict[str, int | float | bool]) -> GPTConfig:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ModelConfigError(f"unknown model fields {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]


# tiny: ~0.1M params, CI trains it in seconds on CPU. small: ~7M, a CPU can make progress in minutes.
# base: ~100M (GPT-2-small width, 14 layers), meant for one GPU.
PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(block_size=64, n_layer=2, n_head=2, n_embd=64),
    "small": GPTConfig(block_size=256, n_layer=4, n_head=6, n_embd=384),
    "base": GPTConfig(block_size=1024, n_layer=14, n_head=12, n_embd=768),
}


def preset_config(name: str, overrides: dict[str, int | float | bool] | None = None) -> GPTConfig:
    """The named preset, optionally with fields replaced (the run config's `model_overrides`)."""
    if name not in PRESETS:
        raise ModelConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].with_overrides(overrides or {})


def config_digest(cfg: GPTConfig) -> str:
    """0x-prefixed keccak256 of the config's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(dataclasses.asdict(cfg), sort_keys=True, separators=(",", ":"))
    return "0x" + keccak(canonical.encode()).hex()


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Trunk(nn.Module):
    """Embeddings, blocks and final norm; its attribute names give nanoGPT's parameter names."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)

    def forward(self, idx: Tensor) -> Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


class GPT(nn.Module):
    """Decoder-only transformer with tied input/output embeddings (the lm head is `transformer.wte`)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = Trunk(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    @classmethod
    def from_seed(cls, cfg: GPTConfig, seed: int) -> GPT:
        """The run's initial checkpoint: identical bytes on every machine for the same (cfg, seed)."""
        model = cls(cfg)
        model.reset_parameters(torch.Generator(device="cpu").manual_seed(seed))
        return model

    def reset_parameters(self, generator: torch.Generator) -> None:
        """GPT-2 init, drawn in `named_parameters()` order from one CPU generator so the result does not
        depend on the device or on how many other random numbers the process drew before."""
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layer)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith(".bias"):
                    param.zero_()
                elif ".ln_" in name or name.startswith("transformer.ln_f"):
                    param.fill_(1.0)
                else:
                    std = residual_std if name.endswith("c_proj.weight") else INIT_STD
                    values = torch.empty(param.shape, dtype=torch.float32)
                    nn.init.normal_(values, 0.0, std, generator=generator)
                    param.copy_(values)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        _, t = idx.shape
        if t > self.config.block_size:
            raise ModelConfigError(f"sequence of {t} tokens exceeds block_size {self.config.block_size}")
        logits = self.lm_head(self.transformer(idx))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


def model_spec(model: nn.Module) -> ModelSpec:
    """Parameter name -> (shape, dtype name). Tied weights appear once, under their first name."""
    return {name: (tuple(p.shape), str(p.dtype).removeprefix("torch.")) for name, p in model.named_parameters()}


def select_device(pref: Literal["auto", "cpu", "cuda"] | str = "auto") -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA on a machine without it is an error, not a fallback."""
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise ModelConfigError("--device cuda was asked for but no CUDA device is available")
        return torch.device("cuda")
    if pref == "cpu":
        return torch.device("cpu")
    raise ModelConfigError(f"unknown device {pref!r}; use auto, cpu or cuda")


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA (weights stay fp32); a no-op on CPU, where bf16 is slow and fp32 is exact."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def iter_chunks(batches: Tensor, chunk: int) -> Iterator[Tensor]:
    for start in range(0, batches.shape[0], chunk):
        yield batches[start : start + chunk]


def evaluate_loss(model: nn.Module, batches: Tensor, chunk: int = 32) -> float:
    """Mean next-byte cross-entropy over `batches` of token ids shaped [n, block_size + 1].

    Every sequence has the same length, so the mean of per-chunk means weighted by chunk size is the
    mean over all predicted tokens. Runs in eval mode without gradients and restores the mode after."""
    if batches.dim() != 2 or batches.shape[0] == 0 or batches.shape[1] < 2:
        raise ModelConfigError(f"evaluation batches must be [n>0, seq_len+1>=2], got {tuple(batches.shape)}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.no_grad(), autocast_context(device):
            for part in iter_chunks(batches, chunk):
                part = part.to(device=device, dtype=torch.long)
                _, loss = model(part[:, :-1], part[:, 1:])
                assert loss is not None
                total += float(loss) * part.shape[0]
    finally:
        model.train(was_training)
    return total / batches.shape[0]


def build_model(config: RunConfig) -> GPT:
    """The run's model at its initial parameters: the config's preset with its overrides, seeded by its model seed
    (every trainer, validator and auditor builds the same one)."""
    return GPT.from_seed(preset_config(config.model_preset, dict(config.model_overrides)), config.model_seed)
