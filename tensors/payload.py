"""The payload format: one safetensors file, manifest (canonical JSON) in its metadata under "manifest".

Contributions hold each parameter's compressed tensors as `<param>/<key>` (key = idx | val | lut); models
hold each parameter as float32 under its own name. Encoding is deterministic (same inputs, same bytes, same
CID). Decoding treats the bytes as hostile: the size cap and our own parse of the safetensors header
(bounded length, JSON, allowed dtypes, byte counts, contiguous in-bounds offsets) run BEFORE safetensors
touches the data, so a lying header cannot make anyone allocate; nothing is ever unpickled."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from base.jsonguard import loads as bounded_json
from base.model import ModelSpec
from ipfs.errors import PayloadTooLarge
from tensors.codecs import (
    BadIndices,
    Codec,
    GarbagePayload,
    NonFiniteValues,
    PayloadError,
    ShapeMismatch,
    UnknownCodec,
    codec_from,
)

__all__ = [
    "FORMAT_VERSION", "BadIndices", "DecodedContribution", "EncodedContribution", "FormatVersionMismatch",
    "GarbagePayload", "Manifest", "ManifestMismatch", "ModelSpec", "NonFiniteValues", "PayloadError",
    "PayloadTooLarge", "ShapeMismatch", "TruncatedPayload", "UnknownCodec", "decode_contribution",
    "decode_model", "encode_contribution", "encode_model",
]

FORMAT_VERSION = 1
MAX_HEADER_BYTES = 1 << 20
MAX_TENSOR_DIMS = 8  # our tensors are 1-D (packed codes) or 2-D (weights)
Kind = Literal["contribution", "model"]
_ITEMSIZE = {"U8": 1, "F32": 4}
_CONTRIBUTION_DTYPES = {"U8", "F32"}
_MODEL_DTYPES = {"F32"}


class FormatVersionMismatch(PayloadError):
    def __init__(self, found: object) -> None:
        self.found = found
        super().__init__(f"payload format version {found!r}, this build reads version {FORMAT_VERSION}")


class ManifestMismatch(PayloadError):
    """A manifest field differs from what the caller expects (run, window, trainer, kind, codec)."""

    def __init__(self, field_name: str, expected: object, actual: object) -> None:
        self.field = field_name
        self.expected = expected
        self.actual = actual
        super().__init__(f"manifest field {field_name!r}: expected {expected!r}, got {actual!r}")


class TruncatedPayload(PayloadError):
    def __init__(self, needed: int, available: int) -> None:
        self.needed = needed
        self.available = available
        super().__init__(f"payload truncated: needs {needed} bytes, has {available}")


@dataclass(frozen=True)
class Manifest:
    kind: Kind
    run_id: int
    window: int
    trainer: str  # 0x… address; "" for models
    base_model_cid: str
    codec: str  # "" for models
    codec_params: dict[str, Any] = field(default_factory=dict)
    spec: ModelSpec = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", _normal_spec(self.spec))

    def to_json(self) -> str:
        body = asdict(self)
        body["spec"] = {name: [list(shape), dtype] for name, (shape, dtype) in sorted(self.spec.items())}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            raw = bounded_json(text)
        except (ValueError, RecursionError) as err:  # RecursionError: hostile nesting ([[[[…), not a bug of ours
            raise GarbagePayload("manifest", f"not JSON: {err}") from err
        if not isinstance(raw, dict):
            raise GarbagePayload("manifest", "not a JSON object")
        if raw.get("format_version") != FORMAT_VERSION:
            raise FormatVersionMismatch(raw.get("format_version"))
        expected_types: dict[str, type] = {"kind": str, "run_id": int, "window": int, "trainer": str,
                                           "base_model_cid": str, "codec": str, "codec_params": dict,
                                           "spec": dict, "format_version": int}
        if set(raw) != set(expected_types):
            raise GarbagePayload("manifest", f"fields {sorted(raw)} are not {sorted(expected_types)}")
        for key, typ in expected_types.items():
            if type(raw[key]) is not typ:
                raise GarbagePayload("manifest", f"field {key!r} is not a {typ.__name__}")
        if raw["kind"] not in ("contribution", "model"):
            raise GarbagePayload("manifest", f"kind {raw['kind']!r} is neither contribution nor model")
        return cls(kind=raw["kind"], run_id=raw["run_id"], window=raw["window"], trainer=raw["trainer"],
                   base_model_cid=raw["base_model_cid"], codec=raw["codec"], codec_params=raw["codec_params"],
                   spec=_parse_spec(raw["spec"]), format_version=raw["format_version"])


def _parse_spec(raw: dict[str, Any]) -> ModelSpec:
    spec: ModelSpec = {}
    for name, entry in raw.items():
        ok = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list)
              and all(type(d) is int and d >= 0 for d in entry[0]) and isinstance(entry[1], str))
        if not ok:
            raise GarbagePayload("manifest", f"spec entry {name!r} is not [[dims...], dtype]")
        spec[name] = (tuple(entry[0]), entry[1])
    return spec


def _normal_spec(spec: Mapping[str, tuple[tuple[int, ...], str]]) -> ModelSpec:
    return {name: (tuple(int(d) for d in shape), str(dtype)) for name, (shape, dtype) in spec.items()}


class EncodedContribution(NamedTuple):
    data: bytes
    estimate: dict[str, Tensor]  # what a receiver decodes, float32 CPU: the trainer's error feedback uses it


class DecodedContribution(NamedTuple):
    manifest: Manifest
    delta: dict[str, Tensor]  # dense float32, CPU
    indices: dict[str, Tensor]  # sorted flat positions of the kept coefficients (int64)


def spec_of(tensors: Mapping[str, Tensor]) -> ModelSpec:
    return {n: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in tensors.items()}


def _check_spec(claimed: ModelSpec, expected: ModelSpec) -> None:
    if set(claimed) != set(expected):
        diff = sorted(set(claimed) ^ set(expected))
        raise ShapeMismatch("parameter set", sorted(expected)[:5], f"differs in {diff[:5]}")
    for name in sorted(expected):
        if claimed[name] != expected[name]:
            raise ShapeMismatch(name, expected[name], claimed[name])


def _check_shapes(actual: Mapping[str, tuple[int, ...]], spec: Mapping[str, tuple[tuple[int, ...], str]]) -> None:
    _check_spec({n: (tuple(s), "") for n, s in actual.items()}, {n: (tuple(s), "") for n, (s, _) in spec.items()})


def encode_contribution(delta: Mapping[str, Tensor], codec: Codec, manifest: Manifest) -> EncodedContribution:
    if manifest.kind != "contribution":
        raise ManifestMismatch("kind", "contribution", manifest.kind)
    if manifest.codec != codec.name:
        raise ManifestMismatch("codec", codec.name, manifest.codec)
    if manifest.codec_params != codec.params():
        raise ManifestMismatch("codec_params", codec.params(), manifest.codec_params)
    _check_shapes({n: tuple(t.shape) for n, t in delta.items()}, manifest.spec)
    tensors: dict[str, Tensor] = {}
    estimate: dict[str, Tensor] = {}
    for name in sorted(delta):
        compressed = {key: t.contiguous() for key, t in codec.compress(delta[name]).items()}
        estimate[name] = codec.decompress(compressed, tuple(delta[name].shape))
        tensors.update({f"{name}/{key}": t for key, t in compressed.items()})
    return EncodedContribution(st_save(tensors, metadata={"manifest": manifest.to_json()}), estimate)


def decode_contribution(data: bytes, spec: Mapping[str, tuple[tuple[int, ...], str]], max_bytes: int,
                        expect: Mapping[str, Any] | None = None) -> DecodedContribution:
    """Decode a hostile contribution for the model `spec`; `expect` pins manifest fields (e.g. run_id,
    window, trainer, kind, base_model_cid). Every refusal is a PayloadError subclass (or PayloadTooLarge)."""
    manifest, tensors = _load(data, max_bytes, _CONTRIBUTION_DTYPES, "contribution payload")
    _check_expected(manifest, {"kind": "contribution", **(expect or {})})
    expected_spec = _normal_spec(spec)
    _check_spec(manifest.spec, expected_spec)
    codec = codec_from(manifest.codec, manifest.codec_params)
    grouped: dict[str, dict[str, Tensor]] = {}
    for key, t in tensors.items():
        name, sep, part = key.rpartition("/")
        if not sep or name not in expected_spec:
            raise ShapeMismatch(key, "a tensor of a model parameter", "an unknown tensor name")
        grouped.setdefault(name, {})[part] = t
    missing = sorted(set(expected_spec) - set(grouped))
    if missing:
        raise ShapeMismatch(missing[0], "compressed tensors for every parameter", "none")
    delta: dict[str, Tensor] = {}
    indices: dict[str, Tensor] = {}
    for name in sorted(expected_spec):
        shape = expected_spec[name][0]
        try:
            delta[name] = codec.decompress(grouped[name], shape)
            indices[name] = codec.chosen_indices(grouped[name], shape)
        except (BadIndices, NonFiniteValues, GarbagePayload) as err:
            _name_tensor(err, name)
            raise
    return DecodedContribution(manifest, delta, indices)


def _name_tensor(err: PayloadError, name: str) -> None:
    """Codec errors do not know the parameter name; prefix it so a rejection says where."""
    err.args = (f"{name}: {err.args[0] if err.args else err}",)
    if isinstance(err, BadIndices | NonFiniteValues):
        err.tensor = name


def encode_model(state: Mapping[str, Tensor], manifest: Manifest) -> bytes:
    if manifest.kind != "model":
        raise ManifestMismatch("kind", "model", manifest.kind)
    tensors = {n: state[n].detach().to("cpu", torch.float32).contiguous() for n in sorted(state)}
    _check_shapes({n: tuple(t.shape) for n, t in tensors.items()}, manifest.spec)
    return bytes(st_save(tensors, metadata={"manifest": manifest.to_json()}))


def decode_model(data: bytes, spec: Mapping[str, tuple[tuple[int, ...], str]],
                 max_bytes: int) -> tuple[Manifest, dict[str, Tensor]]:
    manifest, tensors = _load(data, max_bytes, _MODEL_DTYPES, "model payload")
    _check_expected(manifest, {"kind": "model"})
    expected = _normal_spec(spec)
    _check_spec(manifest.spec, expected)
    _check_shapes({n: tuple(t.shape) for n, t in tensors.items()}, expected)
    for name in sorted(tensors):
        if not bool(torch.isfinite(tensors[name]).all()):
            raise NonFiniteValues(name, "model weights")
    return manifest, {n: tensors[n] for n in sorted(tensors)}


def _check_expected(manifest: Manifest, expect: Mapping[str, Any]) -> None:
    for key, want in expect.items():
        if not hasattr(manifest, key):
            raise ValueError(f"cannot pin unknown manifest field {key!r}")  # caller bug, not a payload error
        got = getattr(manifest, key)
        if key == "trainer" and isinstance(want, str) and isinstance(got, str):
            want, got = want.lower(), got.lower()  # checksummed and lower-case addresses are the same trainer
        if got != want:
            raise ManifestMismatch(key, want, got)


def _load(data: bytes, max_bytes: int, dtypes: set[str], what: str) -> tuple[Manifest, dict[str, Tensor]]:
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{what} of {len(data)} bytes", max_bytes)
    header = parse_header(data, dtypes)
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("manifest"), str):
        raise GarbagePayload(what, "no manifest in the safetensors metadata")
    manifest = Manifest.from_json(metadata["manifest"])
    try:
        tensors = st_load(bytes(data))
    except SafetensorError as err:  # our header check should make this unreachable; refuse, do not crash
        raise GarbagePayload(what, f"safetensors refused it: {err}") from err
    return manifest, tensors


def parse_header(data: bytes, dtypes: set[str]) -> dict[str, Any]:
    """Validate a safetensors header without trusting it: bounded length, JSON object, allowed dtypes,
    byte count = prod(shape)·itemsize, offsets contiguous from 0 to exactly the end of the file."""
    if len(data) < 8:
        raise TruncatedPayload(8, len(data))
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER_BYTES:
        raise GarbagePayload("safetensors header", f"claims {length} bytes (limit {MAX_HEADER_BYTES})")
    if length > len(data) - 8:
        raise TruncatedPayload(8 + length, len(data))
    try:
        header = bounded_json(data[8 : 8 + length])
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: hostile nesting
        raise GarbagePayload("safetensors header", f"not JSON: {err}") from err
    if not isinstance(header, dict):
        raise GarbagePayload("safetensors header", "not a JSON object")
    body = len(data) - 8 - length
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        spans.append(_checked_span(name, entry, dtypes))
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            raise GarbagePayload(f"tensor {name!r}", f"data starts at {begin}, expected {end} (gap or overlap)")
        end = stop
    if end > body:
        raise TruncatedPayload(8 + length + end, len(data))
    if end < body:
        raise GarbagePayload("safetensors data", f"{body - end} trailing bytes after the last tensor")
    return header


def _checked_span(name: str, entry: object, dtypes: set[str]) -> tuple[int, int, str]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise GarbagePayload(f"tensor {name!r}", "header entry is not {dtype, shape, data_offsets}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in dtypes:  # a list or dict dtype must not reach the set lookup
        raise GarbagePayload(f"tensor {name!r}", f"dtype {str(dtype)[:40]} not allowed here ({sorted(dtypes)})")
    # The rank is bounded before the product is taken: 50k huge dimensions in a 1 MiB header made math.prod
    # multiply multi-megabit integers for minutes.
    if not isinstance(shape, list) or len(shape) > MAX_TENSOR_DIMS or not all(type(d) is int and d >= 0 for d in shape):
        raise GarbagePayload(f"tensor {name!r}", f"shape {str(shape)[:80]} is not a list of at most "
                                                 f"{MAX_TENSOR_DIMS} sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise GarbagePayload(f"tensor {name!r}", f"data_offsets {offsets!r} are not [begin, end]")
    if offsets[1] - offsets[0] != math.prod(shape) * _ITEMSIZE[dtype]:
        raise GarbagePayload(f"tensor {name!r}", f"{offsets[1] - offsets[0]} bytes for shape {shape} {dtype}")
    return offsets[0], offsets[1], name
