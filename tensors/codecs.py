"""Pseudo-gradient codecs: pure functions from a dense tensor to a few small tensors and back.

`ChunkedTopK` follows DeMo/SparseLoCo. Geometry (fixed by the tensor's shape alone, so the decoder
recomputes it and never trusts the payload for it):
- a 2-D tensor (R, C) is cut into chunk×chunk tiles, zero-padded at the bottom/right edges; tiles are
  numbered row-major (tile row, tile column);
- a 1-D tensor (or a scalar) is cut into pieces of chunk·chunk consecutive elements, the last piece
  zero-padded, each piece viewed row-major as one chunk×chunk tile — so every tile has the same
  chunk_size = chunk², and indices take the same ceil(log2(chunk_size)) bits (12 for chunk 64);
- an N-D tensor (N > 2) is viewed as 2-D (shape[0], prod(shape[1:])), which keeps its flat positions.

A tile position (r, c) is *valid* when it lies on the real tensor, not on padding. Per tile the codec keeps
the k largest |coefficient|s among valid positions (fewer when a tile has fewer than k valid positions);
ties go to the lower position (a deterministic threshold + cumulative count, no unstable sort). With
`dct=True`, each 2-D tile's coefficients are the orthonormal 2-D DCT-II of its valid vr×vc extent (an edge
tile gets a DCT of its own smaller size, so padding never leaks energy and k = vr·vc is lossless), laid in
the top-left vr×vc of the tile — the coefficient positions are exactly the valid positions. 1-D tensors
(norm gains, biases) are never DCT-transformed: their last piece is not a rectangle, and they are tiny.

`chosen_indices` returns FLAT positions into the flattened tensor: tile position (r, c) maps to the element
of the tensor at that same place. Without DCT that is exactly the element that was kept; with DCT it is the
coefficient's place in the tile laid over the tensor (frequency (r, c) of that tile's valid extent), which is what copy
detection needs: two payloads share an index iff they kept the same coefficient of the same tile.

Wire form (`CompressedTensor`, all CPU, ready for safetensors): `idx` uint8 (kept local positions, ascending
per tile, bit-packed little-endian), `val` uint8 (quantised values in the same order: 8-bit two's
complement, or 2-bit codes bit-packed) and `lut` float32 — a 1-entry scale for 8-bit (value = q·scale,
q in [-127, 127]) or a 4-entry per-tensor lookup for 2-bit (−hi, −lo, lo, hi: the mean |v| below and above
the median |v|, one Lloyd step). Decoding validates everything (keys, dtypes, byte lengths, index range,
validity, strictly ascending order, finiteness) and raises a PayloadError subclass, never crashes."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from base.errors import TrainmarketError

CompressedTensor = dict[str, Tensor]
Shape = tuple[int, ...]
CPU = torch.device("cpu")
MAX_CHUNK = 128  # caps the per-tile work a hostile manifest can ask for (chunk_size <= 16384, 14-bit indices)


class PayloadError(TrainmarketError):
    """Root of every reason a payload (or one compressed tensor in it) is refused."""


class UnknownCodec(PayloadError):
    """A codec name (or its parameters) this build does not implement."""

    def __init__(self, name: str, reason: str = "no such codec") -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"unknown codec {name!r}: {reason}")


class ShapeMismatch(PayloadError):
    """A tensor (or the set of tensors) does not match the model the payload claims to apply to."""

    def __init__(self, tensor: str, expected: object, actual: object) -> None:
        self.tensor = tensor
        self.expected = expected
        self.actual = actual
        super().__init__(f"{tensor}: expected {expected}, got {actual}")


class BadIndices(PayloadError):
    """Indices out of range, on padding, duplicated or out of canonical (ascending) order."""

    def __init__(self, tensor: str, reason: str) -> None:
        self.tensor = tensor
        self.reason = reason
        super().__init__(f"{tensor}: bad indices: {reason}")


class NonFiniteValues(PayloadError):
    """NaN or ±Inf in values, scales or the decoded tensor."""

    def __init__(self, tensor: str, where: str) -> None:
        self.tensor = tensor
        self.where = where
        super().__init__(f"{tensor}: non-finite values in {where}")


class GarbagePayload(PayloadError):
    """Bytes or tensors that are not in the payload format at all (wrong keys, dtypes, lengths, bad JSON)."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class Codec(Protocol):
    @property
    def name(self) -> str: ...

    def params(self) -> dict[str, Any]: ...

    def compress(self, t: Tensor) -> CompressedTensor: ...

    def decompress(self, c: CompressedTensor, shape: Shape) -> Tensor: ...

    def chosen_indices(self, c: CompressedTensor, shape: Shape) -> Tensor: ...


