"""The IPFS client against a real js-ipfs daemon: round trips, CID verification, size caps, pins, failures, and
content that survives a daemon restart."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from base.process import free_port, port_open
from ipfs.cid import CHUNK_SIZE, DagVerifier, content_cid, parse_cid, raw_cid
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from ipfs.errors import CidMismatch, InvalidCid, IpfsTimeout, IpfsUnavailable, PayloadTooLarge


def test_version_answers(ipfs_client: IpfsClient) -> None:
    assert ipfs_client.version()


@pytest.mark.parametrize("size", [0, 1, 262_144, 262_145, 5_000_000])
def test_add_cat_round_trip_and_local_cid(ipfs_client: IpfsClient, size: int) -> None:
    data = os.urandom(size)
    cid = ipfs_client.add(data)
    assert cid == content_cid(data)
    assert cid.startswith("bafkrei" if size <= 262_144 else "bafybei")
    assert ipfs_client.cat(cid, max_bytes=size) == data


def test_multi_level_dag_matches_daemon(ipfs_client: IpfsClient, tmp_path: Path) -> None:
    # 175 leaves: the first size that needs a second level of dag-pb nodes.
    data = os.urandom(174 * 262_144 + 1)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    cid = ipfs_client.add(path)
    assert cid == content_cid(data)
    assert ipfs_client.cat(cid, max_bytes=len(data)) == data


def test_only_hash_adds_nothing(ipfs_client: IpfsClient) -> None:
    data = os.urandom(1000)
    cid = ipfs_client.add(data, only_hash=True)
    assert cid == raw_cid(data)
    with pytest.raises(IpfsTimeout):
        IpfsClient(ipfs_client.api_url, timeout=1.0, retries=0).cat(cid, max_bytes=2000)


def test_cat_stops_at_size_limit(ipfs_client: IpfsClient) -> None:
    data = os.urandom(3_000_000)
    cid = ipfs_client.add(data)
    with pytest.raises(PayloadTooLarge) as info:
        ipfs_client.cat(cid, max_bytes=1_000_000)
    assert info.value.limit == 1_000_000


def pinned(api_url: str, cid: str) -> bool:
    """The daemon's own `pin ls --type=recursive <cid>` (cat proves nothing: it serves unpinned blocks too)."""
    answer = httpx.post(f"{api_url}/api/v0/pin/ls", params={"arg": cid, "type": "recursive"}, timeout=10)
    if answer.status_code == 500 and "not pinned" in answer.text:
        return False
    answer.raise_for_status()
    return [entry["Type"] for entry in answer.json()["Keys"].values()] == ["recursive"]


def test_pin_add_and_rm(ipfs_client: IpfsClient) -> None:
    data = b"pinned payload " + os.urandom(16)  # content no other test of the session daemon added
    cid = ipfs_client.add(data, pin=False)
    assert not pinned(ipfs_client.api_url, cid)
    ipfs_client.pin_add(cid)
    assert pinned(ipfs_client.api_url, cid)
    ipfs_client.pin_rm(cid)
    assert not pinned(ipfs_client.api_url, cid)
    assert ipfs_client.cat(cid, max_bytes=100) == data  # unpinned is not deleted: only a GC would remove it
    assert pinned(ipfs_client.api_url, ipfs_client.add(data))  # add pins by default


def test_malformed_cid_is_refused_before_asking(ipfs_client: IpfsClient) -> None:
    for bad in ["", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "bafy!!", "b" + "a" * 100]:
        with pytest.raises(InvalidCid):
            ipfs_client.cat(bad, max_bytes=10)


def test_verifier_detects_tampered_bytes() -> None:
    data = os.urandom(600_000)
    cid = content_cid(data)
    tampered = bytearray(data)
    tampered[300_000] ^= 1
    verifier = DagVerifier()
    verifier.update(bytes(tampered))
    assert verifier.cid() != cid
    codec, digest = parse_cid(cid)
    assert codec == 0x70 and len(digest) == 32


def test_verifier_is_independent_of_how_the_stream_is_cut() -> None:
    data = os.urandom(3 * CHUNK_SIZE + 12_345)
    whole = content_cid(data)
    for piece in (1_000, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 7, 2 * CHUNK_SIZE + 3):
        verifier = DagVerifier()
        for start in range(0, len(data), piece):
            verifier.update(data[start : start + piece])
        assert verifier.cid() == whole, piece


def test_cid_mismatch_error_names_both() -> None:
    err = CidMismatch("bafkexpected", "bafkactual")
    assert "bafkexpected" in str(err) and "bafkactual" in str(err)


def test_daemon_down_is_a_clear_error() -> None:
    client = IpfsClient(f"http://127.0.0.1:{free_port()}", timeout=2.0, retries=1, backoff=0.01)
    with pytest.raises(IpfsUnavailable) as info:
        client.version()
    assert "unreachable" in str(info.value)


def test_content_survives_a_restart_under_a_retrying_client(tmp_path: Path) -> None:
    """A daemon stopped and started again on the same repo serves what was added before; while it is down, a
    client that retries gives up with IpfsUnavailable after its attempts, and the same client works again after."""
    data = os.urandom(600_000)
    daemon = IpfsDaemon(tmp_path / "repo").start()
    try:
        with IpfsClient(daemon.api_url, timeout=5.0, retries=1, backoff=0.05) as quick:
            cid = quick.add(data)
            daemon.stop()
            assert not daemon.running and not port_open(daemon.api_port)
            with pytest.raises(IpfsUnavailable, match="after 2 attempts"):
                quick.cat(cid, max_bytes=len(data))
            daemon.start()
            assert quick.cat(cid, max_bytes=len(data)) == data
    finally:
        daemon.stop()
    assert not daemon.running
