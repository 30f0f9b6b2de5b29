"""IPFS faults on a real js-ipfs daemon through the real fault proxy: transient faults are retried to the right
answer; lasting ones end in a clear IpfsError within the client's bound and no bytes are handed on; a clean but
truncated or corrupted body is caught by CID verification. (Content surviving a daemon restart, with a retrying
client while it is down: tests/ipfs/test_client.py.)"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from bench.faults.ipfs import SLOW_FAULTS
from bench.faults.proxy import Fault, FaultPlan, FaultProxy
from ipfs.cid import content_cid
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from ipfs.errors import CidMismatch, IpfsBadResponse, IpfsError, IpfsTimeout, IpfsUnavailable

pytestmark = pytest.mark.slow
DATA = os.urandom(600_000)


@pytest.fixture(scope="module")
def proxy(ipfs_daemon: IpfsDaemon) -> Iterator[FaultProxy]:
    with FaultProxy(ipfs_daemon.api_port) as running:
        yield running


@pytest.fixture()
def client(proxy: FaultProxy) -> Iterator[IpfsClient]:
    proxy.clear()
    with IpfsClient(proxy.url, timeout=1.0, retries=2, backoff=0.05, deadline=2.0) as through_proxy:
        yield through_proxy
    proxy.clear()


@pytest.fixture(scope="module")
def stored(ipfs_daemon: IpfsDaemon) -> str:
    with IpfsClient(ipfs_daemon.api_url) as direct:
        return direct.add(DATA)


@pytest.mark.parametrize("name,plan,op", [(n, p, o) for n, p, o, lasting in SLOW_FAULTS if not lasting])
def test_transient_faults_are_retried_to_the_right_answer(
    client: IpfsClient, proxy: FaultProxy, stored: str, name: str, plan: FaultPlan, op: str
) -> None:
    proxy.plan(plan)
    if op == "cat":
        assert client.cat(stored, max_bytes=len(DATA)) == DATA, name
    else:
        data = os.urandom(1000)
        assert client.add(data) == content_cid(data), name
    assert proxy.faults_applied > 0


@pytest.mark.parametrize("fault,error", [
    (Fault.TRUNCATE_BODY, CidMismatch),
    (Fault.CORRUPT_BODY, CidMismatch),
    (Fault.STALL, IpfsTimeout),
    (Fault.DRIP, IpfsTimeout),
    (Fault.CUT, IpfsUnavailable),
])
def test_lasting_faults_end_in_a_clear_error_within_the_bound(
    client: IpfsClient, proxy: FaultProxy, stored: str, fault: Fault, error: type[IpfsError]
) -> None:
    proxy.plan(FaultPlan(fault, b"/cat", delay_s=0.25, after_bytes=300_000))
    started = time.monotonic()
    with pytest.raises(error):
        client.cat(stored, max_bytes=len(DATA))
    # three attempts, each at most its 2 s deadline, plus backoff and slack for a loaded machine
    assert time.monotonic() - started < 3 * 2.0 + 4.0
    assert client.attempts_failed == 3
    proxy.clear()
    assert client.cat(stored, max_bytes=len(DATA)) == DATA


def test_a_cut_add_answer_is_a_project_error_not_a_json_crash(client: IpfsClient, proxy: FaultProxy) -> None:
    proxy.plan(FaultPlan(Fault.TRUNCATE_BODY, b"/add", after_bytes=12))
    with pytest.raises(IpfsBadResponse):
        client.add(b"never acknowledged")
