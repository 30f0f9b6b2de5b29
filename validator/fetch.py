"""Fetching a window's revealed payloads: concurrently, each retried until its own deadline.

Every honest validator handles a payload it cannot get the same way: it keeps trying until the run's stated
deadline (`RunConfig.payload_fetch_seconds`, counted from that payload's first attempt, so a payload queued
behind others is never judged before it was tried for the whole deadline), then records the payload as
unavailable and reports it on chain (`reportUnavailable`); once reporters holding more than half of the epoch's
voting stake agree, the contract counts it as a missed reveal, slashable by the same rule. A payload that some
validators fetched and others did not only makes their aggregates differ, and the canonical model (validator/
canonical.py) decides which one every party builds on, so withholding cannot fork the run.

What the fetch cannot tell from a payload's absence stays out of the report: the detail is fixed text, since a
local error (timeout, daemon URL, seconds) would make two validators' reports differ over something that is not
a property of the payload. A local daemon that is down is not the trainers' fault: the window waits for it."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from base.errors import TrainmarketError
from ipfs.errors import InvalidCid, IpfsUnavailable, PayloadTooLarge

log = logging.getLogger(__name__)

FETCH_WORKERS = 8
RETRY_PAUSE_S = 0.5


class PayloadSource(Protocol):
    def cat(self, cid: str, max_bytes: int) -> bytes: ...

    def version(self) -> str: ...


class Failure(StrEnum):
    TOO_LARGE = "too_large"  # a property of the payload: malformed
    BAD_CID = "bad_cid"  # likewise
    UNAVAILABLE = "unavailable"  # nobody served it before the deadline


@dataclass(frozen=True)
class Fetched:
    trainer: str
    cid: str
    data: bytes | None
    failure: Failure | None = None


def _fetch_until(source: PayloadSource, trainer: str, cid: str, max_bytes: int, deadline_s: float) -> Fetched:
    stop_at = time.monotonic() + deadline_s
    while True:
        try:
            return Fetched(trainer, cid, source.cat(cid, max_bytes))
        except PayloadTooLarge:
            return Fetched(trainer, cid, None, Failure.TOO_LARGE)
        except InvalidCid:
            return Fetched(trainer, cid, None, Failure.BAD_CID)
        except TrainmarketError as err:
            log.info("payload %s of %s not fetched yet: %s", cid, trainer, err)
            if time.monotonic() + RETRY_PAUSE_S >= stop_at:
                return Fetched(trainer, cid, None, Failure.UNAVAILABLE)
            time.sleep(RETRY_PAUSE_S)


def fetch_payloads(source: PayloadSource, reveals: Sequence[tuple[str, str]], max_bytes: int,
                   deadline_s: float) -> list[Fetched]:
    """(trainer, CID) pairs → what was fetched, in the order given. The fetches run on FETCH_WORKERS threads;
    each is retried until `deadline_s` after its own first attempt (one attempt is bounded by the IPFS client's
    timeouts), so k withheld payloads cost the window about ⌈k / FETCH_WORKERS⌉ deadlines. Raises
    IpfsUnavailable when the local daemon itself is down."""
    with ThreadPoolExecutor(max_workers=FETCH_WORKERS, thread_name_prefix="payload-fetch") as pool:
        futures = [pool.submit(_fetch_until, source, t, cid, max_bytes, deadline_s) for t, cid in reveals]
        out = [f.result() for f in futures]
    if any(f.failure == Failure.UNAVAILABLE for f in out):
        try:
            source.version()  # is it the payloads, or our own daemon?
        except TrainmarketError as err:
            raise IpfsUnavailable(getattr(source, "api_url", "the IPFS daemon"),
                                  f"the local daemon is down ({err}); the window waits for it") from err
    return out
