"""What the validator's store refuses, each with the context a log line needs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from base.errors import TrainmarketError


class StoreError(TrainmarketError):
    """The validator's state file refused an operation."""


class StoreWriteError(StoreError):
    """SQLite refused a write (a constraint, a full disk); the whole transaction was rolled back."""

    def __init__(self, path: Path, cause: sqlite3.Error) -> None:
        self.path, self.cause = path, cause
        super().__init__(f"{path}: write rolled back: {cause}")


class SchemaVersionError(StoreError):
    def __init__(self, path: Path, found: int, supported: int) -> None:
        self.path, self.found, self.supported = path, found, supported
        super().__init__(
            f"{path} has schema version {found}, this validator understands up to {supported}: "
            "upgrade trainmarket (the file was written by a newer version)"
        )


class WindowAlreadyRecordedError(StoreError):
    def __init__(self, window: int, status: str) -> None:
        self.window, self.status = window, status
        super().__init__(f"window {window} is already {status}; scoring it again would apply its ratings twice")


class UnknownWindowError(StoreError):
    def __init__(self, window: int) -> None:
        self.window = window
        super().__init__(f"window {window} has not been recorded")


class InvalidRecordError(StoreError):
    """A record handed to the store carries an empty trainer, a non-number or a non-finite number."""

    def __init__(self, what: str, problem: str) -> None:
        self.what, self.problem = what, problem
        super().__init__(f"{what}: {problem}")


class TxStateError(StoreError):
    def __init__(self, kind: str, key: str, problem: str) -> None:
        self.kind, self.key = kind, key
        super().__init__(f"tx {kind}/{key}: {problem}")
