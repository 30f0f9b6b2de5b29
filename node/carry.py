"""What a trainer carries from one window to the next: the error-feedback residual and the inner AdamW
moments, saved together in one safetensors file (never pickle), atomically (temp file, then rename).

When to start afresh: a new run has its own node home (the journal refuses another run), so it never sees
this file. A node that was away longer than the run's staleness horizon re-synchronises: the residual is
what the codec dropped from updates to models that no validator accepts any more, and the moments describe
a trajectory several outer steps old, so both are dropped (`reset_if_behind`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from node.train import ErrorFeedback, InnerLoopError, InnerOptimizerState

_KINDS = ("residual", "exp_avg", "exp_avg_sq")


@dataclass
class CarriedState:
    """The trainer's state between windows; `window` is the last window it was updated by (None: fresh)."""

    feedback: ErrorFeedback
    optimizer: InnerOptimizerState = field(default_factory=InnerOptimizerState)
    window: int | None = None

    @classmethod
    def fresh(cls, decay: float) -> CarriedState:
        return cls(ErrorFeedback(decay))

    def reset_if_behind(self, window: int, max_gap: int) -> bool:
        """Start afresh when the last window this state saw is more than `max_gap` windows before `window`."""
        if self.window is None or window - self.window <= max_gap:
            return False
        self.feedback = ErrorFeedback(self.feedback.decay)
        self.optimizer = InnerOptimizerState()
        self.window = None
        return True

    def save(self, path: Path) -> None:
        tensors = {f"residual/{n}": t.contiguous() for n, t in self.feedback.residual.items()}
        tensors |= {f"exp_avg/{n}": t.contiguous() for n, t in self.optimizer.exp_avg.items()}
        tensors |= {f"exp_avg_sq/{n}": t.contiguous() for n, t in self.optimizer.exp_avg_sq.items()}
        meta = {"steps": str(self.optimizer.steps), "window": "" if self.window is None else str(self.window)}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, decay: float) -> CarriedState:
        """The saved state, or a fresh one when no file exists."""
        if not path.exists():
            return cls.fresh(decay)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                parts: dict[str, dict] = {kind: {} for kind in _KINDS}
                for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                    kind, _, name = key.partition("/")
                    if kind not in parts:
                        raise InnerLoopError(f"{path}: unknown entry {key!r}")
                    parts[kind][name] = f.get_tensor(key).float()
            steps = int(meta.get("steps", "0"))
            window = int(meta["window"]) if meta.get("window") else None
        except (OSError, ValueError, SafetensorError) as err:
            raise InnerLoopError(f"trainer state {path} is unreadable: {err}") from err
        optimizer = InnerOptimizerState(steps=steps, exp_avg=parts["exp_avg"], exp_avg_sq=parts["exp_avg_sq"])
        return cls(ErrorFeedback(decay, residual=parts["residual"]), optimizer, window)
