"""Pure scoring formulas (DESIGN.md, "Scoring"). No tensors, no I/O: floats in, floats out.

The invariants that close Templar's known exploits live here:
  * every factor of the final score is clamped at 0 before multiplying, so two negatives (a newcomer's
    negative ordinal × a negative moving average) never make a positive score;
  * penalties are multipliers in [0, 1] applied to positive scores only, so a penalised negative score can
    never move towards (or past) zero."""

from __future__ import annotations

import math
from collections.abc import Sequence

from validator.domain import ScoringError

BINARY_DECAY = 0.95
U16_MAX = 65535


def relative_gain(loss_before: float, loss_after: float) -> float:
    """(L_before − L_after) / L_before: the fraction of the loss a contribution removes (negative if it hurts)."""
    _require_finite(loss_before=loss_before, loss_after=loss_after)
    if loss_before <= 0.0:
        # A zero loss cannot be improved; any change is no gain rather than a division by zero.
        return 0.0
    return (loss_before - loss_after) / loss_before


def gradient_score(loss_before_random: float, loss_after_random: float) -> float:
    """s_i: relative loss reduction on the common random data."""
    return relative_gain(loss_before_random, loss_after_random)


def own_vs_random_indicator(own_gain: float, random_gain: float) -> int:
    """b_i = +1 when the update helps its own assigned data more than random data (it was trained on it),
    else −1. Ties (a zero update: 0 vs 0) are −1, so doing nothing never earns the indicator."""
    _require_finite(own_gain=own_gain, random_gain=random_gain)
    return 1 if own_gain > random_gain else -1


def update_binary_average(previous: float, indicator: int, decay: float = BINARY_DECAY) -> float:
    """B ← decay·B + (1 − decay)·b."""
    if indicator not in (-1, 1):
        raise ScoringError(f"indicator must be ±1, got {indicator}")
    return decay * previous + (1.0 - decay) * indicator


def apply_penalty(score: float, factor: float) -> float:
    """Shrink a positive score by `factor` ∈ [0, 1]; a non-positive score is returned unchanged (a penalty
    must never improve a negative score, e.g. −5 × 0.5 = −2.5)."""
    _require_finite(score=score, factor=factor)
    if not 0.0 <= factor <= 1.0:
        raise ScoringError(f"penalty factor must be in [0, 1], got {factor}")
    return score * factor if score > 0.0 else score


def final_score(ordinal: float, binary_avg: float, sync: float, penalty: float = 1.0) -> float:
    """final = max(0, ordinal) × max(0, B) × sync, then the penalty; always ≥ 0."""
    _require_finite(ordinal=ordinal, binary_avg=binary_avg, sync=sync)
    if not 0.0 <= sync <= 1.0:
        raise ScoringError(f"sync must be in [0, 1], got {sync}")
    raw = max(0.0, ordinal) * max(0.0, binary_avg) * sync
    return apply_penalty(raw, penalty)


def power_normalise(scores: Sequence[float], power: float = 2.0) -> list[float]:
    """weights_i = f_i^p / Σ f_j^p over the non-negative scores; negatives count as 0; all zero → all zero."""
    if power <= 0.0 or not math.isfinite(power):
        raise ScoringError(f"power must be a positive finite number, got {power}")
    _require_finite(**{f"score[{i}]": s for i, s in enumerate(scores)})
    powered = [max(0.0, s) ** power for s in scores]
    total = math.fsum(powered)
    if total <= 0.0:
        return [0.0] * len(scores)
    return [p / total for p in powered]


def to_u16_weights(weights: Sequence[float]) -> list[int]:
    """Weights (non-negative, Σ ≤ 1) → the contract's packed uint16 vector, Σ ≤ 65535.

    Largest-remainder rounding: floors first, then the leftover units go to the largest fractional parts
    (ties to the lower index), so a weight vector summing to 1 maps to exactly 65535 and the result is
    deterministic."""
    _require_finite(**{f"weight[{i}]": w for i, w in enumerate(weights)})
    if any(w < 0.0 for w in weights):
        raise ScoringError("weights must be non-negative")
    total = math.fsum(weights)
    if total > 1.0 + 1e-9:
        raise ScoringError(f"weights sum to {total}, more than 1")
    scaled = [w * U16_MAX for w in weights]
    floors = [math.floor(x) for x in scaled]
    budget = min(U16_MAX, round(total * U16_MAX)) - sum(floors)
    by_remainder = sorted(range(len(scaled)), key=lambda i: (-(scaled[i] - floors[i]), i))
    for i in by_remainder[: max(0, budget)]:
        floors[i] += 1
    return floors


def _require_finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ScoringError(f"{name} is not finite: {value}")
