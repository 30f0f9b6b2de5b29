"""The run's content-addressed dataset and the data assignment. See node/DATA.md for the corpus and split.

Build: text files -> one byte stream -> fixed-size shards + an index (sha256, size, split per shard).
Publish: shards then the index go to IPFS; the index CID is the dataset root fixed in the run on chain.
Fetch: shards are downloaded by CID (the client verifies it), re-checked against the index's sha256 and
cached on disk. Assignment: sequence offsets are sha256 outputs of (domain, run seed, trainer, window, i),
so a validator can recompute any trainer's batches without sharing RNG implementation details."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from base.errors import TrainmarketError
from base.jsonguard import loads as bounded_json

INDEX_FORMAT = "trainmarket-dataset/1"
DEFAULT_SHARD_BYTES = 1 << 20
MAX_SHARD_BYTES = 64 << 20
MAX_INDEX_BYTES = 16 << 20
MAX_FILE_BYTES = 8 << 20
# Between files, so a sequence that crosses a file boundary sees a plain paragraph break.
FILE_SEPARATOR = b"\n\n"
# Folders inside the stdlib tree that hold installed packages, not the standard library.
_NOT_STDLIB = {"site-packages", "dist-packages", "__pycache__"}
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-f]{40}$")


class DatasetError(TrainmarketError):
    """A dataset that cannot be built, parsed or verified; `source` names the file, CID or shard."""

    def __init__(self, message: str, source: str = "") -> None:
        self.source = source
        super().__init__(f"{message} ({source})" if source else message)


class BlobStore(Protocol):
    """What the dataset needs from storage: ipfs.client.IpfsClient satisfies it."""

    def add(self, data: bytes) -> str: ...

    def cat(self, cid: str, max_bytes: int) -> bytes: ...


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _walk_files(root: Path, suffixes: tuple[str, ...] | None, skip_dirs: set[str]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        # Sorting in place fixes os.walk's order, which is otherwise the file system's.
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        for name in sorted(filenames):
            if suffixes is None or name.endswith(suffixes):
                yield Path(dirpath) / name


def collect_text(
    paths: Iterable[Path], suffixes: tuple[str, ...] | None = None, skip_dirs: Iterable[str] = ()
) -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of every readable UTF-8 text file under `paths`, in a deterministic order.

    A path may be a file or a folder. Binaries (NUL bytes, invalid UTF-8), unreadable files, symlinks to
    folders and files over MAX_FILE_BYTES are skipped; relative paths are prefixed by the root's name."""
    skip = set(skip_dirs)
    for root in paths:
        root = Path(root)
        if root.is_file():
            candidates: Iterable[Path] = [root]
            base = root.parent
        elif root.is_dir():
            candidates = _walk_files(root, suffixes, skip)
            base = root.parent
        else:
            raise DatasetError("data source is neither a file nor a folder", str(root))
        for path in candidates:
            try:
                if path.is_symlink() or path.stat().st_size > MAX_FILE_BYTES:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            if data and _is_text(data):
                yield path.relative_to(base).as_posix(), data


def default_sources(include_packages: bool = False) -> list[Path]:
    """The running interpreter's stdlib (~30 MB of .py on CPython 3.11), plus its installed packages'
    sources (`purelib`, ~150 MB in this project's venv) when asked."""
    paths = sysconfig.get_paths()
    sources = [Path(paths["stdlib"])]
    if include_packages:
        sources.append(Path(paths["purelib"]))
    return sources


def collect_default_text(include_packages: bool = False) -> Iterator[tuple[str, bytes]]:
    """The default corpus: .py files of the stdlib (never its site-packages), optionally of packages."""
    stdlib, *packages = default_sources(include_packages)
    yield from collect_text([stdlib], suffixes=(".py",), skip_dirs=_NOT_STDLIB)
    yield from collect_text(packages, suffixes=(".py",), skip_dirs={"__pycache__"})


@dataclass(frozen=True)
class ShardEntry:
    sha256: str
    size: int
    split: str  # "train" or "heldout"
    cid: str = ""


@dataclass(frozen=True)
class Dataset:
    """Token streams (uint8 byte ids) of the two splits; sequences are drawn from them by offset."""

    train: Tensor
    heldout: Tensor
    root_cid: str = ""

    @property
    def total_tokens(self) -> int:
        return int(self.train.numel() + self.heldout.numel())


