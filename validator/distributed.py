"""A validator's scoring spread over several processes (GPUs) with torch.distributed:

    torchrun --nproc-per-node N -m trainmarket.cli validator serve --deployment … --keystore …

Rank 0 is the validator: it alone reads the chain, fetches from IPFS, keeps the store, publishes and serves the
dashboard, exactly as a single-process validator does. The other ranks hold no key, no chain and no IPFS client.
Per window, the strategy's evaluation hook on rank 0 (`DistributedEvaluate`, given as ScoringStrategy's
`evaluate`) broadcasts the evaluation job: the run config (for the model's architecture), the base parameters,
every contribution's Δ as it will be applied (in a sparse, bit-exact form), the own-data batches, the common
common batch and the step size. Every rank runs the very same `evaluate_rows` on it, asking for the "after"
passes of its own contiguous slice of the contributions (`rank_slice`); the "before" passes, shared by all
contributions and computed in the same batches by every rank, stay as in one process. The per-row losses are
all-gathered in rank order, which is contribution order, and the strategy goes on with exactly the floats a single
process would have computed. The rest of the window (rating, aggregation bar, aggregation, the marginal-value
valuation, pay) runs on rank 0 alone, on those floats, exactly as in one process: the report, the aggregate and
both CIDs are byte-identical (tests/validator/test_distributed.py proves it with 2 gloo processes). The
valuation is not spread: its cost is a few passes per window plus the own rows once (validator/valuation.py),
not a pass per contribution.

NCCL on CUDA (one GPU per rank, LOCAL_RANK), gloo on CPU. The followers wait for the next job for as long as a
window lasts: the process group's timeout is FOLLOW_TIMEOUT."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from base.model import GPT, build_model
from base.run_config import RunConfig
from node.ddp import Cluster, ClusterError, join_cluster
from validator.domain import ParamDict
from validator.evaluate import RowLosses, evaluate_rows
from validator.loop import configure_determinism

FOLLOW_TIMEOUT = timedelta(days=7)
log = logging.getLogger(__name__)

Packed = dict[str, tuple[tuple[int, ...], Tensor, Tensor]]  # name → (shape, flat indices, values)


def join_scoring_group(device_choice: str = "auto") -> Cluster:
    """This process's place among the validator's torchrun processes (world size 1 outside torchrun)."""
    return join_cluster(device_choice, timeout=FOLLOW_TIMEOUT)


def rank_slice(n: int, rank: int, world: int) -> range:
    """Contribution indices rank `rank` of `world` evaluates: contiguous, sizes differing by at most one, in rank
    order, so that concatenating the ranks' results in rank order restores the contributions' order."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def pack_delta(delta: ParamDict) -> Packed:
    """A dense Δ as the entries whose bits are not those of +0.0 (so −0.0 survives): top-k updates are sparse."""
    out: Packed = {}
    for name, tensor in delta.items():
        flat = tensor.detach().to("cpu", torch.float32).contiguous().reshape(-1)
        where = flat.view(torch.int32).nonzero().squeeze(1)
        out[name] = (tuple(tensor.shape), where, flat[where].clone())
    return out


def unpack_delta(packed: Packed) -> ParamDict:
    out: ParamDict = {}
    for name, (shape, where, values) in packed.items():
        flat = torch.zeros(int(torch.Size(shape).numel()), dtype=torch.float32)
        flat[where] = values
        out[name] = flat.view(shape)
    return out


class DistributedEvaluate:
    """Rank 0's evaluation hook: evaluate_rows' signature, the work split over the cluster."""

    def __init__(self, cluster: Cluster, config: RunConfig) -> None:
        if not cluster.leader:
            raise ClusterError("only rank 0 hands out evaluation jobs")
        self.cluster = cluster
        self.config_json = config.to_json_bytes()

    def __call__(self, model: nn.Module, deltas: Sequence[ParamDict], own_batches: Sequence[Tensor],
                 random_batch: Tensor, step_size: float, device: torch.device | str,
                 base: ParamDict | None = None) -> list[RowLosses]:
        if not self.cluster.distributed:
            return evaluate_rows(model, deltas, own_batches, random_batch, step_size, device, base=base)
        params = base if base is not None else {n: p.detach() for n, p in model.named_parameters()}
        job = {"config": self.config_json, "deltas": [pack_delta(d) for d in deltas],
               "own": [b.cpu() for b in own_batches], "random": random_batch.cpu(), "step": step_size,
               "base": {n: t.detach().cpu() for n, t in params.items()}}
        _broadcast(self.cluster, job)
        results = _evaluate_share(self.cluster, model, job)
        log.info("evaluated %d contributions over %d processes (%s)", len(results), self.cluster.world_size,
                 self.cluster.backend)
        return results

    def stop(self) -> None:
        """Tell the followers the validator is done (they return from `follow`)."""
        if self.cluster.distributed:
            _broadcast(self.cluster, None)


def _broadcast(cluster: Cluster, job: dict[str, Any] | None) -> dict[str, Any] | None:
    box: list[Any] = [job]
    dist.broadcast_object_list(box, src=0, device=cluster.device if cluster.backend == "nccl" else None)
    received: dict[str, Any] | None = box[0]
    return received


def _evaluate_share(cluster: Cluster, model: nn.Module, job: dict[str, Any]) -> list[RowLosses]:
    deltas = [unpack_delta(p) for p in job["deltas"]]
    mine = rank_slice(len(deltas), cluster.rank, cluster.world_size)
    rows = evaluate_rows(model, deltas, job["own"], job["random"], job["step"], cluster.device, base=job["base"],
                         indices=mine)
    # Cloned: a view would carry its whole storage (every contribution's own rows) into the gather. The common
    # "before" rows are the same for every contribution; each rank computed them and keeps its own.
    share = [(r.own_before.clone(), r.own_after.clone(), r.common_after.clone()) for r in rows]
    gathered: list[Any] = [None] * cluster.world_size
    dist.all_gather_object(gathered, share)
    if not rows:  # rank 0's slice is empty only when the window has no contribution (rank_slice)
        return []
    common_before = rows[0].common_before
    return [RowLosses(own_before=before, own_after=after, common_before=common_before, common_after=common_after)
            for part in gathered for before, after, common_after in part]


def follow(cluster: Cluster) -> int:
    """Ranks > 0: evaluate a slice of every window rank 0 hands out, until it says stop. Returns the jobs done."""
    if cluster.leader:
        raise ClusterError("rank 0 leads; it does not follow")
    configure_determinism()  # the same threads and kernels as rank 0: the same floats
    model: GPT | None = None
    model_config = b""
    done = 0
    while True:
        job = _broadcast(cluster, None)
        if job is None:
            return done
        if model is None or job["config"] != model_config:
            config = RunConfig.from_json_bytes(job["config"])
            # The architecture and buffers only: every pass runs on the job's base parameters.
            model = build_model(config)
            model_config = job["config"]
        _evaluate_share(cluster, model, job)
        done += 1
