"""validator/fetch.py on a scripted payload source: which payloads count as unavailable, and when."""

from __future__ import annotations

import threading
import time

import pytest

from ipfs.errors import InvalidCid, IpfsTimeout, IpfsUnavailable, PayloadTooLarge
from validator.fetch import FETCH_WORKERS, Failure, fetch_payloads


class Source:
    """Serves every CID after `delay` s except the withheld ones (a timeout each try), the oversized and the
    forged; `down` makes the daemon itself unreachable."""

    def __init__(self, delay: float = 0.0, withheld: frozenset[str] = frozenset(), down: bool = False) -> None:
        self.delay, self.withheld, self.down = delay, withheld, down  # delay: of a served payload
        self.first_try: dict[str, float] = {}
        self.lock = threading.Lock()

    def cat(self, cid: str, max_bytes: int) -> bytes:
        with self.lock:
            self.first_try.setdefault(cid, time.monotonic())
        if self.down or cid in self.withheld:
            time.sleep(0.01)
            raise IpfsTimeout("http://127.0.0.1:5001", f"cat {cid}", 0.05)
        if cid == "big":
            raise PayloadTooLarge(cid, max_bytes)
        if cid == "forged":
            raise InvalidCid(cid, "content does not match")
        time.sleep(self.delay)
        return cid.encode()

    def version(self) -> str:
        if self.down:
            raise IpfsUnavailable("http://127.0.0.1:5001", "connection refused")
        return "test"


def test_served_payloads_queued_past_the_deadline_are_still_fetched() -> None:
    # Every worker first meets a withheld payload and keeps it for the deadline; the served ones then take two
    # rounds of 0.4 s, ending after the deadline: they must still come back (they were judged unavailable
    # untried before).
    withheld = frozenset(f"w{i}" for i in range(FETCH_WORKERS))
    served = [f"s{i}" for i in range(2 * FETCH_WORKERS)]
    reveals = [(f"t{i}", f"w{i}") for i in range(FETCH_WORKERS)] + [(cid, cid) for cid in served]
    source = Source(delay=0.4, withheld=withheld)
    started = time.monotonic()
    got = fetch_payloads(source, reveals, 1 << 20, deadline_s=0.6)
    assert time.monotonic() - started > 0.6 + 0.5  # past the deadline and the last retry pause
    assert [g.trainer for g in got] == [t for t, _ in reveals]  # in the order given
    assert {g.cid: g.failure for g in got if g.cid in withheld} == dict.fromkeys(withheld, Failure.UNAVAILABLE)
    assert {g.cid: g.data for g in got if g.cid in served} == {cid: cid.encode() for cid in served}


def test_a_withheld_payload_is_tried_for_the_whole_deadline_from_its_first_attempt() -> None:
    source = Source(withheld=frozenset({"w"}))
    started = time.monotonic()
    (got,) = fetch_payloads(source, [("t", "w")], 1 << 20, deadline_s=1.2)
    assert got.failure == Failure.UNAVAILABLE and got.data is None
    assert time.monotonic() - source.first_try["w"] >= 1.2 - 0.5  # the last retry starts within one pause
    assert time.monotonic() - started < 1.2 + 2.0


def test_properties_of_the_payload_fail_at_once_and_are_not_unavailability() -> None:
    started = time.monotonic()
    got = fetch_payloads(Source(), [("a", "big"), ("b", "forged")], 1 << 20, deadline_s=30.0)
    assert [g.failure for g in got] == [Failure.TOO_LARGE, Failure.BAD_CID]
    assert time.monotonic() - started < 5.0  # no retrying


def test_a_local_daemon_that_is_down_is_not_blamed_on_the_trainers() -> None:
    with pytest.raises(IpfsUnavailable, match="local daemon is down"):
        fetch_payloads(Source(down=True), [("t", "c")], 1 << 20, deadline_s=0.2)
