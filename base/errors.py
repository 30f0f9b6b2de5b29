"""The project's root exception. Every package derives its precise errors from it, so a caller can
catch `TrainmarketError` at the edge (CLI, service) and let everything else propagate."""

from __future__ import annotations


class TrainmarketError(Exception):
    """Root of every error this project raises on purpose."""


class ToolMissingError(TrainmarketError):
    """An external program the project manages (anvil, solc, js-ipfs) is not installed."""

    def __init__(self, tool: str, path: str, hint: str = "run `make setup`") -> None:
        self.tool = tool
        self.path = path
        super().__init__(f"{tool} not found at {path}: {hint}")


class ProcessStartError(TrainmarketError):
    """A managed process exited or never became ready."""

    def __init__(self, name: str, reason: str, log_tail: str = "") -> None:
        self.name = name
        self.reason = reason
        self.log_tail = log_tail
        detail = f"\n--- last output of {name} ---\n{log_tail}" if log_tail else ""
        super().__init__(f"{name} failed to start: {reason}{detail}")
