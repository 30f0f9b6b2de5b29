"""IPFS faults: the daemon stopped and restarted under a working client, and a proxy that makes its answers
slow, silent, cut or corrupted.

Ground truth is the bytes the bench itself generated: an add is acknowledged only with the CID computed
locally from those bytes (`content_cid`), and after every fault every acknowledged payload is fetched again
and compared byte for byte. `lost` counts acknowledged payloads that are gone or come back different, and
bytes a `cat` returned that differ from the truth (a corrupted payload handed on); `double_applied` counts
acknowledgements under a CID other than the content's own (the same payload stored under two names). An
operation that is neither answered nor refused with an IpfsError within its bound counts as not recovered."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

from base.errors import ProcessStartError
from bench.faults import FaultOutcome, ScenarioFn
from bench.faults.proxy import Fault, FaultPlan, FaultProxy
from ipfs.cid import content_cid
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from ipfs.errors import IpfsError

PAYLOAD_BYTES = 600_000  # three 256 KiB leaves: a real DAG, verified by DagVerifier
WORKER_PAYLOAD_BYTES = 300_000  # two leaves; the restart worker adds many, and every fault re-reads them all
WORKER_PAUSE_S = 0.5
RECOVERY_BOUND_S = 90.0


class _Truth:
    """The payloads acknowledged so far and the checks against them."""

    def __init__(self) -> None:
        self.acked: dict[str, bytes] = {}
        self.misnamed = 0  # acknowledged under a CID that is not the content's
        self.corrupt_returned = 0

    def add(self, client: IpfsClient, data: bytes) -> str:
        cid = client.add(data)
        if cid != content_cid(data):
            self.misnamed += 1
        else:
            self.acked[cid] = data
        return cid

    def cat(self, client: IpfsClient, cid: str) -> bytes:
        data = client.cat(cid, max_bytes=2 * PAYLOAD_BYTES)
        if data != self.acked.get(cid):
            self.corrupt_returned += 1
        return data

    def missing(self, client: IpfsClient) -> int:
        """Acknowledged payloads that cannot be fetched intact now."""
        gone = 0
        for cid, data in list(self.acked.items()):
            try:
                if client.cat(cid, max_bytes=2 * PAYLOAD_BYTES) != data:
                    gone += 1
            except IpfsError:
                gone += 1
        return gone


class _Worker(threading.Thread):
    """A caller that keeps adding and reading back payloads, recording failures and trying again (as the
    trainer's outage loop does) until told to stop."""

    def __init__(self, client: IpfsClient, truth: _Truth, rng: random.Random) -> None:
        super().__init__(name="ipfs-worker", daemon=True)
        self.client, self.truth, self.rng = client, truth, rng
        self.successes = 0
        self.failures: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                cid = self.truth.add(self.client, self.rng.randbytes(WORKER_PAYLOAD_BYTES))
                self.truth.cat(self.client, cid)
                self.successes += 1
                self.stop_event.wait(WORKER_PAUSE_S)
            except IpfsError as err:
                self.failures.append(type(err).__name__)
                self.stop_event.wait(0.2)

    def wait_successes(self, count: int, bound_s: float) -> bool:
        deadline = time.monotonic() + bound_s
        while self.successes < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.successes >= count


def ipfs_restart(faults: int, rng: random.Random, workdir: Path) -> list[FaultOutcome]:
    """Each fault: stop the daemon while the worker adds and reads, wait a moment, start it again on the same
    repo and port. Recovered: the worker completes two more round trips and every acknowledged payload is
    still there, intact."""
    outcomes: list[FaultOutcome] = []
    daemon = IpfsDaemon(workdir / "repo").start()
    truth = _Truth()
    with IpfsClient(daemon.api_url, timeout=5.0, retries=2, backoff=0.2) as client, \
            IpfsClient(daemon.api_url, timeout=10.0, retries=1) as checker:
        worker = _Worker(client, truth, random.Random(rng.random()))
        worker.start()
        try:
            worker.wait_successes(1, RECOVERY_BOUND_S)
            for _ in range(faults):
                before = (truth.missing(checker), truth.misnamed, truth.corrupt_returned, len(worker.failures))
                time.sleep(rng.uniform(0.0, 0.3))  # land somewhere inside an add or a cat
                t0 = time.monotonic()
                daemon.stop()
                time.sleep(rng.uniform(0.0, 0.5))
                start_error = _start(daemon)
                recovered = not start_error and worker.wait_successes(worker.successes + 2, RECOVERY_BOUND_S)
                lost = truth.missing(checker) - before[0] + truth.corrupt_returned - before[2]
                outcomes.append(FaultOutcome(
                    "ipfs_restart", "daemon stopped and restarted mid-operation", recovered=recovered and lost == 0,
                    lost=lost, double_applied=truth.misnamed - before[1],
                    detail=f"{start_error}caller saw {len(worker.failures) - before[3]} failed operations, back after "
                           f"{time.monotonic() - t0:.1f}s; {len(truth.acked)} payloads acknowledged in all"))
        finally:
            worker.stop_event.set()
            worker.join(timeout=RECOVERY_BOUND_S)
            daemon.stop()
    return outcomes


def _start(daemon: IpfsDaemon) -> str:
    """Start the daemon again; a start that fails (seen once under heavy load: js-ipfs silent for 60 s) is
    reported and tried once more, so one bad start costs one fault, not the campaign."""
    try:
        daemon.start()
    except ProcessStartError as err:
        daemon.stop()
        daemon.start()
        return f"first restart failed ({err.reason}); "
    return ""


# (name, plan, operation, the fault outlasts the retries)
SLOW_FAULTS: tuple[tuple[str, FaultPlan, str, bool], ...] = (
    ("cat answer slow but in time", FaultPlan(Fault.DELAY, b"/cat", 1, delay_s=0.6), "cat", False),
    ("cat stalls once", FaultPlan(Fault.STALL, b"/cat", 1), "cat", False),
    ("cat connection cut mid-answer", FaultPlan(Fault.CUT, b"/cat", 1, after_bytes=5000), "cat", False),
    ("cat body truncated, cleanly framed", FaultPlan(Fault.TRUNCATE_BODY, b"/cat", 1, after_bytes=300_000), "cat",
     False),
    ("cat body corrupted by one bit", FaultPlan(Fault.CORRUPT_BODY, b"/cat", 2, after_bytes=400_000), "cat", False),
    ("add request dropped", FaultPlan(Fault.DROP_REQUEST, b"/add", 1), "add", False),
    ("add answer truncated", FaultPlan(Fault.TRUNCATE_BODY, b"/add", 1, after_bytes=12), "add", False),
    ("cat always truncated", FaultPlan(Fault.TRUNCATE_BODY, b"/cat", after_bytes=262_144), "cat", True),
    ("cat always stalls", FaultPlan(Fault.STALL, b"/cat"), "cat", True),
    ("cat drips one byte at a time", FaultPlan(Fault.DRIP, b"/cat", delay_s=0.3), "cat", True),
    ("add answer always cut", FaultPlan(Fault.CUT, b"/add"), "add", True),
    ("cat always corrupted", FaultPlan(Fault.CORRUPT_BODY, b"/cat", after_bytes=1000), "cat", True),
)
SLOW_TIMEOUT_S, SLOW_RETRIES, SLOW_BACKOFF_S, SLOW_DEADLINE_S = 1.0, 2, 0.05, 2.5
# The longest a call may take: every attempt at its deadline, plus the backoffs, plus scheduling slack.
SLOW_BOUND_S = (SLOW_RETRIES + 1) * SLOW_DEADLINE_S + SLOW_RETRIES * 0.1 + 5.0


def ipfs_slow_proxy(faults: int, rng: random.Random, workdir: Path) -> list[FaultOutcome]:
    """Each fault: arm one proxy fault and run one add or cat through it. A fault that passes within the retries
    must give the right answer; one that outlasts them must end in an IpfsError within SLOW_BOUND_S, return no
    bytes, and the same call must succeed once the proxy behaves."""
    outcomes: list[FaultOutcome] = []
    truth = _Truth()
    with IpfsDaemon(workdir / "repo") as daemon, FaultProxy(daemon.api_port) as proxy, \
            IpfsClient(proxy.url, SLOW_TIMEOUT_S, SLOW_RETRIES, SLOW_BACKOFF_S, SLOW_DEADLINE_S) as client, \
            IpfsClient(daemon.api_url, timeout=10.0, retries=1) as checker:
        stored = truth.add(checker, os.urandom(PAYLOAD_BYTES))
        for i in range(faults):
            name, plan, op, persistent = SLOW_FAULTS[i % len(SLOW_FAULTS)] if i < len(SLOW_FAULTS) \
                else rng.choice(SLOW_FAULTS)
            before = (truth.missing(checker), truth.misnamed, truth.corrupt_returned)
            data = os.urandom(PAYLOAD_BYTES)
            call = (lambda d=data: truth.add(client, d)) if op == "add" else (lambda: truth.cat(client, stored))
            proxy.plan(plan)
            applied = proxy.faults_applied
            t0 = time.monotonic()
            try:
                call()
                result = "answered"
            except IpfsError as err:
                result = f"{type(err).__name__}: {err}"[:200]
            elapsed = time.monotonic() - t0
            hit = proxy.faults_applied - applied
            proxy.clear()
            expected = result.startswith("Ipfs") or result.startswith("CidMismatch") if persistent \
                else result == "answered"
            try:
                call()  # the same call once the proxy behaves: nothing stays broken
                after = "then answered"
            except IpfsError as err:
                after = f"then still {type(err).__name__}"
            lost = truth.missing(checker) - before[0] + truth.corrupt_returned - before[2]
            outcomes.append(FaultOutcome(
                "ipfs_slow_proxy", name,
                recovered=expected and hit > 0 and elapsed <= SLOW_BOUND_S and after == "then answered",
                lost=lost, double_applied=truth.misnamed - before[1],
                detail=f"{result} in {elapsed:.1f}s (bound {SLOW_BOUND_S:.1f}s), fault hit {hit}x, {after}"))
    return outcomes


SCENARIOS: dict[str, ScenarioFn] = {"ipfs_restart": ipfs_restart, "ipfs_slow_proxy": ipfs_slow_proxy}
