"""A validator's per-contribution evaluation and decode at 1 and at 2 torch threads, alternated, on whatever load
the machine has (the 2-core development machine is shared): why validator/loop.py evaluates with one thread.

    python -m bench.threads            # tiny model, 32 contributions, 4 alternated rounds

Each round runs in a fresh subprocess per thread count (torch's thread pool is fixed once used). Writes
bench/results/threads.json: milliseconds per contribution for each round and thread count (and the time of one
torch.repeat_interleave, which the codec's index check no longer uses), and the load average at the start of
each round."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "threads.json"


def measure(threads: int, contributions: int) -> dict[str, float]:
    """One subprocess's figures: ms per contribution for evaluate_contributions and for decoding a payload."""
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    from base.model import build_model, model_spec
    from base.run_config import RunConfig
    from node.payloads import RunPayloads
    from validator.context import IpfsPayloadFormat
    from validator.evaluate import evaluate_contributions

    config = RunConfig(seq_len=64, inner_steps=2, seqs_per_step=4, eval_own_seqs=4, eval_random_seqs=16)
    model = build_model(config)
    spec = model_spec(model)
    g = torch.Generator().manual_seed(0)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    encoder, decoder = RunPayloads(config, 0, spec), IpfsPayloadFormat(0, config, spec)
    payloads = [encoder.encode_contribution({n: torch.randn(p.shape, generator=g) * 1e-3 for n, p in base.items()},
                                            f"0x{i:040x}", 1, "bafkbench").data for i in range(contributions)]
    began = time.perf_counter()
    deltas = [decoder.decode_contribution(data, decoder.spec, 1 << 24).delta for data in payloads]
    decode = time.perf_counter() - began
    own = [torch.randint(0, 256, (config.eval_own_seqs, config.seq_len + 1), generator=g) for _ in deltas]
    rows = torch.randint(0, 256, (config.eval_random_seqs, config.seq_len + 1), generator=g)
    evaluate_contributions(model, deltas[:2], own[:2], rows, 1.0, "cpu", base=base)  # warm-up
    began = time.perf_counter()
    evaluate_contributions(model, deltas, own, rows, 1.0, "cpu", base=base)
    evaluate = time.perf_counter() - began
    counts = torch.full((64,), 32)  # a 64×64 tile grid's index expansion, as tensors/codecs.py once did it
    began = time.perf_counter()
    for _ in range(100):
        torch.repeat_interleave(torch.arange(64), counts)
    repeat = time.perf_counter() - began
    return {"evaluate_ms": round(evaluate / contributions * 1000, 2),
            "decode_ms": round(decode / contributions * 1000, 2),
            "torch_repeat_interleave_us": round(repeat / 100 * 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--contributions", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.contributions)))
        return 0
    rounds: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        row: dict[str, Any] = {"load_average_1min": round(os.getloadavg()[0], 2)}
        for threads in (1, 2):
            out = subprocess.run([sys.executable, "-m", "bench.threads", "--child", str(threads), "--contributions",
                                  str(args.contributions)], capture_output=True, text=True, check=True)
            row[f"threads_{threads}"] = json.loads(out.stdout.strip().splitlines()[-1])
        rounds.append(row)
        print(json.dumps(row), flush=True)
    median = {f"threads_{t}": {k: sorted(r[f"threads_{t}"][k] for r in rounds)[len(rounds) // 2]
                               for k in ("evaluate_ms", "decode_ms", "torch_repeat_interleave_us")}
              for t in (1, 2)}
    document = {"contributions": args.contributions, "cpu_count": os.cpu_count(), "median": median, "rounds": rounds}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(median))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
