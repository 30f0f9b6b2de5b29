"""The body of one rank in tests/validator/test_distributed.py: rank 0 scores a window's contributions through
`DistributedEvaluate`, rank 1 follows. Imports only torch, node/ and validator/ (no chain client)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import torch

from node.ddp import leave_cluster
from node.model import GPT, preset_config
from node.protocol import RunConfig
from validator.distributed import DistributedEvaluate, follow, join_scoring_group
from validator.loop import configure_determinism

CONFIG = RunConfig(model_preset="tiny", model_overrides={"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32},
                   seq_len=16)
CONTRIBUTIONS = 7  # odd: the ranks' slices differ in size


def model() -> GPT:
    return GPT.from_seed(preset_config(CONFIG.model_preset, dict(CONFIG.model_overrides)), CONFIG.model_seed)


def window() -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]], list[torch.Tensor], torch.Tensor]:
    """Base parameters, sparse deltas (a −0.0 among them), own batches and the random batch, all seeded."""
    g = torch.Generator().manual_seed(7)
    base = {n: p.detach().clone() for n, p in model().named_parameters()}
    deltas = []
    for _ in range(CONTRIBUTIONS):
        delta = {}
        for name, p in base.items():
            mask = torch.rand(p.shape, generator=g) < 0.05
            delta[name] = torch.randn(p.shape, generator=g) * 0.05 * mask
        first = next(iter(delta))
        delta[first].view(-1)[0] = -0.0
        deltas.append(delta)
    # 3 own rows against chunks of 8: chunks straddle contributions, and so the ranks' slices
    own = [torch.randint(0, 256, (3, CONFIG.seq_len + 1), generator=g) for _ in range(CONTRIBUTIONS)]
    random_batch = torch.randint(0, 256, (8, CONFIG.seq_len + 1), generator=g)
    return base, deltas, own, random_batch


def rank_main(rank: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
                       "LOCAL_RANK": str(rank)})
    configure_determinism()
    cluster = join_scoring_group("cpu")
    assert cluster.distributed and cluster.backend == "gloo"
    try:
        if rank == 0:
            base, deltas, own, random_batch = window()
            evaluate = DistributedEvaluate(cluster, CONFIG)
            results = [evaluate(model(), deltas, own, random_batch, 1.0, "cpu", base=base) for _ in range(2)]
            with open(os.path.join(out, "results.json"), "w") as f:  # floats round-trip exactly through JSON
                json.dump([[asdict(r) for r in run] for run in results], f)
        else:
            with open(os.path.join(out, "follower"), "w") as f:
                f.write(str(follow(cluster)))
    finally:
        leave_cluster(cluster)
