"""Convergence: does pooling K trainers through the marketplace train as fast as one centralised run?

    python -m bench.convergence --small        # CPU, the tiny model (~0.1M params), a few minutes
    python -m bench.convergence --medium       # CPU, ~1M params, at most ~15 minutes on 2 cores
    python -m bench.convergence --gpu          # CUDA, ~57M params, fits ~9 minutes on one H100/H200
    python -m bench.convergence --gpu --dry-run   # the GPU setup's model, data and one window, on CPU
    python -m bench.convergence --small --ablations   # + the old protocol's parts one at a time

Every run is in-process (bench/marketsim.py: the node's inner loop, error feedback and codec, the validator's
decoder and ScoringStrategy; chain and IPFS bypassed) on one corpus and one held-out monitoring batch:
1. centralised: AdamW (5% warm-up, cosine to 10%), lr swept, best kept; step s of window w sees every trainer's
   rows of its inner step s, i.e. exactly the marketplace's tokens, at the same number of optimiser steps;
2. single node: the same steps on trainer 0's rows alone (1/K of the tokens), lr swept;
3. the marketplace with K honest trainers (the protocol: window w trains from the model of w − 1 with the
   trainer's AdamW moments carried over), then with 25% adversaries (noise, zero, ×−5 poisoner, copier);
4. the same K honest trainers with a dense 8-bit codec: the DiLoCo reference (every honest update aggregated).
Figures: loss_ratio = L_market / L_central; parallel_efficiency = (L_single − L_market) / (L_single −
L_central), 1 when K trainers do what one centralised run on all their data does, 0 when they do no better
than one of them alone. Results: bench/results/convergence[-medium|-gpu].json and a PNG beside each."""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from base.model import build_model, evaluate_loss, select_device
from base.run_config import RunConfig
from bench.marketsim import Behaviour, Honest, Marketplace, SimContext, dense_bf16_bytes, trainer_address
from node.data import Dataset, assigned_batches, build_dataset, heldout_batches
from trainmarket.demo.network import demo_corpus

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Setup:
    name: str
    preset: str
    overrides: tuple[tuple[str, int], ...]
    trainers: int
    windows: int
    inner_steps: int
    seqs_per_step: int
    seq_len: int
    inner_lr: float
    corpus_bytes: int
    baseline_lrs: tuple[float, ...]
    dense: bool = True  # also run the dense (DiLoCo) reference; costly beyond the tiny model

    def config(self) -> RunConfig:
        """The protocol's defaults (RunConfig) for everything this setup does not size."""
        return RunConfig(model_preset=self.preset, model_overrides=dict(self.overrides), seq_len=self.seq_len,
                         inner_steps=self.inner_steps, seqs_per_step=self.seqs_per_step, inner_lr=self.inner_lr)


SMALL = Setup("small", "tiny", (), trainers=8, windows=24, inner_steps=6, seqs_per_step=8, seq_len=64,
              inner_lr=4e-3, corpus_bytes=4_000_000, baseline_lrs=(1e-3, 3e-3, 1e-2))
# Inner lr measured on this setup (final loss; centralised best 2.654 at lr 1e-3, swept 5e-4 / 1e-3 / 3e-3 →
# 2.947 / 2.654 / above): inner lr 1e-3 / 1.5e-3 / 3e-3 → 2.748 / 2.636 / 2.817.
MEDIUM = Setup("medium", "tiny", (("n_layer", 4), ("n_embd", 128), ("n_head", 4)), trainers=8, windows=16,
               inner_steps=6, seqs_per_step=8, seq_len=64, inner_lr=1.5e-3, corpus_bytes=8_000_000,
               baseline_lrs=(5e-4, 1e-3, 3e-3), dense=False)
GPU = Setup("gpu", "base", (("n_layer", 8),), trainers=4, windows=16, inner_steps=16, seqs_per_step=16,
            seq_len=512, inner_lr=6e-4, corpus_bytes=200_000_000, baseline_lrs=(3e-4, 6e-4, 1.2e-3), dense=False)
SETUPS = {s.name: s for s in (SMALL, MEDIUM, GPU)}


