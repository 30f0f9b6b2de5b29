"""The codecs as pure functions: error ceilings, exact index round-trip, determinism, model shapes, and
refusal of hostile compressed tensors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from base.model import GPT, PRESETS, model_spec
from ipfs.cid import raw_cid  # single-block payloads: the CID `ipfs add` gives them
from tensors.codecs import (
    DEFAULT_CODEC,
    BadIndices,
    ChunkedTopK,
    GarbagePayload,
    NonFiniteValues,
    TileLayout,
    UnknownCodec,
    codec_from,
    dct_matrix,
    index_bits,
    pack_bits,
    packed_len,
    unpack_bits,
)

SHAPES = [(256, 64), (100, 70), (64,), (5000,), (3, 4, 5), (1,), ()]
# One chunk per index width 6..12: ceil(log2(chunk²)) == width.
CHUNK_FOR_WIDTH = {6: 8, 7: 11, 8: 16, 9: 22, 10: 32, 11: 45, 12: 64}


def gaussian(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def compressed_bytes(c: dict[str, Tensor]) -> bytes:
    return b"".join(c[key].numpy().tobytes() for key in sorted(c))


def test_index_bits_are_the_fewest_that_hold_the_chunk() -> None:
    assert index_bits(4096) == 12
    for width, chunk in CHUNK_FOR_WIDTH.items():
        assert index_bits(chunk * chunk) == width
        assert 2 ** (width - 1) < chunk * chunk <= 2**width


@given(st.integers(1, 16), st.lists(st.integers(0, 2**16 - 1), max_size=300))
def test_bit_packing_round_trips_exactly(bits: int, raw: list[int]) -> None:
    values = torch.tensor([v % (1 << bits) for v in raw], dtype=torch.long)
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_len(len(raw), bits)
    assert torch.equal(unpack_bits(packed, bits, len(raw)), values)


@pytest.mark.parametrize("width", sorted(CHUNK_FOR_WIDTH))
def test_chosen_indices_round_trip_exactly_at_every_width(width: int) -> None:
    chunk = CHUNK_FOR_WIDTH[width]
    k = max(1, chunk * chunk // 5)
    shape = (chunk * 2 + 3, chunk + 5)  # edge tiles on both axes
    x = gaussian(shape, seed=width)
    codec = ChunkedTopK(chunk=chunk, k=k, value_bits=8)
    c = codec.compress(x)
    layout = TileLayout(shape, chunk)
    # Independent expectation: per tile, the k largest |x| among real (non-padding) positions.
    positions = layout.positions()
    expected = []
    for tile in range(layout.n_tiles):
        real = positions[tile][positions[tile] >= 0]
        mags = x.reshape(-1)[real].abs()
        expected.append(real[mags.argsort(descending=True, stable=True)[:k]])
    want = torch.cat(expected).sort().values
    got = codec.chosen_indices(c, shape)
    assert torch.equal(got, want)
    assert c["idx"].numel() == packed_len(int(layout.kept_per_tile(k).sum()), width)


@pytest.mark.parametrize("dct", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_keeping_every_coefficient_at_8_bits_is_lossless_to_quantisation(dct: bool, shape: tuple[int, ...]) -> None:
    x = gaussian(shape)
    codec = ChunkedTopK(chunk=8, k=64, dct=dct, value_bits=8)
    y = codec.decompress(codec.compress(x), shape)
    assert y.shape == x.shape and y.dtype == torch.float32
    # 8-bit linear: each coefficient within half a step (peak/254); the DCT is orthonormal, so the same
    # bound holds on the norm of the error.
    assert float((y - x).norm()) <= 0.02 * float(x.norm()) + 1e-7


@pytest.mark.parametrize("shape", [(256, 64), (100, 70), (9000,)])
def test_8_bit_keeps_kept_coefficients_within_one_percent_and_drops_the_rest(shape: tuple[int, ...]) -> None:
    x = gaussian(shape, seed=1)
    codec = ChunkedTopK(value_bits=8)
    c = codec.compress(x)
    y = codec.decompress(c, shape).reshape(-1)
    kept = codec.chosen_indices(c, shape)
    flat = x.reshape(-1)
    assert float((y[kept] - flat[kept]).abs().max()) <= 0.01 * float(flat[kept].abs().max())
    dropped = torch.ones_like(flat, dtype=torch.bool)
    dropped[kept] = False
    assert bool((y[dropped] == 0).all())


def test_2_bit_keeps_signs_and_bounds_the_error_on_kept_coefficients() -> None:
    shape = (256, 256)
    x = gaussian(shape, seed=2)
    c = DEFAULT_CODEC.compress(x)
    kept = DEFAULT_CODEC.chosen_indices(c, shape)
    y = DEFAULT_CODEC.decompress(c, shape).reshape(-1)[kept]
    flat = x.reshape(-1)[kept]
    assert bool((torch.sign(y) == torch.sign(flat)).all())
    assert float((y - flat).norm()) <= 0.15 * float(flat.norm())
    assert torch.unique(y).numel() <= 4


def test_estimate_is_the_best_k_term_approximation_ceiling() -> None:
    # top-32 of 4096 on white noise keeps a small share of the energy; the estimate must never be worse
    # than dropping everything, and with DCT a smooth tensor is captured almost entirely.
    smooth = torch.sin(torch.linspace(0, 6, 256)[:, None] * torch.linspace(0, 3, 128)[None, :])
    plain, dct = ChunkedTopK(value_bits=8), ChunkedTopK(value_bits=8, dct=True)
    for codec in (plain, dct):
        y = codec.decompress(codec.compress(smooth), smooth.shape)
        assert float((y - smooth).norm()) < float(smooth.norm())
    y_dct = dct.decompress(dct.compress(smooth), smooth.shape)
    assert float((y_dct - smooth).norm()) <= 0.1 * float(smooth.norm())


def test_dct_matrix_is_orthonormal() -> None:
    for n in (1, 7, 64):
        d = dct_matrix(n).double()
        assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("codec", [DEFAULT_CODEC, ChunkedTopK(dct=True, value_bits=8), ChunkedTopK(chunk=16, k=8)])
def test_same_input_gives_same_bytes_and_same_cid(codec: ChunkedTopK) -> None:
    x = gaussian((300, 200), seed=3)
    first, second = codec.compress(x), codec.compress(x.clone())
    assert compressed_bytes(first) == compressed_bytes(second)
    assert raw_cid(compressed_bytes(first)) == raw_cid(compressed_bytes(second))


def test_ties_go_to_the_lower_position() -> None:
    codec = ChunkedTopK(chunk=4, k=3, value_bits=8)
    c = codec.compress(torch.ones(4, 4))
    assert codec.chosen_indices(c, (4, 4)).tolist() == [0, 1, 2]
    c = codec.compress(torch.zeros(10))
    assert codec.chosen_indices(c, (10,)).tolist() == [0, 1, 2]
    assert bool((codec.decompress(c, (10,)) == 0).all())


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("codec", [DEFAULT_CODEC, ChunkedTopK(dct=True, value_bits=8)])
def test_decode_of_encode_has_the_shape_of_every_model_parameter(preset: str, codec: ChunkedTopK) -> None:
    for name, (shape, _) in model_spec(GPT(PRESETS[preset])).items():
        x = gaussian(shape)
        c = codec.compress(x)
        assert all(t.dtype in (torch.uint8, torch.float32) and t.dim() == 1 for t in c.values()), name
        assert codec.decompress(c, shape).shape == torch.Size(shape), name
        kept = codec.chosen_indices(c, shape)
        assert kept.numel() > 0 and int(kept.max()) < math.prod(shape), name
        assert bool((kept[1:] > kept[:-1]).all()), name


def test_registry_builds_codecs_and_refuses_unknown_names_and_params() -> None:
    assert codec_from("chunked_topk", DEFAULT_CODEC.params()) == DEFAULT_CODEC
    assert DEFAULT_CODEC.name == "chunked_topk"
    assert DEFAULT_CODEC.params() == {"chunk": 64, "k": 32, "dct": False, "value_bits": 2}
    bad: list[tuple[str, dict[str, object]]] = [
        ("topk_v2", {}),
        ("chunked_topk", {"chunk": 64, "rank": 3}),
        ("chunked_topk", {"k": True}),
        ("chunked_topk", {"chunk": 1 << 20}),
        ("chunked_topk", {"chunk": 8, "k": 65}),
        ("chunked_topk", {"value_bits": 4}),
        ("chunked_topk", {"dct": 1}),
    ]
    for name, params in bad:
        with pytest.raises(UnknownCodec):
            codec_from(name, params)


def test_compress_refuses_non_finite_input() -> None:
    x = gaussian((64, 64))
    x[3, 3] = float("nan")
    with pytest.raises(NonFiniteValues):
        DEFAULT_CODEC.compress(x)


def _with_local_indices(codec: ChunkedTopK, c: dict[str, Tensor], shape: tuple[int, ...],
                        edit: list[tuple[int, int]]) -> dict[str, Tensor]:
    layout = TileLayout(shape, codec.chunk)
    count = int(layout.kept_per_tile(codec.k).sum())
    bits = index_bits(layout.chunk_size)
    local = unpack_bits(c["idx"], bits, count)
    for position, value in edit:
        local[position] = value
    return {**c, "idx": pack_bits(local, bits)}


def test_decoding_refuses_hostile_compressed_tensors() -> None:
    codec = ChunkedTopK(chunk=11, k=4, value_bits=8)  # chunk size 121 in 7 bits: 121..127 are out of range
    shape = (11, 30)  # three tiles, the last 11×8 (columns 8..10 of it are padding)
    c = codec.compress(gaussian(shape))
    cases: list[tuple[dict[str, Tensor], type[Exception]]] = [
        (_with_local_indices(codec, c, shape, [(0, 125)]), BadIndices),  # beyond the chunk
        (_with_local_indices(codec, c, shape, [(8, 10)]), BadIndices),  # last tile, column 10: padding
        (_with_local_indices(codec, c, shape, [(1, int(unpack_bits(c["idx"], 7, 12)[0]))]), BadIndices),  # dup
        (_with_local_indices(codec, c, shape, [(0, 120), (1, 0)]), BadIndices),  # not ascending
        ({**c, "lut": torch.tensor([float("inf")])}, NonFiniteValues),
        ({**c, "lut": torch.tensor([3e38])}, NonFiniteValues),  # finite scale, overflowing product
        ({**c, "idx": c["idx"][:-1]}, GarbagePayload),
        ({**c, "val": c["val"].float()}, GarbagePayload),
        ({"idx": c["idx"], "val": c["val"]}, GarbagePayload),
        ({**c, "extra": c["val"]}, GarbagePayload),
    ]
    for hostile, error in cases:
        with pytest.raises(error):
            codec.decompress(hostile, shape)
        if error is BadIndices:
            with pytest.raises(error):
                codec.chosen_indices(hostile, shape)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.binary(min_size=0, max_size=64))
def test_random_compressed_bytes_decode_or_raise_a_payload_error(idx: bytes, val: bytes) -> None:
    from tensors.codecs import PayloadError

    c = {"idx": torch.frombuffer(bytearray(idx), dtype=torch.uint8) if idx else torch.empty(0, dtype=torch.uint8),
         "val": torch.frombuffer(bytearray(val), dtype=torch.uint8) if val else torch.empty(0, dtype=torch.uint8),
         "lut": torch.tensor([-1.0, -0.5, 0.5, 1.0])}
    codec = ChunkedTopK(chunk=4, k=3)
    try:
        out = codec.decompress(c, (5, 6))
    except PayloadError:
        return
    assert out.shape == (5, 6) and bool(torch.isfinite(out).all())