@dataclass(frozen=True)
class BuiltDataset:
    shards: list[bytes]
    entries: list[ShardEntry]
    n_files: int

    def index(self, shard_cids: list[str] | None = None) -> dict[str, Any]:
        cids = shard_cids or [""] * len(self.entries)
        return {
            "format": INDEX_FORMAT,
            "n_files": self.n_files,
            "total_tokens": sum(e.size for e in self.entries),
            "shards": [
                {"cid": cid, "sha256": e.sha256, "size": e.size, "split": e.split}
                for e, cid in zip(self.entries, cids, strict=True)
            ],
        }

    def to_dataset(self) -> Dataset:
        """The same token streams fetch_dataset yields, without going through storage."""
        return _assemble(self.shards, self.entries)


def _split_shards(digests: list[str], heldout_fraction: float) -> list[str]:
    """Held-out = the shards with the smallest sha256: depends on content only, not on order or machine."""
    n = len(digests)
    n_heldout = min(n - 1, max(1, round(n * heldout_fraction)))
    heldout = set(sorted(range(n), key=lambda i: (digests[i], i))[:n_heldout])
    return ["heldout" if i in heldout else "train" for i in range(n)]


def build_dataset(
    texts: Iterable[tuple[str, bytes]], shard_bytes: int = DEFAULT_SHARD_BYTES, heldout_fraction: float = 0.05
) -> BuiltDataset:
    """Concatenate the texts (separated by FILE_SEPARATOR) and cut the stream into `shard_bytes` shards
    (the last one may be shorter). At least one shard is held out and at least one trains."""
    if not 0 < shard_bytes <= MAX_SHARD_BYTES:
        raise DatasetError(f"shard_bytes must lie in (0, {MAX_SHARD_BYTES}]: {shard_bytes}")
    if not 0.0 < heldout_fraction < 1.0:
        raise DatasetError(f"heldout_fraction must lie in (0, 1): {heldout_fraction}")
    stream = bytearray()
    n_files = 0
    for _, data in texts:
        if n_files:
            stream += FILE_SEPARATOR
        stream += data
        n_files += 1
    shards = [bytes(stream[i : i + shard_bytes]) for i in range(0, len(stream), shard_bytes)]
    if len(shards) < 2:
        raise DatasetError(f"{len(stream)} bytes make {len(shards)} shard(s); need 2 (train and held-out)")
    digests = [hashlib.sha256(s).hexdigest() for s in shards]
    splits = _split_shards(digests, heldout_fraction)
    entries = [ShardEntry(d, len(s), split) for d, s, split in zip(digests, shards, splits, strict=True)]
    return BuiltDataset(shards, entries, n_files)


def publish_dataset(client: BlobStore, built: BuiltDataset) -> str:
    """Add every shard, then the index that names them; the index CID is the dataset's root."""
    cids = [client.add(shard) for shard in built.shards]
    index = json.dumps(built.index(cids), sort_keys=True, separators=(",", ":")).encode()
    return client.add(index)


