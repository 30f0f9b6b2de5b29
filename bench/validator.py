"""Validator evaluation throughput: what scoring every contribution of a window costs.

For N = 8, 32, 128 contributions it measures, in the same run,
  * t_fwd: one forward pass of the eval (common) batch, the unit of cost;
  * the batched evaluator (`evaluate_contributions`): its time / (N · t_fwd) = forward-pass equivalents per
    contribution (target ≤ 1.5; the evaluator's own cost model predicts 1 + 2·o/R + 1/N);
  * the marginal estimate (validator/valuation.value_window: the own rows at the reference model, the grouped
    backward pass at the aggregate step's midpoint, the forward after the step, the public-span projections),
    timed inside the whole window: its forward-pass equivalents per contribution are the overhead the issue asks
    to state (predicted o/R + 4/N, marginal.marginal_forward_equivalents);
  * the whole `ScoringStrategy.score_window` (filters, evaluation, OpenSkill, aggregation, marginal estimate,
    pay): contributions scored per second;
  * the naive 3N+1 evaluation (separate before/after passes per contribution) at N = 8, as the baseline ratio.
Times on a CPU device are this process's CPU seconds on one thread (`--clock wall` for wall seconds at the
default thread count), so scored/s there is per CPU core; on CUDA they are wall seconds.

    python -m bench.validator                    # CPU: tiny (N up to 128) and small (N up to 32)
    python -m bench.validator --device cuda      # adds the GPU runs when CUDA is present
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import validator.strategy as strategy_module
from base.model import GPT, preset_config, select_device
from base.run_config import RunConfig
from validator.domain import Contribution, ParamDict
from validator.evaluate import (
    base_params,
    evaluate_contributions,
    forward_equivalents,
    per_row_losses,
)
from validator.marginal import marginal_forward_equivalents
from validator.strategy import ScoringStrategy, ValidatorState, WindowInputs

RESULTS = Path(__file__).resolve().parent / "results" / "validator.json"
SIZES = (8, 32, 128)
EVAL_ROWS = RunConfig().eval_random_seqs  # the run's defaults: 48 common rows, 8 own rows per contribution
OWN_ROWS = RunConfig().eval_own_seqs
DISTINCT_DELTAS = 8  # evaluation cost does not depend on the values; cycling 8 keeps memory small at N=128
TOPK_FRACTION = 0.05
BASE_CID = "bafkbench"


# The clock every cost here is read with. On a CPU device: this process's CPU seconds with one intra-op thread
# (`use_cpu_clock`), because wall time on a shared machine measures the neighbours: on the 2-core machine at a
# load average of 12–15 the wall-clock run gave the evaluation 2.11 forward equivalents per contribution at N=32
# (predicted 1.37) and an evaluation slower than the whole window that contains it. A ratio of CPU seconds counts
# the work only. On CUDA: wall time (the GPU's work is not this process's CPU time).
_CLOCK: list[Callable[[], float]] = [time.perf_counter]


def _now() -> float:
    return _CLOCK[0]()


@contextmanager
def clock_for(device: torch.device, clock: str) -> Iterator[str]:
    """Install the clock for `device` ("cpu": CPU seconds, one thread, on a CPU device; else wall seconds)."""
    threads = torch.get_num_threads()
    use_cpu = clock == "cpu" and device.type == "cpu"
    _CLOCK[0] = time.process_time if use_cpu else time.perf_counter
    if use_cpu:
        torch.set_num_threads(1)
    try:
        yield "process CPU seconds, 1 thread" if use_cpu else "wall seconds"
    finally:
        _CLOCK[0] = time.perf_counter
        torch.set_num_threads(threads)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall seconds of `repeats` calls after one warm-up call."""
    fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        start = _now()
        fn()
        _sync(device)
        samples.append(_now() - start)
    return statistics.median(samples)


