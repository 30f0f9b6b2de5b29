"""The payload format: round trips, determinism, and a specific refusal for every hostile input the issue
lists (wrong version, manifest mismatch, unknown codec, shapes, indices, non-finite values, oversize,
truncated, garbage, a lying header)."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from base.model import GPT, PRESETS, ModelSpec, model_spec
from ipfs.cid import raw_cid
from ipfs.errors import PayloadTooLarge
from tensors.codecs import DEFAULT_CODEC, ChunkedTopK, Codec, index_bits, pack_bits, unpack_bits
from tensors.payload import (
    FORMAT_VERSION,
    BadIndices,
    FormatVersionMismatch,
    GarbagePayload,
    Manifest,
    ManifestMismatch,
    NonFiniteValues,
    PayloadError,
    ShapeMismatch,
    TruncatedPayload,
    UnknownCodec,
    decode_contribution,
    decode_model,
    encode_contribution,
    encode_model,
)

TRAINER = "0x" + "AB" * 20
LIMIT = 1 << 24
SPEC: ModelSpec = model_spec(GPT(PRESETS["tiny"]))


def delta_for(spec: ModelSpec, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) for name, (shape, _) in spec.items()}


def manifest(codec: Codec = DEFAULT_CODEC, **overrides: object) -> Manifest:
    fields: dict[str, object] = {"kind": "contribution", "run_id": 7, "window": 3, "trainer": TRAINER,
                                 "base_model_cid": "bafkreibase", "codec": codec.name,
                                 "codec_params": codec.params(), "spec": SPEC}
    fields.update(overrides)
    return Manifest(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def payload() -> bytes:
    return encode_contribution(delta_for(SPEC), DEFAULT_CODEC, manifest()).data


def rewritten(data: bytes, edit_manifest: Callable[[dict[str, object]], None] | None = None,
              edit_tensors: Callable[[dict[str, Tensor]], None] | None = None) -> bytes:
    """A well-formed safetensors file with the manifest or tensors changed (what a hostile trainer sends)."""
    tensors = st_load(data)
    header_len = struct.unpack("<Q", data[:8])[0]
    raw = json.loads(json.loads(data[8 : 8 + header_len])["__metadata__"]["manifest"])
    if edit_manifest:
        edit_manifest(raw)
    if edit_tensors:
        edit_tensors(tensors)
    return st_save(tensors, metadata={"manifest": json.dumps(raw)})


def with_header(header: dict[str, object], body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def test_contribution_round_trips_and_matches_the_trainers_estimate(payload: bytes) -> None:
    encoded = encode_contribution(delta_for(SPEC), DEFAULT_CODEC, manifest())
    decoded = decode_contribution(payload, SPEC, LIMIT, expect={"run_id": 7, "window": 3, "trainer": TRAINER.lower()})
    assert decoded.manifest == manifest()
    assert sorted(decoded.delta) == sorted(SPEC)
    for name, (shape, _) in SPEC.items():
        assert decoded.delta[name].dtype == torch.float32 and tuple(decoded.delta[name].shape) == shape
        assert torch.equal(decoded.delta[name], encoded.estimate[name])  # error feedback sees what we decode
        kept = decoded.indices[name]
        assert kept.dtype == torch.long and bool((kept[1:] > kept[:-1]).all())
        nonzero = decoded.delta[name].reshape(-1).nonzero().reshape(-1)
        assert set(nonzero.tolist()) <= set(kept.tolist())


def test_encoding_is_deterministic(payload: bytes) -> None:
    again = encode_contribution({n: t.clone() for n, t in reversed(delta_for(SPEC).items())}, DEFAULT_CODEC,
                                manifest()).data
    assert again == payload
    assert len(payload) <= 262_144 and raw_cid(again) == raw_cid(payload)  # one block: same bytes, same CID


def test_default_codec_payload_is_over_100x_smaller_than_dense_bf16_for_the_small_model() -> None:
    spec = model_spec(GPT(PRESETS["small"]))
    small = manifest(spec=spec)
    data = encode_contribution(delta_for(spec), DEFAULT_CODEC, small).data
    dense_bf16 = 2 * sum(torch.Size(shape).numel() for shape, _ in spec.values())
    assert dense_bf16 / len(data) >= 100


def test_manifest_json_round_trips() -> None:
    m = manifest(ChunkedTopK(dct=True, value_bits=8))
    assert Manifest.from_json(m.to_json()) == m


def _poison_first(tensors: dict[str, Tensor]) -> None:
    tensors[sorted(tensors)[0]].fill_(float("nan"))


def test_model_round_trips_deterministically_in_name_order() -> None:
    params = dict(GPT(PRESETS["tiny"]).named_parameters())
    m = Manifest(kind="model", run_id=7, window=3, trainer="", base_model_cid="", codec="", spec=SPEC)
    data = encode_model(params, m)
    assert encode_model(dict(reversed(list(params.items()))), m) == data
    got_manifest, state = decode_model(data, SPEC, LIMIT)
    assert got_manifest == m and list(state) == sorted(params)
    assert all(torch.equal(state[n], params[n].detach()) for n in params)
    with pytest.raises(NonFiniteValues):
        decode_model(rewritten(data, edit_tensors=_poison_first), SPEC, LIMIT)
    with pytest.raises(PayloadError):
        decode_model(encode_contribution(delta_for(SPEC), DEFAULT_CODEC, manifest()).data, SPEC, LIMIT)


def test_encoding_refuses_a_manifest_that_does_not_describe_the_codec_or_the_delta() -> None:
    with pytest.raises(ManifestMismatch):
        encode_contribution(delta_for(SPEC), DEFAULT_CODEC, manifest(codec_params={"chunk": 32}))
    with pytest.raises(ManifestMismatch):
        encode_contribution(delta_for(SPEC), DEFAULT_CODEC, manifest(kind="model"))
    wrong = delta_for(SPEC)
    wrong["transformer.wpe.weight"] = torch.zeros(3, 3)
    with pytest.raises(ShapeMismatch):
        encode_contribution(wrong, DEFAULT_CODEC, manifest())


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    return lambda raw: raw.__setitem__(key, value)


def _edit_indices(edit: Callable[[Tensor], None]) -> Callable[[dict[str, Tensor]], None]:
    """Unpack the first 2-D parameter's indices, edit them, pack them back (same byte length)."""
    def apply(tensors: dict[str, Tensor]) -> None:
        name = "transformer.wte.weight"  # 256×64: four 64×64 tiles, 32 indices each
        local = unpack_bits(tensors[f"{name}/idx"], index_bits(4096), 128)
        edit(local)
        tensors[f"{name}/idx"] = pack_bits(local, index_bits(4096))
    return apply


