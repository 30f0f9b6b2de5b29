"""Errors of the chain side: compiling, reaching the RPC, and contract reverts decoded to their custom error."""

from __future__ import annotations

from typing import Any

from base.errors import TrainmarketError


class ChainError(TrainmarketError):
    """Base of every chain-side error."""


class CompileError(ChainError):
    """solc reported errors, or the committed artifact is missing."""


class ChainUnreachable(ChainError):
    """The JSON-RPC endpoint did not answer."""

    temporary = True

    def __init__(self, rpc_url: str, reason: str = "") -> None:
        self.rpc_url = rpc_url
        self.reason = reason
        super().__init__(f"chain RPC at {rpc_url} is unreachable" + (f": {reason}" if reason else ""))


class DeploymentError(ChainError):
    """A deployment file is missing or invalid, or no contract lives at its address."""


class TransactionFailed(ChainError):
    """A transaction was mined but failed without a decodable custom error (e.g. out of gas)."""

    def __init__(self, function: str, tx_hash: str, reason: str) -> None:
        self.function = function
        self.tx_hash = tx_hash
        super().__init__(f"{function} failed (tx {tx_hash}): {reason}")


class RevertedOnChain(TransactionFailed):
    """Passed estimation, reverted when mined: the state moved in between (e.g. a window boundary passed, or a
    rival's transaction did the same thing first in the same block)."""


class SendConflict(TransactionFailed):
    """Another transaction of the same account took the nonce at every attempt (the user's own wallet or `node
    claim` sending from the key meanwhile). Temporary: the effect is not on chain, and a later try may land."""

    temporary = True


class TransactionPending(ChainError):
    """A journalled transaction was broadcast but not mined within the wait; it may still be mined. Not a
    failure: the journal holds its hash, so the next attempt waits for that transaction instead of sending
    another. Temporary."""

    temporary = True

    def __init__(self, function: str, tx_hash: str, reason: str) -> None:
        self.function = function
        self.tx_hash = tx_hash
        super().__init__(f"{function} is pending (tx {tx_hash}): {reason}")


class ContractReverted(ChainError):
    """A call reverted with one of the contract's custom errors; `error_name` and `error_args` say which."""

    def __init__(self, error_name: str, args: dict[str, Any], function: str) -> None:
        super().__init__(f"{function} reverted with {error_name}({_format_args(args)})")
        self.error_name = error_name
        self.error_args = args  # `args` itself is Exception's tuple
        self.function = function

    def plain(self) -> str:
        """One sentence for a user: which call failed, and why, in words."""
        words = "".join(" " + c.lower() if c.isupper() else c for c in self.error_name).strip()
        detail = f" ({_format_args(self.error_args)})" if self.error_args else ""
        return f"The contract refused {self.function}: {words}{detail}."


def _format_args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v.hex() if isinstance(v, bytes) else v}" for k, v in args.items())