def centralised(config: RunConfig, ds: Dataset, setup: Setup, lr: float, monitor: Tensor, device: torch.device,
                trainers: int) -> list[float]:
    """Held-out loss after each window's worth of steps of one AdamW run over `trainers` trainers' rows."""
    model = build_model(config).to(device)
    steps = setup.windows * setup.inner_steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / steps))) * 0.9 + 0.1)
    addresses = [trainer_address(i) for i in range(trainers)]
    losses = []
    for w in range(setup.windows):
        rows = [assigned_batches(ds, config.run_seed, t, w, setup.inner_steps * setup.seqs_per_step, setup.seq_len)
                for t in addresses]
        model.train()
        for step in range(setup.inner_steps):
            part = slice(step * setup.seqs_per_step, (step + 1) * setup.seqs_per_step)
            batch = torch.cat([r[part] for r in rows]).to(device)
            _, loss = model(batch[:, :-1], batch[:, 1:])
            assert loss is not None
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
        losses.append(evaluate_loss(model, monitor.to(device)))
    return losses


class Adversary:
    """The bench's cheaters, as Δ transforms: noise of an honest norm, zero, ×−5 poisoner, copier of the
    latest revealed honest update (all that commit–reveal lets a copier see)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def delta(self, ctx: SimContext) -> dict[str, Tensor] | None:
        if self.name == "zero":
            return {n: torch.zeros_like(t) for n, t in ctx.base.items()}
        if self.name == "copier" and ctx.revealed:
            earlier = next(iter(sorted(ctx.revealed[-1].items())), None)
            if earlier is not None:
                return {n: t.clone() for n, t in earlier[1].items()}
        honest = ctx.train()
        if self.name == "poisoner":
            return {n: -5.0 * t for n, t in honest.items()}
        norm = math.sqrt(sum(float(t.pow(2).sum()) for t in honest.values()))
        noise = {n: torch.randn(t.shape, generator=ctx.generator) for n, t in honest.items()}
        scale = norm / max(1e-12, math.sqrt(sum(float(t.pow(2).sum()) for t in noise.values())))
        return {n: t * scale for n, t in noise.items()}


ADVERSARY_KINDS = ("noise", "zero", "poisoner", "copier")


def marketplace(config: RunConfig, ds: Dataset, setup: Setup, adversaries: int, monitor: Tensor,
                device: torch.device, lag: int = 0, persistent: bool = True, windows: int | None = None
                ) -> dict[str, Any]:
    honest = [trainer_address(i) for i in range(setup.trainers)]
    behaviours: dict[str, Behaviour] = {t: Honest() for t in honest}
    for j in range(adversaries):
        behaviours[trainer_address(setup.trainers + j)] = Adversary(ADVERSARY_KINDS[j % len(ADVERSARY_KINDS)])
    market = Marketplace(config, ds, behaviours, device, lag=lag, persistent=persistent, monitor=monitor)
    losses: list[float] = []
    aggregated: list[int] = []
    sent: list[int] = []
    for _ in range(windows or setup.windows):
        out = market.step()
        losses.append(out.loss)
        aggregated.append(len(out.report.accepted))
        sent += [out.payload_bytes[t] for t in honest if t in out.payload_bytes]
        print(f"  window {out.window}: loss {out.loss:.4f}, {aggregated[-1]} updates aggregated", flush=True)
    return {"loss_per_window": losses, "aggregated_per_window": aggregated,
            "bytes_per_trainer_window": sum(sent) / max(1, len(sent)),
            "dense_bf16_bytes": dense_bf16_bytes(market.spec)}


def dense_config(config: RunConfig) -> RunConfig:
    """Every coefficient of every 64×64 tile, 8-bit: a dense update (DiLoCo), through the same pipeline.

    A plain mean (outer lr 1): every coordinate has every contributor, so the count-mean's case for lr 1.5 is
    gone; measured on --small, dense with lr 1.0 → 2.402, DiLoCo's Nesterov (lr 0.7, momentum 0.9) → 2.767.
    Evaluated at step 0.2: one whole dense update applied alone at step 1 often overshoots on the 12 common
    rows (s_i < 0, so 0 to 5 of 8 honest updates aggregated in some windows); at 0.2 all but a few pass."""
    return config.model_copy(update={"codec_params": {"k": 64 * 64, "value_bits": 8}, "outer_lr": 1.0,
                                     "eval_step_size": 0.2})


def run_ablations(config: RunConfig, ds: Dataset, setup: Setup, monitor: Tensor, device: torch.device,
                  central: float) -> dict[str, Any]:
    """The honest marketplace with the old protocol's parts put back one at a time (same tokens)."""
    variants: dict[str, dict[str, Any]] = {
        "publish_lag_1": {"lag": 1}, "fresh_adamw_each_window": {"persistent": False},
        "old_protocol_lag_1_fresh_adamw": {"lag": 1, "persistent": False}}
    out: dict[str, Any] = {}
    for name, knobs in variants.items():
        print(f"ablation {name}", flush=True)
        run = marketplace(config, ds, setup, 0, monitor, device, **knobs)
        out[name] = {"loss_ratio": run["loss_per_window"][-1] / central, **knobs,
                     "loss_per_window": run["loss_per_window"], "aggregated_per_window": run["aggregated_per_window"]}
    return out


