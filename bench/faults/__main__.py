"""python -m bench.faults [--faults N] [--only NAME ...] -> bench/results/faults.json

Runs every registered fault scenario (see bench.faults.all_scenarios) against real processes and writes
faults_injected, recovered, lost, double_applied, forks, stalled_epochs (and, for information, unpaid_by_scoring),
plus one row per injected fault. Exits 1 unless lost, double_applied, forks and stalled_epochs are all 0."""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from bench.faults import FaultOutcome, all_scenarios, summarise

RESULTS = Path(__file__).resolve().parent.parent / "results" / "faults.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=12, help="faults to inject per scenario (default 12)")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    scenarios = all_scenarios()
    chosen = args.only or sorted(scenarios)
    unknown = sorted(set(chosen) - set(scenarios))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {sorted(scenarios)}")
    rng = random.Random(args.seed)
    outcomes: list[FaultOutcome] = []
    timings: dict[str, float] = {}
    started = time.perf_counter()
    for name in chosen:
        t0 = time.perf_counter()
        print(f"[{name}] injecting {args.faults} faults …", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as tmp:
            got = scenarios[name](args.faults, rng, Path(tmp))
        timings[name] = round(time.perf_counter() - t0, 1)
        outcomes.extend(got)
        s = summarise(got)
        print(f"[{name}] {s['faults_injected']} injected, {s['recovered']} recovered, lost {s['lost']}, "
              f"double_applied {s['double_applied']}, forks {s['forks']}, stalled_epochs {s['stalled_epochs']} "
              f"({timings[name]} s)", flush=True)
    results = {**summarise(outcomes), "scenarios": chosen, "seconds_per_scenario": timings,
               "seconds": round(time.perf_counter() - started, 1), "seed": args.seed,
               "outcomes": [o.as_dict() for o in outcomes]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if isinstance(v, int) and k != "seed"}))
    print(f"wrote {args.out}")
    failures = ("lost", "double_applied", "forks", "stalled_epochs")
    return 0 if all(results[k] == 0 for k in failures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