def paired_cost(fn: Callable[[], object], forward: Callable[[], object], n: int, device: torch.device,
                repeats: int) -> tuple[float, float, float]:
    """(median seconds of `fn`, median forward seconds, median of per-repeat fn / (n · forward)).

    Each repeat times the forward pass right before and after `fn`, so the ratio stays meaningful on a
    shared machine whose load drifts during the run (absolute seconds do not)."""
    fn()
    forward()
    _sync(device)
    fn_s: list[float] = []
    fwd_s: list[float] = []
    ratios: list[float] = []
    for _ in range(repeats):
        around = [timed(forward, device, 3)]
        start = _now()
        fn()
        _sync(device)
        elapsed = _now() - start
        around.append(timed(forward, device, 3))
        fwd = statistics.median(around)
        fn_s.append(elapsed)
        fwd_s.append(fwd)
        ratios.append(elapsed / (n * fwd))
    return statistics.median(fn_s), statistics.median(fwd_s), statistics.median(ratios)


def sparse_delta(params: ParamDict, seed: int) -> tuple[ParamDict, dict[str, Tensor]]:
    """A top-k-sparse update of realistic magnitude (1e-3 of the weights' scale)."""
    g = torch.Generator().manual_seed(seed)
    delta: ParamDict = {}
    indices: dict[str, Tensor] = {}
    for name, p in params.items():
        n = p.numel()
        k = max(1, int(n * TOPK_FRACTION))
        idx = torch.sort(torch.randperm(n, generator=g)[:k]).values
        flat = torch.zeros(n)
        flat[idx] = 1e-3 * torch.randn(k, generator=g)
        delta[name] = flat.view(p.shape)
        indices[name] = idx
    return delta, indices


def naive_evaluation(model: GPT, params: ParamDict, deltas: list[ParamDict], own: list[Tensor],
                     random_batch: Tensor, device: torch.device) -> None:
    """The baseline: 1 + 3N separate forward passes (own before, own after, random after; random before once)."""
    buffers = dict(model.named_buffers())
    with torch.inference_mode():
        per_row_losses(model, {**params, **buffers}, random_batch)
        for delta, own_batch in zip(deltas, own, strict=True):
            per_row_losses(model, {**params, **buffers}, own_batch)
            shifted = {n: p - delta[n].to(device) for n, p in params.items()}
            per_row_losses(model, {**shifted, **buffers}, own_batch)
            per_row_losses(model, {**shifted, **buffers}, random_batch)