def parse_index(data: bytes, source: str = "") -> list[ShardEntry]:
    """Validate an index fetched from the network: every field typed and bounded, both splits present."""
    try:
        doc = bounded_json(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: hostile [[[[… nesting
        raise DatasetError(f"dataset index is not JSON: {err}", source) from err
    if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT or not isinstance(doc.get("shards"), list):
        raise DatasetError(f"dataset index is not in format {INDEX_FORMAT}", source)
    entries = []
    for raw in doc["shards"]:
        ok = (
            isinstance(raw, dict)
            and isinstance(raw.get("cid"), str)
            and 0 < len(raw["cid"]) <= 128
            and isinstance(raw.get("sha256"), str)
            and _SHA256_HEX.match(raw["sha256"]) is not None
            and type(raw.get("size")) is int
            and 0 < raw["size"] <= MAX_SHARD_BYTES
            and raw.get("split") in ("train", "heldout")
        )
        if not ok:
            raise DatasetError(f"malformed shard entry {str(raw)[:200]}", source)
        entries.append(ShardEntry(raw["sha256"], raw["size"], raw["split"], raw["cid"]))
    if {e.split for e in entries} != {"train", "heldout"}:
        raise DatasetError("dataset index must hold both train and held-out shards", source)
    return entries


def _read_cached(path: Path, entry: ShardEntry) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        return None
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fetch_dataset(client: BlobStore, root_cid: str, cache_dir: Path) -> Dataset:
    """Fetch the index by its CID and every shard by its CID, verify sizes and sha256, cache shards under
    `cache_dir/shards/<sha256>`. A cached shard is used only if it still hashes right; else re-fetched."""
    index_bytes = client.cat(root_cid, MAX_INDEX_BYTES)
    entries = parse_index(index_bytes, root_cid)
    shard_dir = Path(cache_dir) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for entry in entries:
        path = shard_dir / entry.sha256
        data = _read_cached(path, entry)
        if data is None:
            data = client.cat(entry.cid, entry.size)
            if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
                raise DatasetError("shard does not match the index's size and sha256", entry.cid)
            _write_atomic(path, data)
        shards.append(data)
    return _assemble(shards, entries, root_cid)


def _assemble(shards: list[bytes], entries: list[ShardEntry], root_cid: str = "") -> Dataset:
    def stream(split: str) -> Tensor:
        joined = b"".join(s for s, e in zip(shards, entries, strict=True) if e.split == split)
        return torch.frombuffer(bytearray(joined), dtype=torch.uint8)

    return Dataset(train=stream("train"), heldout=stream("heldout"), root_cid=root_cid)


def _offsets(domain: bytes, seed_material: bytes, n_seqs: int, span: int, n_tokens: int) -> list[int]:
    """n_seqs start offsets in [0, n_tokens - span], each the first 8 bytes of sha256(domain|seed|i) mod
    the range (bias below 2^-30 for streams under 2^34 tokens)."""
    limit = n_tokens - span + 1
    if limit <= 0:
        raise DatasetError(f"split of {n_tokens} tokens is shorter than one sequence of {span}")
    base = hashlib.sha256(domain + seed_material).digest()
    return [
        int.from_bytes(hashlib.sha256(base + i.to_bytes(8, "big")).digest()[:8], "big") % limit for i in range(n_seqs)
    ]


def _gather(tokens: Tensor, offsets: list[int], span: int) -> Tensor:
    index = torch.tensor(offsets, dtype=torch.long).unsqueeze(1) + torch.arange(span, dtype=torch.long)
    return tokens[index].long()


def normalise_address(trainer: str) -> str:
    address = trainer.strip().lower()
    if not _ADDRESS.match(address):
        raise DatasetError(f"not an Ethereum address: {trainer!r}")
    return address


def assignment_offsets(
    train_tokens: int, run_seed: int, trainer: str, window: int, n_seqs: int, seq_len: int
) -> list[int]:
    """Start offsets (in the train stream) of the trainer's sequences for `window`."""
    if run_seed < 0 or window < 0 or n_seqs <= 0 or seq_len <= 0:
        raise DatasetError(f"bad assignment arguments: seed={run_seed} window={window} n={n_seqs} len={seq_len}")
    seed = run_seed.to_bytes(32, "big") + normalise_address(trainer).encode() + window.to_bytes(8, "big")
    return _offsets(b"trainmarket/assign/v1|", seed, n_seqs, seq_len + 1, train_tokens)


def assigned_batches(ds: Dataset, run_seed: int, trainer: str, window: int, n_seqs: int, seq_len: int) -> Tensor:
    """The trainer's data for `window`: [n_seqs, seq_len + 1] token ids from the train split, a pure
    function of (run_seed, lower-cased trainer address, window). The validator calls it too."""
    offsets = assignment_offsets(ds.train.numel(), run_seed, trainer, window, n_seqs, seq_len)
    return _gather(ds.train, offsets, seq_len + 1)


def heldout_batches(ds: Dataset, seed: bytes, n_seqs: int, seq_len: int) -> Tensor:
    """Common evaluation data from the held-out split, seeded by e.g. the window's closing block hash."""
    if n_seqs <= 0 or seq_len <= 0:
        raise DatasetError(f"bad held-out arguments: n={n_seqs} len={seq_len}")
    offsets = _offsets(b"trainmarket/heldout/v1|", seed, n_seqs, seq_len + 1, ds.heldout.numel())
    return _gather(ds.heldout, offsets, seq_len + 1)