def _duplicate(local: Tensor) -> None:
    local[1] = local[0]


def _resize_in_spec(raw: dict[str, object]) -> None:
    spec = raw["spec"]
    assert isinstance(spec, dict)
    spec["transformer.wpe.weight"] = [[63, 64], "float32"]


def _drop_part(tensors: dict[str, Tensor]) -> None:
    del tensors["transformer.wpe.weight/idx"]


def _add_foreign(tensors: dict[str, Tensor]) -> None:
    tensors["evil/idx"] = tensors["transformer.wpe.weight/idx"].clone()


def _nan_lut(tensors: dict[str, Tensor]) -> None:
    tensors["transformer.wte.weight/lut"] = torch.tensor([float("nan"), -1.0, 1.0, 2.0])


HOSTILE_EDITS: list[tuple[str, Callable[[bytes], bytes], type[Exception]]] = [
    ("wrong version", lambda d: rewritten(d, _set("format_version", FORMAT_VERSION + 1)), FormatVersionMismatch),
    ("run id", lambda d: rewritten(d, _set("run_id", 8)), ManifestMismatch),
    ("window", lambda d: rewritten(d, _set("window", 2)), ManifestMismatch),
    ("trainer", lambda d: rewritten(d, _set("trainer", "0x" + "cd" * 20)), ManifestMismatch),
    ("kind", lambda d: rewritten(d, _set("kind", "model")), ManifestMismatch),
    ("unknown codec", lambda d: rewritten(d, _set("codec", "zstd_dense")), UnknownCodec),
    ("codec params", lambda d: rewritten(d, _set("codec_params", {"chunk": 64, "k": "32"})), UnknownCodec),
    ("manifest field type", lambda d: rewritten(d, _set("window", "3")), GarbagePayload),
    ("extra manifest field", lambda d: rewritten(d, _set("note", "hi")), GarbagePayload),
    ("spec shape", lambda d: rewritten(d, _resize_in_spec), ShapeMismatch),
    ("missing tensor", lambda d: rewritten(d, edit_tensors=_drop_part), GarbagePayload),
    ("foreign tensor", lambda d: rewritten(d, edit_tensors=_add_foreign), ShapeMismatch),
    ("unordered index", lambda d: rewritten(d, edit_tensors=_edit_indices(lambda i: i.__setitem__(31, 0))), BadIndices),
    ("duplicated index", lambda d: rewritten(d, edit_tensors=_edit_indices(_duplicate)), BadIndices),
    ("non-finite lookup", lambda d: rewritten(d, edit_tensors=_nan_lut), NonFiniteValues),
]


