"""Which errors a long-running loop (the trainer's `run`, a population host's identities, the validator's `run`)
waits out, and which end it: one marker, `TrainmarketError.temporary`, read by `is_temporary`. This pins the
list, so that changing it is a decision, not an accident."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import base
import contracts
import ipfs
import node
import tensors
import validator
from base.errors import TrainmarketError, is_temporary
from contracts.errors import ChainUnreachable, SendConflict, TransactionFailed, TransactionPending
from ipfs.errors import CidMismatch, IpfsBadResponse, IpfsRequestFailed, IpfsTimeout, IpfsUnavailable

TEMPORARY = {ChainUnreachable, TransactionPending, SendConflict, IpfsUnavailable, IpfsTimeout, IpfsBadResponse,
             IpfsRequestFailed, CidMismatch}


def all_errors() -> set[type[TrainmarketError]]:
    found: set[type[TrainmarketError]] = set()
    for package in (base, contracts, ipfs, tensors, node, validator):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith(("__main__", "ddp_worker")):
                continue
            module = importlib.import_module(info.name)
            found |= {c for _, c in inspect.getmembers(module, inspect.isclass)
                      if issubclass(c, TrainmarketError) and c.__module__ == module.__name__}
    return found


def test_the_temporary_errors_are_exactly_these() -> None:
    errors = all_errors()
    assert errors >= TEMPORARY
    assert {e for e in errors if e.temporary} == TEMPORARY


def test_is_temporary_reads_the_marker_of_instances_only_of_project_errors() -> None:
    assert is_temporary(ChainUnreachable("http://127.0.0.1:1"))
    assert is_temporary(TransactionPending("commit", "0xab", "not mined"))
    assert not is_temporary(TransactionFailed("commit", "0xab", "reverted"))
    assert not is_temporary(TrainmarketError("anything else"))
    assert not is_temporary(OSError("not ours: the client converts it first"))


def test_a_pending_transaction_is_not_a_failed_one() -> None:
    """Handlers of failure (`except TransactionFailed`) must not swallow "still pending": the journal holds its
    hash, and the next attempt waits for it."""
    assert not issubclass(TransactionPending, TransactionFailed)
