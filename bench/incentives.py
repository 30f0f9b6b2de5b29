"""Incentives tournament: does any strategy earn more than honest training, or more than its share of compute?

    python -m bench.incentives            # every strategy of bench/strategies.py, 30 windows × 3 seeds (~15 min)
    python -m bench.incentives --quick    # CI smoke: three strategies, 5 windows, 1 seed

In process (bench/marketsim.py): the node's inner loop with carried AdamW moments, its error feedback and codec,
the validator's decoder and its whole ScoringStrategy (filters, evaluation on rows chosen after the commit,
OpenSkill rating, aggregation, marginal value, pay), on the `--small` set-up of bench.convergence (tiny preset).
Strategies play in markets of 5 honest trainers and at most 3 strategy identities, so honest trainers stay the
majority of what is aggregated (the assumption of the median-norm clip and of the effort yardstick). Pay is
each window's weight summed over the run (validator/scoring.epoch_weights over one epoch of all windows).

bench/results/incentives.json, the issue's schema:
    {"strategies": {NAME: {"pay_vs_honest": x, "compute_fraction": c, "identities": n}},
     "honest": {"max_over_min": r, "cv": v}, "windows": W, "seeds": [..]}
  pay_vs_honest: the strategy's pay over all its identities and seeds / the mean honest trainer's in the same
  markets; compute_fraction: rows it trained on / an honest trainer's; honest max_over_min and cv: over every
  honest trainer (a market's honest slot, which plays every seed, as a strategy does), each one's pay over the
  seeds / its markets' honest mean over the seeds. The detail file also gives them per single run (one seed).
The headline settles the whole run as one epoch. The chain settles every `windows_per_epoch` windows: each
epoch pays the payout its validators vote (validator/scoring.epoch_payout: Σ final / Σ potential, so an epoch of
immature records pays little and the rest stays in the pool) pro rata to that epoch's finals (contracts/
README.md, "Settlement"). The detail file's `per_epoch_settlement` replays the same runs' finals epoch by epoch
(3 windows, the devnet's and the demo's epochs, and 10), the way the contract would pay them.
bench/results/incentives-detail.json: the bound of every strategy (max(0.05, min(1, compute_fraction))), the
own-vs-common indicator's signal, noise and false-positive/negative rates, per-strategy means of the report's
factors (value, effort, norm factor), the loss curves and the wall time."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from base.model import select_device
from base.report import WindowReport
from bench.convergence import SMALL, Setup
from bench.marketsim import Behaviour, Honest, Marketplace, trainer_address
from bench.strategies import LIBRARY, Strategy
from node.data import Dataset, build_dataset, heldout_batches
from trainmarket.demo.network import demo_corpus
from validator.scoring import payout_fraction

RESULTS = Path(__file__).resolve().parent / "results"
HONEST = 5
MAX_STRATEGY_IDENTITIES = 3  # per market: honest trainers stay the majority of the aggregated updates
MAX_PASSIVE_IDENTITIES = 3  # and identities whose updates never enter the aggregate (rejected, or harmful)
GENERIC = {"copier", "copy_noise_resparsified", "replay_step", "replay_two_steps", "replay_payload_mean",
           "replay_noisy", "replay_resparsified", "replay_sign", "others_rows", "noise", "stale_lying"}
QUICK = ("replay_step", "half_steps", "split_2")


@dataclass(frozen=True)
class MarketSpec:
    index: int
    strategies: tuple[str, ...]
    seed: int
    windows: int
    honest: int


def markets(strategies: Sequence[Strategy]) -> list[tuple[str, ...]]:
    """Pack strategies into markets, in library order: at most MAX_STRATEGY_IDENTITIES identities whose updates
    may be aggregated, plus at most MAX_PASSIVE_IDENTITIES whose updates never are (they change nothing the
    honest trainers are measured against but the median norm, which honest trainers still dominate)."""
    out: list[list[Strategy]] = []

    def fits(group: list[Strategy], s: Strategy) -> bool:
        same = sum(g.identities for g in group if g.passive == s.passive) + s.identities
        return same <= (MAX_PASSIVE_IDENTITIES if s.passive else MAX_STRATEGY_IDENTITIES)

    for s in strategies:
        for group in out:
            if fits(group, s):
                group.append(s)
                break
        else:
            out.append([s])
    return [tuple(s.name for s in group) for group in out]


_DATASET: dict[int, Dataset] = {}


def dataset(setup: Setup) -> Dataset:
    if setup.corpus_bytes not in _DATASET:
        built = build_dataset(demo_corpus(setup.corpus_bytes), shard_bytes=256 * 1024, heldout_fraction=0.1)
        _DATASET[setup.corpus_bytes] = built.to_dataset()
    return _DATASET[setup.corpus_bytes]


def play(spec: MarketSpec) -> dict[str, Any]:
    """One market over `spec.windows` windows: per identity, its pay (Σ window weights), rows trained on and
    per-window score numbers; the global model's held-out loss per window."""
    torch.set_num_threads(1)
    setup = SMALL
    config = setup.config().model_copy(update={"run_seed": spec.seed, "model_seed": spec.seed})
    ds = dataset(setup)
    by_name = {s.name: s for s in LIBRARY}
    behaviours: dict[str, Behaviour] = {trainer_address(i): Honest() for i in range(spec.honest)}
    roles = {t: "honest" for t in behaviours}
    for name in spec.strategies:
        strategy = by_name[name]
        addresses = [trainer_address(len(behaviours) + i) for i in range(strategy.identities)]
        for address, behaviour in zip(addresses, strategy.behaviours(addresses), strict=True):
            behaviours[address] = behaviour
            roles[address] = name
    monitor = heldout_batches(ds, b"bench/incentives/monitor", 64, setup.seq_len)
    market = Marketplace(config, ds, behaviours, select_device("cpu"), monitor=monitor,
                         seed=spec.seed.to_bytes(8, "big"))
    pay = {t: 0.0 for t in behaviours}
    rows = {t: 0 for t in behaviours}
    scores: list[dict[str, Any]] = []
    losses: list[float] = []
    for _ in range(spec.windows):
        out = market.step()
        losses.append(out.loss)
        for t, n in out.rows_used.items():
            rows[t] += n
        scores += window_rows(out.report, roles)
        for s in out.report.scores:
            pay[s.trainer] += s.final  # validator/scoring.epoch_weights: pay is a share of the summed finals
    return {"market": spec.index, "seed": spec.seed, "roles": roles, "pay": pay, "rows": rows, "scores": scores,
            "loss": losses}