@pytest.mark.parametrize(("case", "make", "error"), HOSTILE_EDITS, ids=[c[0] for c in HOSTILE_EDITS])
def test_each_hostile_payload_gets_its_specific_error(
    payload: bytes, case: str, make: Callable[[bytes], bytes], error: type[Exception]
) -> None:
    with pytest.raises(error):
        decode_contribution(make(payload), SPEC, LIMIT, expect={"run_id": 7, "window": 3, "trainer": TRAINER})


def test_indices_beyond_the_tensor_are_refused() -> None:
    # A 1-D parameter of 64 elements: its only piece has 64 real positions of 4096; 64 and above are padding.
    def beyond(tensors: dict[str, Tensor]) -> None:
        name = "transformer.ln_f.weight"
        local = unpack_bits(tensors[f"{name}/idx"], 12, 32)
        local[31] = 4000
        tensors[f"{name}/idx"] = pack_bits(local, 12)

    data = encode_contribution(delta_for(SPEC), DEFAULT_CODEC, manifest()).data
    with pytest.raises(BadIndices):
        decode_contribution(rewritten(data, edit_tensors=beyond), SPEC, LIMIT)


def test_decoding_against_another_model_is_a_shape_mismatch(payload: bytes) -> None:
    other = model_spec(GPT(PRESETS["tiny"].with_overrides({"n_layer": 1})))
    with pytest.raises(ShapeMismatch):
        decode_contribution(payload, other, LIMIT)


def test_oversize_payloads_are_refused_before_parsing(payload: bytes) -> None:
    with pytest.raises(PayloadTooLarge):
        decode_contribution(payload, SPEC, len(payload) - 1)
    decode_contribution(payload, SPEC, len(payload))


def test_every_truncation_is_refused(payload: bytes) -> None:
    cuts = sorted({0, 3, 7, 8, 9, 100, len(payload) // 2, len(payload) - 1, *random.Random(0).sample(
        range(len(payload)), 40)})
    for cut in cuts:
        with pytest.raises(TruncatedPayload):
            decode_contribution(payload[:cut], SPEC, LIMIT)


def test_garbage_and_lying_headers_are_refused_without_allocating(payload: bytes) -> None:
    header_len = struct.unpack("<Q", payload[:8])[0]
    entry = {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}
    cases: list[tuple[bytes, type[Exception]]] = [
        (random.Random(1).randbytes(5000), GarbagePayload),  # header length ~ 2**60
        (struct.pack("<Q", 2**63) + b"{}", GarbagePayload),
        (struct.pack("<Q", 12) + b"not json!!!!", GarbagePayload),
        (struct.pack("<Q", 2) + b"[]", GarbagePayload),
        (payload + b"\x00" * 16, GarbagePayload),  # trailing bytes
        # A header claiming a terabyte tensor: refused from the header alone, nothing allocated.
        (with_header({"x": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]}}, b""), TruncatedPayload),
        (with_header({"x": {**entry, "shape": [5]}}, b"\x00" * 4), GarbagePayload),  # byte count ≠ shape
        (with_header({"x": entry, "y": {**entry, "data_offsets": [2, 6]}}, b"\x00" * 6), GarbagePayload),  # overlap
        (with_header({"x": {**entry, "dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, b"\x00" * 8),
         GarbagePayload),
        (with_header({"x": {**entry, "data_offsets": [-4, 0]}}, b""), GarbagePayload),
        (with_header({"x": entry}, b"\x00" * 4), GarbagePayload),  # well-formed file, no manifest
        (with_header({"__metadata__": {"manifest": "{"}, "x": entry}, b"\x00" * 4), GarbagePayload),
        (payload[:8] + b"\xff" + payload[9:], GarbagePayload),  # header bytes not UTF-8/JSON
    ]
    assert header_len < len(payload)
    for data, error in cases:
        with pytest.raises(error):
            decode_contribution(data, SPEC, LIMIT)


def test_random_byte_flips_decode_or_raise_a_payload_error(payload: bytes) -> None:
    rng = random.Random(2)
    for _ in range(200):
        mutated = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        try:
            decoded = decode_contribution(bytes(mutated), SPEC, LIMIT)
        except PayloadError:
            continue
        assert all(bool(torch.isfinite(t).all()) for t in decoded.delta.values())