def sweep(config: RunConfig, ds: Dataset, setup: Setup, monitor: Tensor, device: torch.device, trainers: int,
          label: str) -> tuple[float, dict[str, list[float]]]:
    runs: dict[str, list[float]] = {}
    for lr in setup.baseline_lrs:
        print(f"{label}, lr {lr:g}", flush=True)
        runs[f"{lr:g}"] = centralised(config, ds, setup, lr, monitor, device, trainers)
    best = min(runs, key=lambda k: runs[k][-1])
    return float(best), runs


def parallel_efficiency(single: float, market: float, central: float) -> float:
    """(L_single − L_market) / (L_single − L_central): 1 = as good as centralised on all K trainers' data."""
    return (single - market) / (single - central) if single != central else math.nan


def dry_run(setup: Setup, device: torch.device) -> dict[str, Any]:
    """The setup's model, corpus slice and one marketplace window with 2 trainers and 1 inner step, on any device:
    proves the configuration builds and runs end to end before a GPU is spent on it."""
    small = replace(setup, trainers=2, windows=1, inner_steps=1, seqs_per_step=2, corpus_bytes=2_000_000)
    config = small.config()
    params = build_model(config).num_params()
    ds = build_dataset(demo_corpus(small.corpus_bytes), shard_bytes=256 * 1024, heldout_fraction=0.1).to_dataset()
    monitor = heldout_batches(ds, b"bench/convergence/monitor", 2, small.seq_len)
    began = time.perf_counter()
    run = marketplace(config, ds, small, 0, monitor, device)
    report = {"setup": setup.name, "params": params, "dry_run": True, "device": str(device),
              "loss_after_one_window": run["loss_per_window"][0], "bytes_per_trainer_window":
              run["bytes_per_trainer_window"], "seconds": time.perf_counter() - began}
    print(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_const", const="small", dest="setup", help="CPU, tiny model")
    size.add_argument("--medium", action="store_const", const="medium", dest="setup", help="CPU, ~1M params")
    size.add_argument("--gpu", action="store_const", const="gpu", dest="setup", help="CUDA, ~57M params")
    parser.add_argument("--dry-run", action="store_true", help="build the setup and run one tiny window, then stop")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--trainers", type=int, default=None)
    parser.add_argument("--windows", type=int, default=None)
    parser.add_argument("--inner-steps", type=int, default=None, help="H (the baselines take W·H steps)")
    parser.add_argument("--dense", action=argparse.BooleanOptionalAction, default=None,
                        help="run the dense (DiLoCo) reference too (default: only with --small)")
    parser.add_argument("--ablations", action="store_true",
                        help="also run the honest marketplace with the publish lag, with a fresh AdamW every window, "
                             "and with both (the old protocol)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = select_device(args.device)
    setup = SETUPS[args.setup or "small"]
    if args.dry_run:
        return dry_run(setup, device)
    setup = replace(setup, trainers=args.trainers or setup.trainers, windows=args.windows or setup.windows,
                    inner_steps=args.inner_steps or setup.inner_steps)
    config = setup.config()
    out = args.out or RESULTS / ("convergence.json" if setup.name == "small" else f"convergence-{setup.name}.json")
    began = time.perf_counter()
    ds = build_dataset(demo_corpus(setup.corpus_bytes), shard_bytes=256 * 1024, heldout_fraction=0.1).to_dataset()
    monitor = heldout_batches(ds, b"bench/convergence/monitor", 64, setup.seq_len)
    best_lr, central_runs = sweep(config, ds, setup, monitor, device, setup.trainers, "centralised")
    single_lr, single_runs = sweep(config, ds, setup, monitor, device, 1, "single node (trainer 0's rows)")
    central, single = central_runs[f"{best_lr:g}"], single_runs[f"{single_lr:g}"]
    print(f"marketplace, {setup.trainers} honest trainers", flush=True)
    honest = marketplace(config, ds, setup, 0, monitor, device)
    adversaries = max(1, round(setup.trainers / 3))  # 25% of all identities
    print(f"marketplace, {setup.trainers} honest + {adversaries} adversaries", flush=True)
    attacked = marketplace(config, ds, setup, adversaries, monitor, device)
    with_dense = setup.dense if args.dense is None else args.dense
    dense = marketplace(dense_config(config), ds, setup, 0, monitor, device) if with_dense else None
    ablations = run_ablations(config, ds, setup, monitor, device, central[-1]) if args.ablations else {}
    market = honest["loss_per_window"][-1]
    tokens = setup.windows * setup.inner_steps * setup.trainers * setup.seqs_per_step * setup.seq_len
    report: dict[str, Any] = {
        "loss_ratio": market / central[-1],
        "loss_ratio_adversarial": attacked["loss_per_window"][-1] / central[-1],
        "parallel_efficiency": parallel_efficiency(single[-1], market, central[-1]),
        "single_node_loss": single[-1],
        "centralised_loss": central[-1],
        "marketplace_loss": market,
        "dense_loss_ratio": None if dense is None else dense["loss_per_window"][-1] / central[-1],
        "compression_ratio": honest["dense_bf16_bytes"] / honest["bytes_per_trainer_window"],
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "params": build_model(config).num_params(),
        "tokens": tokens,
        "baseline": {"best_lr": best_lr, "swept": central_runs, "schedule": "AdamW, 5% warm-up, cosine to 10%",
                     "comparison": "the marketplace's own rows (every trainer's rows of inner step s at step s), "
                                   "equal tokens and equal optimiser steps"},
        "single_node_baseline": {"best_lr": single_lr, "swept": single_runs,
                                 "comparison": "trainer 0's rows alone, same optimiser steps (1/K of the tokens)"},
        "marketplace": {"loss_per_window": honest["loss_per_window"], "trainers": setup.trainers,
                        "aggregated_per_window": honest["aggregated_per_window"]},
        "marketplace_adversarial": {"loss_per_window": attacked["loss_per_window"], "adversaries": adversaries,
                                    "kinds": list(ADVERSARY_KINDS),
                                    "aggregated_per_window": attacked["aggregated_per_window"]},
        "marketplace_dense": None if dense is None else {
            "loss_per_window": dense["loss_per_window"], "aggregated_per_window": dense["aggregated_per_window"],
            "codec_params": dense_config(config).codec_params, "bytes_per_trainer_window":
            dense["bytes_per_trainer_window"]},
        "ablations": ablations,
        "bytes_per_trainer_window": honest["bytes_per_trainer_window"],
        "dense_bf16_bytes": honest["dense_bf16_bytes"],
        "setup": {**{k: v for k, v in setup.__dict__.items() if k != "overrides"}, "overrides": dict(setup.overrides),
                  "baseline_lrs": list(setup.baseline_lrs), "error_feedback_decay": config.error_feedback_decay,
                  "outer_lr": config.outer_lr, "outer_momentum": config.outer_momentum,
                  "codec_params": config.codec_params},
        "chain_and_ipfs": "bypassed (in-process; payloads through the real encoder/decoder)",
        "wall_s": time.perf_counter() - began,
    }
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict | list)}, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, out.with_suffix(".png"))
    return report


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    lines = [("centralised, equal tokens (best lr)", report["baseline"]["swept"][f"{report['baseline']['best_lr']:g}"]),
             ("single node, 1/K tokens (best lr)",
              report["single_node_baseline"]["swept"][f"{report['single_node_baseline']['best_lr']:g}"]),
             ("marketplace", report["marketplace"]["loss_per_window"]),
             ("marketplace + 25% adversaries", report["marketplace_adversarial"]["loss_per_window"])]
    if report["marketplace_dense"]:
        lines.append(("dense codec (DiLoCo reference)", report["marketplace_dense"]["loss_per_window"]))
    for label, losses in lines:
        ax.plot(range(1, len(losses) + 1), losses, label=label)
    ax.set_xlabel(f"window (outer step; {report['setup']['inner_steps']} optimiser steps each)")
    ax.set_ylabel("held-out loss")
    ax.set_title(f"{report['params']:,} params, {report['tokens']:,} tokens, {report['device']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
