"""What a validator carries from one window to the next. It is a deterministic function of every window it
processed, so the audit rebuilds it by replaying them (validator/audit.py); the loop persists it beside the
model after every window (JSON for the numbers, safetensors for the tensors)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from validator.domain import ParamDict
from validator.filters import UpdateFingerprint
from validator.rating import Rating
from validator.scoring import Standing


@dataclass(frozen=True)
class ValidatorState:
    ratings: dict[str, Rating] = field(default_factory=dict)
    binary_avg: dict[str, float] = field(default_factory=dict)
    missed_windows: dict[str, tuple[int, ...]] = field(default_factory=dict)
    recent_accepted: tuple[UpdateFingerprint, ...] = ()
    momentum: ParamDict = field(default_factory=dict)
    last_window: int | None = None
    standing: dict[str, Standing] = field(default_factory=dict)  # trainer → its record (validator/scoring.py)
    recent_steps: tuple[UpdateFingerprint, ...] = ()  # the last applied aggregate steps (public directions)

    def miss_counts(self, window: int, horizon: int) -> dict[str, int]:
        return {t: sum(1 for w in ws if window - horizon <= w < window) for t, ws in self.missed_windows.items()}

    def to_parts(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """(JSON-able dict, flat tensor dict for safetensors): how the store persists the state."""
        plain = {
            "ratings": {t: [r.mu, r.sigma] for t, r in sorted(self.ratings.items())},
            "binary_avg": dict(sorted(self.binary_avg.items())),
            "missed_windows": {t: list(ws) for t, ws in sorted(self.missed_windows.items())},
            "recent_accepted": [[fp.trainer, fp.window, fp.cid] for fp in self.recent_accepted],
            "recent_steps": [[fp.trainer, fp.window, fp.cid] for fp in self.recent_steps],
            "standing": {t: [v.value_sum, v.value_weight, v.effort_sum, v.effort_weight]
                         for t, v in sorted(self.standing.items())},
            "last_window": self.last_window,
        }
        tensors = {f"momentum/{n}": t.detach().cpu().contiguous() for n, t in self.momentum.items()}
        for kind, fps in (("fingerprint", self.recent_accepted), ("step", self.recent_steps)):
            for i, fp in enumerate(fps):
                tensors[f"{kind}/{i}/keys"] = fp.keys.contiguous()
                tensors[f"{kind}/{i}/values"] = fp.values.contiguous()
        return plain, tensors

    @classmethod
    def from_parts(cls, plain: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> ValidatorState:
        def fingerprints(kind: str, rows: list[Any]) -> tuple[UpdateFingerprint, ...]:
            return tuple(
                UpdateFingerprint(trainer=str(t), window=int(w), cid=str(cid), keys=tensors[f"{kind}/{i}/keys"],
                                  values=tensors[f"{kind}/{i}/values"])
                for i, (t, w, cid) in enumerate(rows))

        return cls(
            ratings={t: Rating(mu=float(mu), sigma=float(sigma)) for t, (mu, sigma) in plain["ratings"].items()},
            binary_avg={t: float(b) for t, b in plain["binary_avg"].items()},
            missed_windows={t: tuple(int(w) for w in ws) for t, ws in plain["missed_windows"].items()},
            recent_accepted=fingerprints("fingerprint", plain["recent_accepted"]),
            momentum={k.removeprefix("momentum/"): v for k, v in tensors.items() if k.startswith("momentum/")},
            last_window=plain["last_window"],
            # Absent in state files written before issue 13: start from nothing, as a new validator would.
            standing={t: Standing(*(float(x) for x in v)) for t, v in plain.get("standing", {}).items()},
            recent_steps=fingerprints("step", plain.get("recent_steps", [])),
        )