class ValuationTimer:
    """Times every call of the window's marginal estimate (validator/valuation.value_window) made by
    `ScoringStrategy.score_window`, by wrapping the name the strategy calls while installed."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    @contextmanager
    def installed(self) -> Iterator[None]:
        original = strategy_module.value_window

        def timed_value_window(*args: Any, **kwargs: Any) -> Any:
            start = _now()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds.append(_now() - start)

        strategy_module.value_window = timed_value_window
        try:
            yield
        finally:
            strategy_module.value_window = original


def bench_preset(preset: str, device: torch.device, sizes: tuple[int, ...], repeats: int) -> dict[str, Any]:
    cfg = preset_config(preset)
    model = GPT.from_seed(cfg, 0).to(device)
    params = {n: t.detach().clone() for n, t in base_params(model).items()}
    eval_rows, own_rows = EVAL_ROWS, OWN_ROWS
    g = torch.Generator().manual_seed(1)
    width = cfg.block_size + 1
    random_batch = torch.randint(0, cfg.vocab_size, (eval_rows, width), generator=g).to(device)
    cpu_params = {n: t.cpu() for n, t in params.items()}
    pool = [sparse_delta(cpu_params, seed) for seed in range(DISTINCT_DELTAS)]
    pool_on_device = [{n: t.to(device) for n, t in d.items()} for d, _ in pool]
    buffers = dict(model.named_buffers())

    def one_forward() -> None:
        with torch.inference_mode():
            per_row_losses(model, {**params, **buffers}, random_batch)

    t_fwd = timed(one_forward, device, repeats=max(5, repeats * 3))
    out: dict[str, Any] = {
        "preset": preset, "device": str(device), "params": sum(t.numel() for t in params.values()),
        "eval_rows": eval_rows, "own_rows": own_rows, "block_size": cfg.block_size,
        "forward_s": t_fwd, "by_n": {},
    }
    for n in sizes:
        deltas = [pool_on_device[i % DISTINCT_DELTAS] for i in range(n)]
        own = [torch.randint(0, cfg.vocab_size, (own_rows, width), generator=g).to(device) for _ in range(n)]
        t_eval, fwd_eval, fe_eval = paired_cost(
            partial(evaluate_contributions, model, deltas, own, random_batch, 1.0, device, base=params),
            one_forward, n, device, repeats)
        inputs = WindowInputs(
            window=1, block_hash="0x" + "11" * 32, base_model_cid=BASE_CID, params=params,
            contributions=[Contribution(trainer=f"0x{i:040x}", window=1, cid=f"bafk{i}", base_model_cid=BASE_CID,
                                        delta=pool[i % DISTINCT_DELTAS][0], indices=pool[i % DISTINCT_DELTAS][1])
                           for i in range(n)],
            own_batches={f"0x{i:040x}": own[i] for i in range(n)}, common_batch=random_batch,
            common_owners=tuple(f"0x{r % n:040x}" for r in range(eval_rows)),  # other trainers' rows, by owner
        )
        strategy = ScoringStrategy(model, device=device)
        valuation = ValuationTimer()
        with valuation.installed():
            t_window, fwd_window, fe_window = paired_cost(partial(strategy.score_window, inputs, ValidatorState()),
                                                          one_forward, n, device, max(1, repeats // 2))
        fe_marginal = statistics.median(valuation.seconds) / (n * fwd_window)
        row: dict[str, Any] = {
            "evaluate_s": t_eval,
            "forward_s": fwd_eval,
            "forward_equivalents_per_contribution": fe_eval,
            "predicted_forward_equivalents": forward_equivalents(n, own_rows, eval_rows),
            "evaluated_per_s": n / t_eval,
            "score_window_s": t_window,
            "contributions_scored_per_s": n / t_window,
            "score_window_forward_equivalents_per_contribution": fe_window,
            "marginal_estimate_s": statistics.median(valuation.seconds),
            "marginal_forward_equivalents_per_contribution": fe_marginal,
            "predicted_marginal_forward_equivalents": marginal_forward_equivalents(n, own_rows, eval_rows),
        }
        if n == min(sizes):
            t_naive, _, fe_naive = paired_cost(
                partial(naive_evaluation, model, params, deltas, own, random_batch, device),
                one_forward, n, device, repeats)
            row["naive_3n_evaluate_s"] = t_naive
            row["naive_forward_equivalents_per_contribution"] = fe_naive
            row["speedup_vs_naive"] = fe_naive / fe_eval
        out["by_n"][str(n)] = row
        print(f"{preset:>5} {device.type:>4} N={n:<4} fwd={fwd_eval * 1e3:7.2f} ms  eval={t_eval:7.3f} s  "
              f"FE/contrib={fe_eval:.3f} (predicted {row['predicted_forward_equivalents']:.3f})  "
              f"marginal FE={fe_marginal:.3f}  window={t_window:7.3f} s (FE {fe_window:.2f})  "
              f"scored/s={row['contributions_scored_per_s']:.1f}"
              + (f"  naive FE={fe_naive:.2f}" if n == min(sizes) else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (auto also runs CPU when CUDA is present)")
    parser.add_argument("--cpu-presets", default="tiny,small:32",
                        help="comma list of preset[:largest N]; 7M-param `small` at N=128 takes ~10 min on 2 cores")
    parser.add_argument("--cuda-presets", default="tiny,small,base")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu (default): CPU seconds of this process, one thread, on CPU devices (robust to a "
                             "loaded machine); wall: wall-clock seconds at the default thread count")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = tuple(int(x) for x in args.sizes.split(","))
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(select_device("cuda"))
    runs: list[dict[str, Any]] = []
    for device in devices:
        presets = args.cpu_presets if device.type == "cpu" else args.cuda_presets
        for spec in filter(None, presets.split(",")):
            name, _, cap = spec.partition(":")
            capped = tuple(n for n in sizes if not cap or n <= int(cap))
            with clock_for(device, args.clock) as clock:
                runs.append({**bench_preset(name, device, capped, args.repeats), "clock": clock})

    def fe_at_32(device_type: str, key: str = "forward_equivalents_per_contribution") -> float | None:
        # The largest preset run on that device is the representative one (the tiny model is overhead-bound).
        candidates = [r for r in runs if r["device"].startswith(device_type) and "32" in r["by_n"]]
        return candidates[-1]["by_n"]["32"][key] if candidates else None

    marginal = "marginal_forward_equivalents_per_contribution"
    result: dict[str, Any] = {
        "forward_equivalents_per_contribution": fe_at_32("cpu") if fe_at_32("cpu") is not None else fe_at_32("cuda"),
        "forward_equivalents_per_contribution_cuda": fe_at_32("cuda"),
        "forward_equivalents_target": 1.5,
        # The marginal estimate's own cost (validator/valuation.py), on top of the evaluation: the issue's
        # "stated, measured overhead".
        "marginal_overhead_forward_equivalents_per_contribution": fe_at_32("cpu", marginal)
        if fe_at_32("cpu", marginal) is not None else fe_at_32("cuda", marginal),
        "marginal_overhead_forward_equivalents_per_contribution_cuda": fe_at_32("cuda", marginal),
        # Placeholder on purpose: the end-to-end window run (chain + IPFS + loop) fills this in; no fake number.
        "scored_fraction": None,
        "scored_fraction_note": "TODO: set by the end-to-end validator window run (contributions scored / "
                                "revealed and well-formed); this benchmark only measures the scoring pipeline.",
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "runs": runs,
    }
    result.update(end_to_end_scored_fraction())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"forward_equivalents_per_contribution (N=32) = {result['forward_equivalents_per_contribution']:.3f}, "
          f"marginal estimate overhead {result['marginal_overhead_forward_equivalents_per_contribution']:.3f}"
          f"  -> {args.output}")
    return 0


def end_to_end_scored_fraction() -> dict[str, Any]:
    """scored_fraction from one real window: Anvil + an IPFS daemon + five in-process trainers (three honest,
    one publishing bytes that are no payload, one committing without revealing) + the validator loop.
    contributions scored / contributions revealed and well-formed, as the loop recorded it for the window."""
    import tempfile

    from ipfs.client import IpfsClient
    from ipfs.daemon import IpfsDaemon
    from tests.validator.loop_harness import play_window, publish_initial_model, start_net
    from validator.loop import configure_determinism

    configure_determinism()
    with tempfile.TemporaryDirectory() as folder, IpfsDaemon(Path(folder) / "ipfs") as daemon, \
            IpfsClient(daemon.api_url) as blobs:
        net = start_net(Path(folder), blobs, n_trainers=5)
        try:
            base_cid, base = publish_initial_model(net)
            play_window(net, 0, base_cid, base, garbage=3, silent=4)
            loop = net.loop(net.validators[0], Path(folder) / "validator")
            loop.step()
            stats = json.loads(loop.store.get_value("window:0:stats") or "{}")
            loop.store.close()
        finally:
            net.node.stop()
    fraction = stats["scored"] / stats["well_formed"] if stats.get("well_formed") else None
    print(f"scored_fraction (end-to-end window) = {fraction}  {stats}")
    return {"scored_fraction": fraction, "scored_fraction_window": stats,
            "scored_fraction_note": "one real window (Anvil + IPFS + validator loop): 5 trainers, 1 undecodable "
                                    "payload, 1 missed reveal; scored / (revealed and well-formed)"}


if __name__ == "__main__":
    raise SystemExit(main())