def index_bits(chunk_size: int) -> int:
    """Fewest bits that hold every local position 0..chunk_size-1 (at least 1)."""
    return max(1, math.ceil(math.log2(chunk_size)))


def pack_bits(values: Tensor, bits: int) -> Tensor:
    """Non-negative integers < 2**bits, `bits` each, little-endian bit order, into a uint8 tensor."""
    shifts = torch.arange(bits, device=values.device)
    flat = ((values.long().reshape(-1, 1) >> shifts) & 1).to(torch.uint8).reshape(-1)
    flat = torch.nn.functional.pad(flat, (0, -flat.numel() % 8))
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8, device=values.device)
    return (flat.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.uint8).cpu()


def packed_len(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def unpack_bits(packed: Tensor, bits: int, count: int) -> Tensor:
    """Inverse of pack_bits; the caller has checked `packed` holds exactly packed_len(count, bits) bytes."""
    shifts = torch.arange(8, device=packed.device)
    flat = ((packed.long().reshape(-1, 1) >> shifts) & 1).reshape(-1)[: count * bits]
    weights = torch.tensor([1 << i for i in range(bits)], dtype=torch.long, device=packed.device)
    return (flat.reshape(count, bits) * weights).sum(dim=1)


@functools.lru_cache(maxsize=16)
def dct_matrix(n: int, device: torch.device = CPU) -> Tensor:
    """Orthonormal DCT-II matrix D (D @ D.T = I): coefficients of a tile X are D @ X @ D.T."""
    pos = torch.arange(n, dtype=torch.float64)
    d = torch.cos(math.pi * (2 * pos[None, :] + 1) * pos[:, None] / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=torch.float32)


@dataclass(frozen=True)
class TileLayout:
    """Where every tile position of a tensor lies; pure function of (shape, chunk)."""

    shape: Shape
    chunk: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def two_d(self) -> bool:
        return len(self.shape) >= 2

    @property
    def rows_cols(self) -> tuple[int, int]:
        return self.shape[0], self.numel // self.shape[0] if self.shape[0] else 0

    @property
    def chunk_size(self) -> int:
        return self.chunk * self.chunk

    @property
    def tile_grid(self) -> tuple[int, int]:
        """(tile rows, tile columns); 1-D tensors are one row of pieces."""
        if self.two_d:
            rows, cols = self.rows_cols
            return -(-rows // self.chunk), -(-cols // self.chunk)
        return 1, -(-self.numel // self.chunk_size)

    @property
    def n_tiles(self) -> int:
        tr, tc = self.tile_grid
        return tr * tc

    def positions(self, device: torch.device = CPU) -> Tensor:
        """(n_tiles, chunk_size) flat positions into the tensor; -1 on padding."""
        tiles = torch.arange(self.n_tiles, device=device)[:, None].expand(-1, self.chunk_size)
        local = torch.arange(self.chunk_size, device=device)[None, :].expand(self.n_tiles, -1)
        return self.flat_positions(tiles.reshape(-1), local.reshape(-1)).reshape(self.n_tiles, self.chunk_size)

    def flat_positions(self, tile_ids: Tensor, local: Tensor) -> Tensor:
        """Flat positions of (tile, local position) pairs, -1 where the pair lies on padding."""
        if not self.two_d:
            pos = tile_ids * self.chunk_size + local
            return torch.where(pos < self.numel, pos, torch.full_like(pos, -1))
        (rows, cols), tc, ch = self.rows_cols, self.tile_grid[1], self.chunk
        row = (tile_ids // tc) * ch + local // ch
        col = (tile_ids % tc) * ch + local % ch
        return torch.where((row < rows) & (col < cols), row * cols + col, torch.full_like(row, -1))

    def valid_mask(self, device: torch.device = CPU) -> Tensor:
        """(n_tiles, chunk_size) bool: True where a tile position lies on the tensor."""
        ch, (tr, tc) = self.chunk, self.tile_grid
        if not self.two_d:
            return (torch.arange(tc * self.chunk_size, device=device) < self.numel).reshape(tc, self.chunk_size)
        rows, cols = self.rows_cols
        row_ok = (torch.arange(tr * ch, device=device) < rows).reshape(tr, 1, ch, 1)
        col_ok = (torch.arange(tc * ch, device=device) < cols).reshape(1, tc, 1, ch)
        return (row_ok & col_ok).reshape(tr * tc, self.chunk_size)

    def kept_per_tile(self, k: int) -> Tensor:
        """How many coefficients each tile keeps: k, or all of its valid positions when it has fewer."""
        ch, (tr, tc) = self.chunk, self.tile_grid
        if not self.two_d:
            valid = (self.numel - torch.arange(tc) * self.chunk_size).clamp(0, self.chunk_size)
        else:
            rows, cols = self.rows_cols
            vr = (rows - torch.arange(tr) * ch).clamp(0, ch)
            vc = (cols - torch.arange(tc) * ch).clamp(0, ch)
            valid = (vr[:, None] * vc[None, :]).reshape(-1)
        return valid.clamp(max=k)

    def to_tiles(self, t: Tensor) -> Tensor:
        ch, tr, tc = self.chunk, *self.tile_grid
        if not self.two_d:
            flat = torch.nn.functional.pad(t.reshape(-1), (0, tc * self.chunk_size - self.numel))
            return flat.reshape(tc, self.chunk_size)
        rows, cols = self.rows_cols
        x = torch.nn.functional.pad(t.reshape(rows, cols), (0, tc * ch - cols, 0, tr * ch - rows))
        return x.reshape(tr, ch, tc, ch).permute(0, 2, 1, 3).reshape(tr * tc, self.chunk_size)

    def from_tiles(self, tiles: Tensor) -> Tensor:
        ch, tr, tc = self.chunk, *self.tile_grid
        if not self.two_d:
            return tiles.reshape(-1)[: self.numel].reshape(self.shape)
        rows, cols = self.rows_cols
        x = tiles.reshape(tr, tc, ch, ch).permute(0, 2, 1, 3).reshape(tr * ch, tc * ch)
        return x[:rows, :cols].reshape(self.shape)


def _layout(shape: Shape, chunk: int) -> TileLayout:
    return TileLayout(tuple(int(d) for d in shape) or (1,), chunk)


@dataclass(frozen=True)
class ChunkedTopK:
    """Top-k per chunk×chunk tile, optional DCT, bit-packed indices, 8- or 2-bit values. See module doc."""

    chunk: int = 64
    k: int = 32
    dct: bool = False
    value_bits: Literal[8, 2] = 2
    name: str = "chunked_topk"

    def __post_init__(self) -> None:
        if not 1 <= self.chunk <= MAX_CHUNK:
            raise UnknownCodec(self.name, f"chunk must lie in [1, {MAX_CHUNK}], got {self.chunk}")
        if not 1 <= self.k <= self.chunk * self.chunk:
            raise UnknownCodec(self.name, f"k must lie in [1, chunk²={self.chunk**2}], got {self.k}")
        if self.value_bits not in (2, 8):
            raise UnknownCodec(self.name, f"value_bits must be 8 or 2, got {self.value_bits}")

    def params(self) -> dict[str, Any]:
        return {"chunk": self.chunk, "k": self.k, "dct": self.dct, "value_bits": self.value_bits}

    # -- encoding ---------------------------------------------------------------------------------------
    def compress(self, t: Tensor) -> CompressedTensor:
        layout = _layout(tuple(t.shape), self.chunk)
        x = t.detach().float()
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteValues("input", "the tensor to compress")
        coeffs = self._transform(layout.to_tiles(x), layout, inverse=False)
        valid = layout.valid_mask(coeffs.device)
        keep = _top_k_mask(coeffs.abs(), valid, self.k)
        _, local = keep.nonzero(as_tuple=True)  # row-major: tile by tile, ascending within a tile
        values = coeffs[keep]
        val, lut = self._quantise(values)
        return {"idx": pack_bits(local, index_bits(layout.chunk_size)), "val": val, "lut": lut}

    def _transform(self, tiles: Tensor, layout: TileLayout, inverse: bool) -> Tensor:
        """Per-tile orthonormal DCT-II (or its inverse) over each tile's valid extent; identity without DCT."""
        if not self.dct or not layout.two_d or tiles.numel() == 0:
            return tiles
        ch, (tr, tc), (rows, cols) = self.chunk, layout.tile_grid, layout.rows_cols
        blocks = tiles.reshape(tr, tc, ch, ch)
        out = torch.zeros_like(blocks)
        # At most four groups share an extent: interior, last tile row, last tile column, the corner.
        for row_tiles, vr in ((slice(0, tr - 1), ch), (slice(tr - 1, tr), rows - (tr - 1) * ch)):
            for col_tiles, vc in ((slice(0, tc - 1), ch), (slice(tc - 1, tc), cols - (tc - 1) * ch)):
                x = blocks[row_tiles, col_tiles, :vr, :vc]
                if x.numel() == 0:
                    continue
                dr, dc = dct_matrix(vr, tiles.device), dct_matrix(vc, tiles.device)
                out[row_tiles, col_tiles, :vr, :vc] = dr.T @ x @ dc if inverse else dr @ x @ dc.T
        return out.reshape(tiles.shape)

    def _quantise(self, values: Tensor) -> tuple[Tensor, Tensor]:
        if self.value_bits == 8:
            peak = float(values.abs().max()) if values.numel() else 0.0
            scale = peak / 127.0 if peak > 0 else 1.0
            q = torch.round(values / scale).clamp(-127, 127).to(torch.int8)
            return q.view(torch.uint8).cpu(), torch.tensor([scale], dtype=torch.float32)
        mags = values.abs()
        if mags.numel() == 0:
            return pack_bits(mags.long(), 2), torch.zeros(4, dtype=torch.float32)
        median = mags.sort().values[(mags.numel() - 1) // 2]
        high = mags > median
        lo = float(mags[~high].mean())
        hi = float(mags[high].mean()) if bool(high.any()) else lo
        codes = (values >= 0).long() * 2 + torch.where(values >= 0, high.long(), (~high).long())
        return pack_bits(codes, 2), torch.tensor([-hi, -lo, lo, hi], dtype=torch.float32)

    # -- decoding (hostile input) -----------------------------------------------------------------------
    def decompress(self, c: CompressedTensor, shape: Shape) -> Tensor:
        layout = _layout(shape, self.chunk)
        tile_ids, local = self._checked_indices(c, layout)
        values = self._dequantise(c, tile_ids.numel())
        coeffs = torch.zeros(layout.n_tiles, layout.chunk_size, dtype=torch.float32, device=values.device)
        coeffs[tile_ids, local] = values
        out = layout.from_tiles(self._transform(coeffs, layout, inverse=True)).reshape(tuple(int(s) for s in shape))
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteValues("tensor", "the decoded tensor (scale overflow)")
        return out

    def chosen_indices(self, c: CompressedTensor, shape: Shape) -> Tensor:
        """Sorted unique flat positions (int64) of the kept coefficients; see the module doc for DCT."""
        layout = _layout(shape, self.chunk)
        tile_ids, local = self._checked_indices(c, layout)
        return layout.flat_positions(tile_ids, local).sort().values

    def _expect(self, c: CompressedTensor, key: str, dtype: torch.dtype, length: int) -> Tensor:
        if set(c) != {"idx", "val", "lut"}:
            raise GarbagePayload("compressed tensor", f"keys {sorted(c)} are not ['idx', 'lut', 'val']")
        t = c[key]
        if t.dtype != dtype or t.dim() != 1 or t.numel() != length:
            raise GarbagePayload(f"compressed tensor '{key}'", f"expected {dtype} [{length}], got {t.dtype} "
                                 f"{list(t.shape)}")
        return t

    def _checked_indices(self, c: CompressedTensor, layout: TileLayout) -> tuple[Tensor, Tensor]:
        counts = layout.kept_per_tile(self.k)
        total, bits = int(counts.sum()), index_bits(layout.chunk_size)
        local = unpack_bits(self._expect(c, "idx", torch.uint8, packed_len(total, bits)), bits, total)
        # numpy's repeat, not torch.repeat_interleave: with 2 torch threads on the loaded 2-core machine the latter
        # took up to 12.6 ms instead of ~14 µs per call (`python -m bench.threads`), and a validator's decode of one
        # tiny-model payload 225 ms instead of 18 ms (cProfile of decode_contribution: 84% in repeat_interleave).
        # The result is the same tensor.
        tile_ids = torch.from_numpy(np.repeat(np.arange(layout.n_tiles, dtype=np.int64), counts.numpy()))
        if bool((local >= layout.chunk_size).any()):
            raise BadIndices("idx", f"a local index is >= chunk size {layout.chunk_size}")
        if bool((layout.flat_positions(tile_ids, local) < 0).any()):
            raise BadIndices("idx", "an index points at padding outside the tensor")
        same_tile = tile_ids[1:] == tile_ids[:-1]
        if bool((same_tile & (local[1:] <= local[:-1])).any()):
            raise BadIndices("idx", "indices within a tile are duplicated or not ascending")
        return tile_ids, local

    def _dequantise(self, c: CompressedTensor, count: int) -> Tensor:
        if self.value_bits == 8:
            lut = self._expect(c, "lut", torch.float32, 1)
            val = self._expect(c, "val", torch.uint8, count)
            if not bool(torch.isfinite(lut).all()):
                raise NonFiniteValues("lut", "the 8-bit scale")
            return val.view(torch.int8).float() * lut[0]
        lut = self._expect(c, "lut", torch.float32, 4)
        val = self._expect(c, "val", torch.uint8, packed_len(count, 2))
        if not bool(torch.isfinite(lut).all()):
            raise NonFiniteValues("lut", "the 2-bit lookup table")
        return lut[unpack_bits(val, 2, count)]


def _top_k_mask(mag: Tensor, valid: Tensor, k: int) -> Tensor:
    """Per row, the k largest `mag` among `valid` (all of them if fewer); ties to the lower position."""
    mag = torch.where(valid, mag, torch.full_like(mag, -1.0))
    k = min(k, mag.shape[1])
    if mag.shape[0] == 0:
        return torch.zeros_like(valid)
    threshold = torch.topk(mag, k, dim=1).values[:, -1:]
    above = mag > threshold
    tied = mag == threshold
    room = k - above.sum(dim=1, keepdim=True)
    if bool((tied.sum(dim=1, keepdim=True) > room).any()):  # rare with real data: skip the cumsum otherwise
        tied &= tied.cumsum(dim=1) <= room
    return (above | tied) & valid


CODECS: dict[str, type[ChunkedTopK]] = {"chunked_topk": ChunkedTopK}
DEFAULT_CODEC: Codec = ChunkedTopK(chunk=64, k=32, dct=False, value_bits=2)
_PARAM_TYPES: dict[str, type] = {"chunk": int, "k": int, "dct": bool, "value_bits": int}


def codec_from(name: str, params: Mapping[str, Any]) -> Codec:
    """The codec a manifest names. Parameters are type-checked strictly (a manifest is network input)."""
    if name not in CODECS:
        raise UnknownCodec(name)
    unknown = sorted(set(params) - set(_PARAM_TYPES))
    if unknown:
        raise UnknownCodec(name, f"unknown parameters {unknown}")
    for key, value in params.items():
        # bool is an int subclass: demand the exact type so `"k": true` is refused.
        if type(value) is not _PARAM_TYPES[key]:
            raise UnknownCodec(name, f"parameter {key}={value!r} is not a {_PARAM_TYPES[key].__name__}")
    return CODECS[name](**params)
