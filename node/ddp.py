"""A trainer node spread over several GPUs (or CPU processes) under `torchrun`, still one contribution.

    torchrun --nproc-per-node 4 -m trainmarket.cli node run --deployment … --keystore …

Rank 0 is the node: it alone reads the chain, talks to IPFS, journals, commits, publishes and reveals,
exactly as a single-process node does. The other ranks are followers with no chain, IPFS or key at all:
for every window rank 0 trains, it broadcasts a job (the run config, the inner-loop config and the
window's assigned batches); every rank takes a disjoint, equal share of each step's rows and the
gradients are all-reduced (DDP), so the step is the same as a single process over all the rows and the
validator's own-data check sees the same data. DDP's construction broadcasts rank 0's parameters (the base
model rank 0 loaded), so every rank starts the window from the same weights; rank 0's pseudo-gradient is
the one published. NCCL on CUDA, gloo on CPU. FSDP (models that do not fit one GPU) is not implemented.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from base.errors import TrainmarketError
from base.model import GPT, build_model, select_device
from base.run_config import RunConfig
from node.train import InnerLoopConfig, InnerOptimizerState, InnerResult, ProgressFn, train_inner


class ClusterError(TrainmarketError):
    """The process group cannot be formed or used as asked (bad torchrun environment, uneven shares)."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in the node's process group; world_size 1 is the ordinary single process."""

    rank: int
    world_size: int
    backend: str  # "nccl", "gloo", or "none" for a single process
    device: torch.device

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def join_cluster(device_choice: str = "auto", env: Mapping[str, str] | None = None,
                 timeout: timedelta | None = None) -> Cluster:
    """The cluster torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT);
    without WORLD_SIZE > 1 a single process, and no process group is created at all. `timeout`: how long a
    collective may wait (the followers of a validator wait a whole window for the next job)."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
    except ValueError as err:
        raise ClusterError(f"WORLD_SIZE/LOCAL_RANK are not integers: {err}") from None
    device = select_device(device_choice)
    if world <= 1:
        return Cluster(0, 1, "none", device)
    if device.type == "cuda":
        # One GPU per rank: LOCAL_RANK picks it, and NCCL needs it as the current device.
        if local_rank >= torch.cuda.device_count():
            raise ClusterError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = backend_for(device)
    if timeout is None:
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend=backend, timeout=timeout)
    return Cluster(dist.get_rank(), dist.get_world_size(), backend, device)


def leave_cluster(cluster: Cluster) -> None:
    """Rank 0 tells the followers to stop; every rank then leaves the process group."""
    if not cluster.distributed:
        return
    if cluster.leader:
        _broadcast_job(cluster, None)
    # Leave together: a rank that tore its group down and exited while another was still inside gloo made that one
    # abort ("terminate called without an active exception", SIGABRT) in 1 of 3 runs of test_ddp's torchrun node.
    dist.barrier()
    dist.destroy_process_group()


# -- jobs --------------------------------------------------------------------------------------------------


def _broadcast_job(cluster: Cluster, job: dict[str, Any] | None) -> dict[str, Any] | None:
    box: list[Any] = [job]
    dist.broadcast_object_list(box, src=0, device=cluster.device if cluster.backend == "nccl" else None)
    received: dict[str, Any] | None = box[0]
    return received


def lead_window(
    cluster: Cluster, model: GPT, batches: Tensor, cfg: InnerLoopConfig, config: RunConfig,
    progress: ProgressFn | None = None, optimizer_state: InnerOptimizerState | None = None,
) -> InnerResult:
    """Rank 0: hand the window's job (and its inner optimiser moments, so that every rank steps alike) to the
    followers, then train its own share in lockstep with them."""
    if not cluster.leader:
        raise ClusterError("only rank 0 leads a window")
    state = optimizer_state or InnerOptimizerState()
    job = {"config": config.to_json_bytes(), "inner": cfg, "shape": tuple(batches.shape),
           "moments": sorted(state.exp_avg), "steps": state.steps}
    _broadcast_job(cluster, job)
    rows = batches.to(device=cluster.device, dtype=torch.long).contiguous()
    dist.broadcast(rows, src=0)
    _broadcast_moments(cluster, state)
    return train_inner(model, rows, cfg, cluster.device, progress, cluster=cluster, optimizer_state=state)


def _broadcast_moments(cluster: Cluster, state: InnerOptimizerState) -> None:
    """Every rank ends up with rank 0's moments (followers pass an empty state with the names filled in)."""
    for table in (state.exp_avg, state.exp_avg_sq):
        for name in sorted(table):
            buf = table[name].to(cluster.device).contiguous()
            dist.broadcast(buf, src=0)
            table[name] = buf.cpu()


def follow(cluster: Cluster) -> int:
    """Ranks > 0: train every window rank 0 leads, until it says stop. Returns the windows trained."""
    if cluster.leader:
        raise ClusterError("rank 0 leads; it does not follow")
    model: GPT | None = None
    model_config = b""
    trained = 0
    while True:
        job = _broadcast_job(cluster, None)
        if job is None:
            return trained
        if model is None or job["config"] != model_config:
            config = RunConfig.from_json_bytes(job["config"])
            # The architecture only: DDP overwrites these weights with rank 0's base model.
            model = build_model(config)
            model_config = job["config"]
        rows = torch.empty(job["shape"], dtype=torch.long, device=cluster.device)
        dist.broadcast(rows, src=0)
        shapes = dict(model.named_parameters())
        state = InnerOptimizerState(
            steps=job["steps"],
            exp_avg={n: torch.empty_like(shapes[n], dtype=torch.float32) for n in job["moments"]},
            exp_avg_sq={n: torch.empty_like(shapes[n], dtype=torch.float32) for n in job["moments"]},
        )
        _broadcast_moments(cluster, state)
        train_inner(model, rows, job["inner"], cluster.device, cluster=cluster, optimizer_state=state)
        trained += 1
