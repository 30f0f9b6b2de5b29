"""Dataset building, split and data assignment (pure parts; IPFS round trip in test_dataset_ipfs.py)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from node.data import (
    FILE_SEPARATOR,
    DatasetError,
    assigned_batches,
    assignment_offsets,
    build_dataset,
    collect_default_text,
    collect_text,
    default_sources,
    heldout_batches,
    parse_index,
)

ADDRESSES = [f"0x{i:040x}" for i in range(1, 21)]


def random_corpus(n_bytes: int, seed: int = 0) -> list[tuple[str, bytes]]:
    data = torch.randint(32, 127, (n_bytes,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return [("corpus.txt", bytes(data.tolist()))]


def test_collect_text_is_ordered_and_skips_binaries(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.py").write_text("z = 1\n")
    (tmp_path / "b" / "a.py").write_text("a = 1\n")
    (tmp_path / "a.txt").write_text("héllo\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    (tmp_path / "skipme").mkdir()
    (tmp_path / "skipme" / "x.py").write_text("x = 1\n")
    found = list(collect_text([tmp_path], skip_dirs={"skipme"}))
    root = tmp_path.name
    assert [p for p, _ in found] == [f"{root}/a.txt", f"{root}/b/a.py", f"{root}/b/z.py"]
    assert found[0][1] == "héllo\n".encode()
    assert [p for p, _ in collect_text([tmp_path], suffixes=(".py",))] == [
        f"{root}/b/a.py",
        f"{root}/b/z.py",
        f"{root}/skipme/x.py",
    ]
    assert list(collect_text([tmp_path / "a.txt"])) == [("a.txt", "héllo\n".encode())]
    with pytest.raises(DatasetError):
        list(collect_text([tmp_path / "missing"]))


def test_default_source_is_the_interpreters_stdlib() -> None:
    stdlib = default_sources()[0]
    assert (stdlib / "os.py").is_file()
    first = list(itertools.islice(collect_default_text(), 30))
    assert len(first) == 30
    assert all(p.endswith(".py") and "site-packages" not in p for p, _ in first)


def test_build_cuts_fixed_shards_and_a_deterministic_split() -> None:
    texts = [("a", b"x" * 250), ("b", b"y" * 130)]
    built = build_dataset(texts, shard_bytes=100, heldout_fraction=0.2)
    total = 250 + len(FILE_SEPARATOR) + 130
    assert [len(s) for s in built.shards] == [100, 100, 100, 82]
    assert b"".join(built.shards) == b"x" * 250 + FILE_SEPARATOR + b"y" * 130
    index = built.index()
    assert index["total_tokens"] == total and index["n_files"] == 2
    assert [e.split for e in built.entries].count("heldout") == 1
    assert build_dataset(texts, shard_bytes=100, heldout_fraction=0.2).entries == built.entries
    ds = built.to_dataset()
    assert ds.total_tokens == total and ds.train.dtype == torch.uint8
    with pytest.raises(DatasetError):
        build_dataset([("a", b"tiny")], shard_bytes=100)


def test_heldout_never_overlaps_train() -> None:
    # Each shard is one repeated byte value, so a token's value names the shard it came from.
    blocks = [bytes([65 + i]) * 100 for i in range(20)]
    built = build_dataset([("t", b"".join(blocks))], shard_bytes=100, heldout_fraction=0.1)
    heldout_values = {65 + i for i, e in enumerate(built.entries) if e.split == "heldout"}
    train_values = {65 + i for i, e in enumerate(built.entries) if e.split == "train"}
    assert len(heldout_values) == 2 and not heldout_values & train_values
    ds = built.to_dataset()
    assert set(ds.heldout.tolist()) == heldout_values and set(ds.train.tolist()) == train_values
    for w in range(5):
        assert set(assigned_batches(ds, 1, ADDRESSES[w], w, 16, 20).flatten().tolist()) <= train_values
        assert set(heldout_batches(ds, bytes([w]) * 32, 16, 20).flatten().tolist()) <= heldout_values


def test_assignment_is_deterministic_and_case_insensitive() -> None:
    ds = build_dataset(random_corpus(200_000), shard_bytes=20_000).to_dataset()
    a = assigned_batches(ds, 7, ADDRESSES[0], 3, 8, 32)
    assert a.shape == (8, 33) and a.dtype == torch.long
    assert torch.equal(a, assigned_batches(ds, 7, ADDRESSES[0].upper().replace("0X", "0x"), 3, 8, 32))
    assert not torch.equal(a, assigned_batches(ds, 7, ADDRESSES[0], 4, 8, 32))
    assert not torch.equal(a, assigned_batches(ds, 8, ADDRESSES[0], 3, 8, 32))
    # every row is a contiguous slice of the train stream
    stream = bytes(ds.train.tolist())
    assert all(bytes(row.tolist()) in stream for row in a)
    h = heldout_batches(ds, b"\x01" * 32, 4, 32)
    assert torch.equal(h, heldout_batches(ds, b"\x01" * 32, 4, 32))
    assert not torch.equal(h, heldout_batches(ds, b"\x02" * 32, 4, 32))
    with pytest.raises(DatasetError):
        assigned_batches(ds, 7, "alice", 3, 8, 32)
    with pytest.raises(DatasetError):
        heldout_batches(ds, b"s", 1, ds.heldout.numel())


def test_disjoint_trainers_rarely_share_data() -> None:
    """Trainers cover ~0.3% of the train stream each; shared positions should be of that order."""
    ds = build_dataset(random_corpus(1_000_000), shard_bytes=50_000).to_dataset()
    n_seqs, seq_len, window = 32, 64, 5
    span = seq_len + 1
    covered = []
    for address in ADDRESSES[:12]:
        starts = assignment_offsets(ds.train.numel(), 11, address, window, n_seqs, seq_len)
        rows = assigned_batches(ds, 11, address, window, n_seqs, seq_len)
        assert torch.equal(rows[0], ds.train[starts[0] : starts[0] + span].long())
        mask = torch.zeros(ds.train.numel(), dtype=torch.bool)
        for s in starts:
            mask[s : s + span] = True
        covered.append(mask)
    coverage = sum(float(m.float().mean()) for m in covered) / len(covered)
    shared = [float((a & b).float().sum() / a.float().sum()) for a, b in itertools.combinations(covered, 2)]
    assert coverage < 0.005
    assert sum(shared) / len(shared) < 5 * coverage  # chance level, not systematic reuse
    assert max(shared) < 0.05


def test_parse_index_rejects_hostile_documents() -> None:
    good = build_dataset(random_corpus(1000), shard_bytes=300).index(["bafk" + str(i) for i in range(4)])
    assert len(parse_index(json.dumps(good).encode())) == 4
    bad_docs = [
        b"not json",
        b"[]",
        json.dumps({**good, "format": "other"}).encode(),
        json.dumps({**good, "shards": [{**good["shards"][0], "size": 2**40}]}).encode(),
        json.dumps({**good, "shards": [{**good["shards"][0], "sha256": "zz"}]}).encode(),
        json.dumps({**good, "shards": [s for s in good["shards"] if s["split"] == "train"]}).encode(),
    ]
    for doc in bad_docs:
        with pytest.raises(DatasetError):
            parse_index(doc)
