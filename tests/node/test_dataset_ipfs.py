"""Dataset build -> publish -> fetch on a real IPFS daemon, with the on-disk shard cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ipfs.client import IpfsClient
from node.data import DatasetError, build_dataset, fetch_dataset, publish_dataset


class CountingStore:
    """The real client, counting what is fetched (to see the cache at work)."""

    def __init__(self, client: IpfsClient) -> None:
        self.client = client
        self.cats: list[str] = []

    def add(self, data: bytes) -> str:
        return str(self.client.add(data))

    def cat(self, cid: str, max_bytes: int) -> bytes:
        self.cats.append(cid)
        return bytes(self.client.cat(cid, max_bytes))


@pytest.fixture()
def store(ipfs_client: IpfsClient) -> CountingStore:
    """The session's daemon: the counts are this client's own requests, whatever else the daemon holds."""
    return CountingStore(ipfs_client)


def corpus() -> list[tuple[str, bytes]]:
    text = bytes(torch.randint(32, 127, (300_000,), generator=torch.Generator().manual_seed(3)).tolist())
    return [("a.py", text[:200_000]), ("b.py", text[200_000:])]


def test_round_trip_cache_reuse_and_corrupted_shard(store: CountingStore, tmp_path: Path) -> None:
    built = build_dataset(corpus(), shard_bytes=64 * 1024, heldout_fraction=0.2)
    root = publish_dataset(store, built)
    assert root.startswith("b")
    expected = built.to_dataset()

    store.cats.clear()
    ds = fetch_dataset(store, root, tmp_path)
    assert ds.root_cid == root
    assert torch.equal(ds.train, expected.train) and torch.equal(ds.heldout, expected.heldout)
    assert len(store.cats) == 1 + len(built.shards)

    # Second fetch: only the index travels, every shard comes from the cache.
    store.cats.clear()
    again = fetch_dataset(store, root, tmp_path)
    assert store.cats == [root]
    assert torch.equal(again.train, expected.train)

    # A corrupted cached shard is noticed by its sha256 and fetched again.
    victim = tmp_path / "shards" / built.entries[1].sha256
    victim.write_bytes(b"X" + victim.read_bytes()[1:])
    store.cats.clear()
    repaired = fetch_dataset(store, root, tmp_path)
    assert len(store.cats) == 2
    assert torch.equal(repaired.train, expected.train) and torch.equal(repaired.heldout, expected.heldout)
    assert victim.read_bytes() == built.shards[1]


def test_index_that_is_not_a_dataset_is_refused(store: CountingStore, tmp_path: Path) -> None:
    cid = store.add(b'{"format": "something else"}')
    with pytest.raises(DatasetError):
        fetch_dataset(store, cid, tmp_path)
