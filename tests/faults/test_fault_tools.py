"""The agreement scenarios' own tools, quickly: the proxy's content-based refusal against a real IPFS daemon,
recognising a trainer's payload by its manifest, and the copier's median (the contract's consensus rule)."""

from __future__ import annotations

import pytest
import torch

from base.run_config import RunConfig
from bench.faults.consensus import charge
from bench.faults.copier import revealed_median
from bench.faults.proxy import Fault, FaultPlan, FaultProxy
from bench.faults.withhold import Withheld, payload_manifest, refuses, schedule
from contracts.client import pack_weights
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from ipfs.errors import IpfsTimeout
from node.payloads import RunPayloads

VICTIM = "0x00000000000000000000000000000000000000aa"
OTHER = "0x00000000000000000000000000000000000000bb"
SPEC: dict[str, tuple[tuple[int, ...], str]] = {"w": ((4, 4), "float32")}


def payload(trainer: str, window: int) -> bytes:
    payloads = RunPayloads(RunConfig(), 7, SPEC)
    delta = {"w": torch.randn(4, 4)}
    return bytes(payloads.encode_contribution(delta, trainer, window, "bafkqaaa").data)


def test_a_payload_is_known_by_its_manifest_and_nothing_else_is() -> None:
    manifest = payload_manifest(payload(VICTIM, 5))
    assert manifest is not None and (manifest["trainer"], manifest["window"]) == (VICTIM, 5)
    for junk in (b"", b"\xff" * 8, b"\x10\x00\x00\x00\x00\x00\x00\x00{}", b'{"Version":"0.66"}'):
        assert payload_manifest(junk) is None


def test_the_schedule_comes_in_runs_and_each_validator_refuses_only_its_windows() -> None:
    plan = schedule(4, 7)
    assert [w.kind for w in plan] == ["one_validator"] * 3 + ["two_validators"] * 3 + ["one_validator"]
    only_v2 = [Withheld(5, "two_validators")]
    assert refuses(2, VICTIM, only_v2)(payload(VICTIM, 5))
    assert not refuses(1, VICTIM, only_v2)(payload(VICTIM, 5))  # validator 1 is served in that kind
    assert not refuses(2, VICTIM, only_v2)(payload(VICTIM, 6))  # another window
    assert not refuses(2, VICTIM, only_v2)(payload(OTHER, 5))  # another trainer


def test_the_proxy_refuses_one_trainers_payload_like_a_daemon_that_lacks_it(ipfs_daemon: IpfsDaemon) -> None:
    mine, theirs = payload(VICTIM, 3), payload(OTHER, 3)
    with IpfsClient(ipfs_daemon.api_url) as direct:
        mine_cid, theirs_cid = direct.add(mine), direct.add(theirs)
    with FaultProxy(ipfs_daemon.api_port) as proxy, \
            IpfsClient(proxy.url, timeout=2.0, retries=1, backoff=0.05) as client:
        withheld = refuses(1, VICTIM, [Withheld(3, "one_validator")])
        proxy.plan(FaultPlan(Fault.REFUSE, b"/api/v0/cat", when_body=withheld))
        assert client.cat(theirs_cid, max_bytes=len(theirs)) == theirs
        assert client.version()
        with pytest.raises(IpfsTimeout):  # the validator's fetch retries this until its deadline
            client.cat(mine_cid, max_bytes=len(mine))
        assert proxy.faults_applied == 1  # that request, and nothing else
        proxy.clear()
        assert client.cat(mine_cid, max_bytes=len(mine)) == mine


def test_the_copiers_median_is_the_contracts_consensus() -> None:
    # Stake 1, 1, 2 (total 4): a value counts once validators holding more than 2 give at least it.
    vectors = [(pack_weights([6, 2, 0]), 1), (pack_weights([4, 4, 0]), 1), (pack_weights([1, 1, 2]), 2)]
    median = revealed_median(vectors, 3)
    # Normalised: (.75,.25,0), (.5,.5,0), (.25,.25,.5) → per slot the largest value with stake > 2 at or above it:
    # slot 0: .25 (all); slot 1: .25; slot 2: 0 (only stake 2 gives .5) → (.5, .5, 0) after renormalising.
    assert median == [32768, 32767, 0] or median == [32767, 32768, 0]
    assert revealed_median([], 2) == [0, 0]


def test_findings_are_charged_to_the_fault_in_force() -> None:
    starts = [4, 7, 9]
    assert [charge(starts, w) for w in (2, 4, 6, 7, 8, 9, 30)] == [0, 0, 0, 1, 1, 2, 2]
