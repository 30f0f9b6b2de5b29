"""The project's root exception. Every package derives its precise errors from it, so a caller can
catch `TrainmarketError` at the edge (CLI, service) and let everything else propagate."""

from __future__ import annotations


class TrainmarketError(Exception):
    """Root of every error this project raises on purpose.

    `temporary` marks the errors a long-running loop (the trainer's, the validator's) waits out and retries
    from its stored state: the chain or IPFS did not answer, answered garbage, or a transaction is still in
    flight. Everything else ends the loop. The one list of them is the set of subclasses that say True."""

    temporary: bool = False


def is_temporary(err: BaseException) -> bool:
    """True for an error a loop should wait out and retry (see `TrainmarketError.temporary`)."""
    return isinstance(err, TrainmarketError) and err.temporary


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
