"""The validator's domain nouns: a decoded contribution (the only place tensors live), its status, and the
scoring pipeline's errors. The report a window produces is a shared wire type: base/report.py."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import torch
from torch import Tensor

from base.errors import TrainmarketError

ParamDict = dict[str, Tensor]

class ValidatorError(TrainmarketError):
    """Root of the validator's scoring-pipeline errors."""


class EvaluationError(ValidatorError):
    """A contribution cannot be evaluated against the model (unknown tensor, wrong shape, bad batch)."""

    def __init__(self, reason: str, trainer: str | None = None) -> None:
        self.reason = reason
        self.trainer = trainer
        who = f" (trainer {trainer})" if trainer else ""
        super().__init__(f"cannot evaluate contribution{who}: {reason}")


class ScoringError(ValidatorError):
    """A scoring formula got an input outside its domain (negative weight, NaN, negative power)."""


class ContributionStatus(StrEnum):
    PENDING = "pending"
    SCORED = "scored"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Contribution:
    """One trainer's decoded pseudo-gradient for one window. Δ = θ_start − θ_end: applying it is θ − η·Δ.

    `sync` and `penalty` are multipliers in [0, 1] that filters set (Sybil share, reliability) instead of
    rejecting; they only ever shrink a positive score. `sybil_cluster` lists the trainers (sorted) of the
    same-window cluster of near-identical updates this one belongs to; empty when it is alone."""

    trainer: str
    window: int
    cid: str
    base_model_cid: str
    delta: ParamDict
    indices: dict[str, Tensor]
    status: ContributionStatus = ContributionStatus.PENDING
    reason: str = ""
    sync: float = 1.0
    penalty: float = 1.0
    sybil_cluster: tuple[str, ...] = ()

    @cached_property
    def support(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per tensor: the chosen flat indices (sorted, unique; the nonzeros where no indices were sent) and
        Δ's values there. Once the format filter has checked that Δ is zero elsewhere this *is* the update, and
        similarity, norms and the aggregate work on it instead of the dense tensors. Cached: it is read by
        several filters and the aggregator (a `replace()`d copy recomputes it once)."""
        out: dict[str, tuple[Tensor, Tensor]] = {}
        for name in sorted(self.delta):
            flat = self.delta[name].reshape(-1)
            idx = self.indices[name].long() if name in self.indices else flat.nonzero().flatten()
            idx = torch.unique(idx)  # sorted; a repeated index must not count twice
            out[name] = (idx, flat[idx])
        return out