def window_rows(report: WindowReport, roles: dict[str, str]) -> list[dict[str, Any]]:
    """The report's numbers this benchmark summarises, per scored contribution."""
    ref = report.valuation.specificity_ref
    return [{"window": report.window, "role": roles[s.trainer], "trainer": s.trainer, "value": s.value,
             "value_full": s.value_full, "effort": s.effort, "effort_ratio": s.effort_ratio,
             "value_ratio": s.value_ratio, "value_factor": s.value_factor, "maturity": s.maturity,
             "share": s.share, "norm_factor": s.norm_factor, "specificity": s.specificity, "potential": s.potential,
             "specificity_se": s.specificity_se, "reference": ref, "b": s.b_i, "final": s.final,
             "weight": s.weight, "aggregated": s.trainer in report.accepted, "novelty": s.novelty, "sync": s.sync}
            for s in report.scores]


def summarise(runs: list[dict[str, Any]], strategies: Sequence[Strategy], windows: int, seeds: list[int],
              with_detail: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    honest_norm: list[float] = []  # per run (one market, one seed)
    slots: dict[tuple[int, str], list[float]] = {}  # (market, honest address) → [pay, market honest mean] over seeds
    totals: dict[str, dict[str, float]] = {s.name: {"pay": 0.0, "honest": 0.0, "rows": 0.0, "honest_rows": 0.0}
                                           for s in strategies}
    for run in runs:
        honest = [t for t, r in run["roles"].items() if r == "honest"]
        mean_pay = statistics.fmean(run["pay"][t] for t in honest)
        mean_rows = statistics.fmean(run["rows"][t] for t in honest)
        honest_norm += [run["pay"][t] / mean_pay for t in honest] if mean_pay > 0 else []
        for t in honest:
            slot = slots.setdefault((run["market"], t), [0.0, 0.0])
            slot[0] += run["pay"][t]
            slot[1] += mean_pay
        for name in {r for r in run["roles"].values() if r != "honest"}:
            ids = [t for t, r in run["roles"].items() if r == name]
            totals[name]["pay"] += sum(run["pay"][t] for t in ids)
            totals[name]["rows"] += sum(run["rows"][t] for t in ids)
            totals[name]["honest"] += mean_pay
            totals[name]["honest_rows"] += mean_rows
    table: dict[str, Any] = {}
    for s in strategies:
        t = totals[s.name]
        table[s.name] = {"pay_vs_honest": t["pay"] / t["honest"] if t["honest"] else math.nan,
                         "compute_fraction": t["rows"] / t["honest_rows"] if t["honest_rows"] else math.nan,
                         "identities": s.identities}
    per_trainer = [pay / mean for pay, mean in slots.values() if mean > 0]
    result = {"strategies": table, "honest": spread(per_trainer), "windows": windows, "seeds": seeds}
    if not with_detail:
        return result, {}
    return result, {**detail(runs, table, honest_norm), "honest_per_run": spread(honest_norm),
                    "per_epoch_settlement": {str(n): per_epoch_settlement(runs, strategies, n)
                                             for n in EPOCH_LENGTHS}}


EPOCH_LENGTHS = (3, 10)  # windows per epoch replayed in `per_epoch_settlement` (3: the devnet's and demo's)


def settle(run: dict[str, Any], windows_per_epoch: int) -> dict[str, float]:
    """Each identity's pay in epoch rewards, settled as the contract does: per epoch, the epoch's payout
    (validator/scoring.epoch_payout) × its share of the epoch's summed finals (validator/scoring.epoch_weights),
    i.e. its summed finals over everyone's summed potentials; an epoch in which nobody scored pays nobody."""
    pay = {t: 0.0 for t in run["roles"]}
    finals: dict[int, dict[str, float]] = {}
    potentials: dict[int, float] = {}
    for row in run["scores"]:
        e = row["window"] // windows_per_epoch
        epoch = finals.setdefault(e, {})
        epoch[row["trainer"]] = epoch.get(row["trainer"], 0.0) + row["final"]
        potentials[e] = potentials.get(e, 0.0) + row.get("potential", row["final"])  # older dumps: paid in full
    for e, epoch in finals.items():
        total = math.fsum(epoch.values())
        payout = payout_fraction(total, potentials[e])
        for t, f in epoch.items():
            pay[t] += payout * f / total if total > 0.0 else 0.0
    return pay


def per_epoch_settlement(runs: list[dict[str, Any]], strategies: Sequence[Strategy], windows_per_epoch: int
                         ) -> dict[str, Any]:
    """The headline table with every run's pay settled epoch by epoch (`settle`) instead of as one epoch."""
    settled = [{**run, "pay": settle(run, windows_per_epoch)} for run in runs]
    table, _ = summarise(settled, strategies, len(runs[0]["loss"]) if runs else 0, [], with_detail=False)
    rows = {name: {"pay_vs_honest": row["pay_vs_honest"], "bound": bound(row),
                   "within_bound": row["pay_vs_honest"] <= bound(row)} for name, row in table["strategies"].items()}
    return {"all_within_bound": all(r["within_bound"] for r in rows.values()),
            "above_bound": sorted(n for n, r in rows.items() if not r["within_bound"]),
            "honest": table["honest"], "strategies": rows}


def spread(pays: list[float]) -> dict[str, float]:
    """max/min and coefficient of variation of honest trainers' pay (each over its market's honest mean)."""
    if not pays or min(pays) <= 0:
        return {"max_over_min": math.inf, "cv": math.nan}
    return {"max_over_min": max(pays) / min(pays), "cv": statistics.pstdev(pays) / statistics.fmean(pays)}


def bound(entry: dict[str, Any]) -> float:
    """The issue's bound: max(0.05, min(1, compute_fraction))."""
    return max(0.05, min(1.0, entry["compute_fraction"]))


def detail(runs: list[dict[str, Any]], table: dict[str, Any], honest_norm: list[float]) -> dict[str, Any]:
    rows = [r for run in runs for r in run["scores"]]
    honest = [r for r in rows if r["role"] == "honest"]
    generic = [r for r in rows if r["role"] in GENERIC]

    def rel(r: dict[str, Any]) -> float:
        return r["specificity"] / r["reference"] if r["reference"] > 0 else 0.0

    def mean(xs: list[float]) -> float:
        return statistics.fmean(xs) if xs else math.nan

    factors = ("value", "value_factor", "effort", "maturity", "norm_factor", "share", "novelty")
    per_strategy = {}
    for name in table:
        mine = [r for r in rows if r["role"] == name]
        per_strategy[name] = {
            "bound": bound(table[name]), "within_bound": table[name]["pay_vs_honest"] <= bound(table[name]),
            "scored_windows": len(mine), "aggregated_fraction": mean([float(r["aggregated"]) for r in mine]),
            "mean_specificity_vs_reference": mean([rel(r) for r in mine]),
            **{f"mean_{f}": mean([r[f] for r in mine]) for f in factors}}
    return {
        "all_within_bound": all(v["within_bound"] for v in per_strategy.values()),
        "strategies": per_strategy,
        "honest": {"mean_value": mean([r["value"] for r in honest]),
                   "mean_value_factor": mean([r["value_factor"] for r in honest]),
                   "mean_effort": mean([r["effort"] for r in honest]),
                   "mean_norm_factor": mean([r["norm_factor"] for r in honest]),
                   "mean_novelty": mean([r["novelty"] for r in honest]), "pay_over_market_mean": sorted(honest_norm)},
        "indicator": {
            "definition": "b = +1 when the own-row excess gain (specificity, control variate applied) is positive",
            "honest_false_negative_rate": mean([float(r["b"] < 0) for r in honest]),
            "generic_false_positive_rate": mean([float(r["b"] > 0) for r in generic]),
            # The same test with a margin of two standard errors (what a decision on one window could use).
            "honest_false_negative_rate_at_2se": mean([float(r["specificity"] <= 2 * r["specificity_se"])
                                                       for r in honest]),
            "generic_false_positive_rate_at_2se": mean([float(r["specificity"] > 2 * r["specificity_se"])
                                                        for r in generic]),
            "honest_false_negative_rate_from_window_10": mean([float(r["b"] < 0) for r in honest
                                                               if r["window"] >= 10]),
            "generic_strategies": sorted(GENERIC),
            "honest_signal_vs_reference": mean([rel(r) for r in honest]),
            "honest_sd_vs_reference": statistics.pstdev([rel(r) for r in honest]) if honest else math.nan,
            "generic_signal_vs_reference": mean([rel(r) for r in generic]),
            "generic_sd_vs_reference": statistics.pstdev([rel(r) for r in generic]) if generic else math.nan,
            "honest_signal_nats": mean([r["specificity"] for r in honest]),
            "honest_noise_se_nats": mean([r["specificity_se"] for r in honest]),
        },
        "loss_per_window": {f"market{run['market']}/seed{run['seed']}": run["loss"] for run in runs},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 3 strategies, 5 windows, 1 seed")
    parser.add_argument("--windows", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--only", nargs="+", default=None, help="strategy names (default: the whole library)")
    parser.add_argument("--jobs", type=int, default=2, help="markets played in parallel (one CPU thread each)")
    parser.add_argument("--out", type=Path, default=RESULTS / "incentives.json")
    parser.add_argument("--dump", type=Path, default=None, help="also write every run's raw numbers here")
    parser.add_argument("--from-dump", type=Path, default=None,
                        help="summarise the runs a --dump wrote instead of playing the markets again")
    args = parser.parse_args(argv)
    windows = args.windows or (5 if args.quick else 30)
    seeds = args.seeds or ([1] if args.quick else [1, 2, 3])
    names = args.only or (list(QUICK) if args.quick else [s.name for s in LIBRARY])
    chosen = [s for s in LIBRARY if s.name in names]
    if len(chosen) != len(set(names)):
        parser.error(f"unknown strategies: {sorted(set(names) - {s.name for s in LIBRARY})}")
    honest = 3 if args.quick else HONEST
    specs = [MarketSpec(i, group, seed, windows, honest) for seed in seeds for i, group in enumerate(markets(chosen))]
    began = time.perf_counter()
    print(f"{len(specs)} markets ({len(chosen)} strategies × {len(seeds)} seeds), {windows} windows each", flush=True)
    runs: list[dict[str, Any]] = json.loads(args.from_dump.read_text()) if args.from_dump else []
    if args.from_dump:
        played = {(run["market"], run["seed"]) for run in runs}
        if played != {(spec.index, spec.seed) for spec in specs} or {len(run["loss"]) for run in runs} != {windows}:
            parser.error(f"{args.from_dump} holds other markets, seeds or windows than these arguments ask for")
        specs = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=get_context("spawn")) as pool:
        for run in pool.map(play, specs):
            runs.append(run)
            names = ", ".join(sorted(set(run["roles"].values()) - {"honest"}))
            print(f"  market {run['market']} seed {run['seed']}: {names}; loss {run['loss'][-1]:.3f}", flush=True)
    result, extra = summarise(runs, chosen, windows, seeds)
    wall = time.perf_counter() - began
    detail_path = args.out.with_name(args.out.stem + "-detail.json")
    if args.from_dump:  # the wall time of the run that played these markets, from the detail file it wrote
        wall = json.loads(detail_path.read_text()).get("wall_s", math.nan) if detail_path.exists() else math.nan
    extra = {**extra, "wall_s": wall, "honest_per_market": honest,
             "setup": replace(SMALL, windows=windows).__dict__ | {"overrides": dict(SMALL.overrides)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    detail_path.write_text(json.dumps(extra, indent=2, default=str) + "\n")
    if args.dump and not args.from_dump:
        args.dump.write_text(json.dumps(runs))
    width = max(len(n) for n in result["strategies"])
    print(f"{'strategy':<{width}}  pay_vs_honest  compute_fraction  identities  bound")
    for name, row in result["strategies"].items():
        mark = "" if extra["strategies"][name]["within_bound"] else "  ABOVE BOUND"
        print(f"{name:<{width}}  {row['pay_vs_honest']:13.3f}  {row['compute_fraction']:16.3f}  "
              f"{row['identities']:10d}  {bound(row):.3f}{mark}")
    print(f"honest max_over_min {result['honest']['max_over_min']:.3f}, cv {result['honest']['cv']:.3f}; "
          f"indicator FN {extra['indicator']['honest_false_negative_rate']:.3f}, "
          f"FP {extra['indicator']['generic_false_positive_rate']:.3f}; {extra['wall_s']:.0f} s")
    for n, settled in extra["per_epoch_settlement"].items():
        print(f"settled every {n} windows (as the contract pays): honest max_over_min "
              f"{settled['honest']['max_over_min']:.3f}; above bound: "
              + (", ".join(f"{name} {settled['strategies'][name]['pay_vs_honest']:.3f} "
                           f"(bound {settled['strategies'][name]['bound']:.3f})" for name in settled["above_bound"])
                 or "none"))
    return result


if __name__ == "__main__":
    main()
