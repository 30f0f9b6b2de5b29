"""Payload bombs decoded under a hard memory bound, in a fresh interpreter:

    python -m tests.tensors.payload_bombs [BUDGET_BYTES]   # one JSON object; run by tests/tensors/test_payload_fuzz.py

Bombs are inputs small on the wire and enormous if believed: a terabyte tensor, 100k empty tensors, a header at
the size limit, a max-size zero payload, and the most expanding codec (one coefficient per 128×128 tile, 2-bit
values) for a model far larger than the payload. Decoding must allocate at most what the caller's own model spec
needs: the payload never chooses the output size.

Why a separate process under RLIMIT_AS: the peak RSS of a long-lived pytest process was already raised by the
tests before it, and pages allocated but never touched do not count towards RSS at all, so a bound on it could
not fail. Here the address space is capped at what the process holds once everything is imported and built,
plus the budget; any allocation beyond it fails inside the decoder (torch raises RuntimeError, Python
MemoryError) and is reported as such. Torch runs one thread, so the cap does not depend on the core count
(each extra thread reserves a stack and a malloc arena)."""

from __future__ import annotations

import ctypes
import json
import resource
import signal
import struct
import sys
from pathlib import Path
from typing import Any

import torch

from base.model import GPT, PRESETS, ModelSpec, model_spec
from ipfs.errors import PayloadTooLarge
from tensors.codecs import MAX_CHUNK, ChunkedTopK, PayloadError
from tensors.payload import MAX_HEADER_BYTES, Manifest, decode_contribution, encode_contribution

LIMIT = 1 << 24  # the run's payload cap the bombs are decoded under
SPEC: ModelSpec = model_spec(GPT(PRESETS["tiny"]))
GUARD_SECONDS = 60  # far above an honest decode of these sizes; SIGALRM's default action ends a hung child
# The budget over the address space after setup. Measured (python -m tests.tensors.payload_bombs BUDGET, three runs
# each, on the 2-core dev machine): the honest expanding decode of the 29 MB "small" model ran out of memory at
# 20 MB 3/3, at 30 MB 2/3, and decoded at 40, 60 and 80 MB 3/3 (and at this budget, 92 MB, 5/5). Twice the dense
# model plus 32 MiB leaves it more than twice the most it needed and fails a decoder that holds three dense copies.
DENSE_FACTOR = 2
HEADROOM = 32 << 20

# Every way a decoder may refuse hostile bytes: a format error or the size cap.
REFUSED = (PayloadError, PayloadTooLarge)


def contribution(codec: ChunkedTopK, spec: ModelSpec = SPEC, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    delta = {name: torch.randn(shape, generator=g) for name, (shape, _) in spec.items()}
    manifest = Manifest(kind="contribution", run_id=1, window=2, trainer="0x" + "ab" * 20, base_model_cid="bafk",
                        codec=codec.name, codec_params=codec.params(), spec=spec)
    return encode_contribution(delta, codec, manifest).data


def header_bytes(header: dict[str, Any] | bytes, body: bytes = b"") -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def address_space() -> int:
    """The process's current virtual size (what RLIMIT_AS bounds), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def outcome(decode: Any) -> str:
    try:
        decode()
    except REFUSED as err:
        return f"refused: {type(err).__name__}"
    except (MemoryError, RuntimeError) as err:  # an allocation past the cap
        return f"out of memory: {type(err).__name__}: {str(err)[:200]}"
    return "decoded"


def main(budget: int | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    small = model_spec(GPT(PRESETS["small"]))
    dense_bytes = 4 * sum(torch.Size(shape).numel() for shape, _ in small.values())
    sparse = contribution(ChunkedTopK(chunk=MAX_CHUNK, k=1, value_bits=2), small)
    many = {f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(100_000)}
    bombs = {
        "terabyte tensor": header_bytes({"x": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]}}),
        "2**60 elements": header_bytes({"x": {"dtype": "F32", "shape": [2**20, 2**20, 2**20],
                                              "data_offsets": [0, 2**62]}}),
        "100k empty tensors": header_bytes(json.dumps(many).encode()[:MAX_HEADER_BYTES]),
        "header at the size limit": header_bytes(b" " * (MAX_HEADER_BYTES - 2) + b"{}"),
        "max-size zeros": b"\x00" * LIMIT,
    }
    del many
    decode_contribution(contribution(ChunkedTopK()), SPEC, LIMIT)  # lazily loaded code is in place before the cap
    budget = budget or DENSE_FACTOR * dense_bytes + HEADROOM
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # memory freed by the setup goes back: the decoders cannot reuse it
    base = address_space()
    resource.setrlimit(resource.RLIMIT_AS, (base + budget, resource.getrlimit(resource.RLIMIT_AS)[1]))
    # The cap is in force: one allocation of twice the budget fails.
    cap_bites = outcome(lambda: torch.empty(2 * budget, dtype=torch.uint8)).startswith("out of memory")
    signal.alarm(GUARD_SECONDS)
    outcomes = {name: outcome(lambda bomb=bomb: decode_contribution(bomb, SPEC, LIMIT)) for name, bomb in bombs.items()}
    decoded: list[int] = []
    outcomes["128x128 tiles, k=1, 2-bit (honest, expands)"] = outcome(lambda: decoded.append(sum(
        t.numel() * t.element_size() for t in decode_contribution(sparse, small, LIMIT).delta.values())))
    signal.alarm(0)
    return {"outcomes": outcomes, "cap_bites": cap_bites, "dense_bytes": dense_bytes, "decoded_bytes": decoded,
            "expansion": dense_bytes / len(sparse), "budget": budget}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else None)))  # a budget (bytes) to measure with
