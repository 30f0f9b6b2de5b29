"""Codec benchmark: payload bytes per contribution against dense bf16 of the same model (the baseline,
measured in the same run), relative error of the decoded estimate, encode/decode time per codec.

    python -m bench.codec                    # the "base" preset (~100M params), every tensor
    python -m bench.codec --preset small     # quicker

Bytes are exact: every codec encodes the full model into a real payload (tensors.payload), and the ratio is
dense bf16 bytes (2·numel, what a bf16 safetensors file holds besides its header) over payload bytes.
The delta is synthetic (seeded Gaussian with a per-row scale spread, like real pseudo-gradients whose rows
differ in magnitude), so the relative error is a property of the codec on unstructured data, not of a
trained model; `topk_only_rel_error` is the same top-k with exact values, the floor quantisation adds to.
Time is CPU wall time unless --device cuda. Top-level `ratio_vs_bf16` is the default codec's ratio."""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import Tensor

from base.model import GPT, ModelSpec, preset_config
from tensors.codecs import DEFAULT_CODEC, ChunkedTopK, Codec
from tensors.payload import Manifest, decode_contribution, encode_contribution

RESULTS = Path(__file__).resolve().parent / "results" / "codec.json"
CODECS: list[ChunkedTopK] = [
    ChunkedTopK(chunk=64, k=32, dct=False, value_bits=2),
    ChunkedTopK(chunk=64, k=32, dct=False, value_bits=8),
    ChunkedTopK(chunk=64, k=32, dct=True, value_bits=2),
    ChunkedTopK(chunk=64, k=32, dct=True, value_bits=8),
]


def model_spec_of(preset: str) -> ModelSpec:
    with torch.device("meta"):  # shapes only: no 400 MB of weights for the base preset
        model = GPT(preset_config(preset))
    return {name: (tuple(p.shape), "float32") for name, p in model.named_parameters()}


def synthetic_delta(spec: ModelSpec, device: torch.device) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    delta = {}
    for name, (shape, _) in spec.items():
        x = torch.randn(shape, generator=g)
        if len(shape) >= 2:
            x *= torch.exp(torch.randn(shape[0], 1, generator=g))  # rows differ in scale (log-normal)
        delta[name] = (x * 1e-3).to(device)
    return delta


def rel_error(estimate: dict[str, Tensor], delta: dict[str, Tensor]) -> float:
    num = sum(float((estimate[n].to(delta[n].device) - delta[n]).double().pow(2).sum()) for n in delta)
    den = sum(float(delta[n].double().pow(2).sum()) for n in delta)
    return math.sqrt(num / den)


def topk_only_error(codec: ChunkedTopK, delta: dict[str, Tensor]) -> float:
    exact = ChunkedTopK(chunk=codec.chunk, k=codec.k, dct=codec.dct, value_bits=8)
    # 8-bit is within 0.4% of exact on kept values; as a floor it is close enough and reuses the codec.
    return rel_error({n: exact.decompress(exact.compress(t), tuple(t.shape)) for n, t in delta.items()}, delta)


def measure(codec: Codec, delta: dict[str, Tensor], spec: ModelSpec, dense_bf16: int) -> dict[str, Any]:
    manifest = Manifest(kind="contribution", run_id=1, window=0, trainer="0x" + "ab" * 20,
                        base_model_cid="bafkreibench", codec=codec.name, codec_params=codec.params(), spec=spec)
    t0 = time.perf_counter()
    encoded = encode_contribution(delta, codec, manifest)  # includes the trainer's decompress (its estimate)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = decode_contribution(encoded.data, spec, len(encoded.data))  # the validator's hostile-input path
    decode_s = time.perf_counter() - t0
    return {"codec": codec.name, "params": codec.params(), "payload_bytes": len(encoded.data),
            "ratio_vs_bf16": dense_bf16 / len(encoded.data), "rel_error": rel_error(decoded.delta, delta),
            "encode_s": encode_s, "decode_s": decode_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but this machine has no CUDA")
    device = torch.device(args.device)
    spec = model_spec_of(args.preset)
    numel = sum(math.prod(shape) for shape, _ in spec.values())
    delta = synthetic_delta(spec, device)

    # Baseline in the same run: the dense bf16 safetensors file of the same delta.
    t0 = time.perf_counter()
    dense = st_save({n: t.to("cpu", torch.bfloat16).contiguous() for n, t in sorted(delta.items())})
    dense_save_s = time.perf_counter() - t0
    dense_bf16 = 2 * numel
    print(f"{args.preset}: {numel / 1e6:.1f}M params in {len(spec)} tensors; dense bf16 {dense_bf16 / 1e6:.1f} MB "
          f"(file {len(dense) / 1e6:.1f} MB, saved in {dense_save_s:.2f}s)")

    rows = []
    for codec in CODECS:
        row = measure(codec, delta, spec, dense_bf16)
        row["topk_only_rel_error"] = topk_only_error(codec, delta)
        row["encode_vs_dense_save"] = row["encode_s"] / dense_save_s
        rows.append(row)
        print(f"  {json.dumps(codec.params())}: {row['payload_bytes'] / 1e6:.3f} MB, {row['ratio_vs_bf16']:.1f}x "
              f"smaller than bf16, rel error {row['rel_error']:.4f} (top-k floor {row['topk_only_rel_error']:.4f}), "
              f"encode {row['encode_s']:.2f}s, decode {row['decode_s']:.2f}s")
    default = next(r for r in rows if r["params"] == DEFAULT_CODEC.params())
    result = {
        "ratio_vs_bf16": default["ratio_vs_bf16"],
        "target_ratio_vs_bf16": 100.0,
        "preset": args.preset, "params": numel, "tensors": len(spec), "dense_bf16_bytes": dense_bf16,
        "dense_bf16_file_bytes": len(dense), "dense_bf16_save_s": dense_save_s,
        "default_codec": DEFAULT_CODEC.params(), "codecs": rows,
        "delta": "synthetic: seeded Gaussian ×1e-3, log-normal per-row scale; all tensors encoded",
        "device": str(device), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"default codec: {default['ratio_vs_bf16']:.1f}x smaller than dense bf16 (target >= 100x) -> {RESULTS}")


if __name__ == "__main__":
    main()
