"""The body of one rank in tests/node/test_ddp.py, in a module that imports only torch and node/ (each
spawned rank imports this module, and web3 or the chain client would only slow its start)."""

from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

from base.model import GPT, preset_config
from base.run_config import RunConfig
from node.ddp import follow, join_cluster, lead_window, leave_cluster
from node.train import InnerLoopConfig

CONFIG = RunConfig(model_preset="tiny", seq_len=16, inner_steps=3, seqs_per_step=4)
INNER = InnerLoopConfig(steps=3, lr=3e-3, micro_batch_size=1)  # several micro-batches: exercises no_sync


def model() -> GPT:
    return GPT.from_seed(preset_config(CONFIG.model_preset, {}), CONFIG.model_seed)


def window_batches(window: int) -> torch.Tensor:
    vocab = preset_config(CONFIG.model_preset, {}).vocab_size
    generator = torch.Generator().manual_seed(100 + window)
    return torch.randint(0, vocab, (INNER.steps * CONFIG.seqs_per_step, CONFIG.seq_len + 1), generator=generator)


def rank_main(rank: int, port: int, out: str) -> None:
    """One rank of the node: rank 0 leads two windows (from the model and the AdamW moments the first left),
    rank 1 follows."""
    torch.set_num_threads(1)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
           "LOCAL_RANK": str(rank)}
    os.environ.update(env)
    cluster = join_cluster("cpu")
    assert cluster.backend == "gloo" and cluster.rank == rank and cluster.distributed
    try:
        if rank == 0:
            trained = model()
            moments = None  # window 1 starts from the AdamW moments window 0 left (the follower must get them too)
            for window in (0, 1):
                result = lead_window(cluster, trained, window_batches(window), INNER, CONFIG, optimizer_state=moments)
                moments = result.optimizer
                save_file(result.pseudo_gradient, os.path.join(out, f"delta-{window}.safetensors"))
                save_file({"losses": torch.tensor(result.losses)}, os.path.join(out, f"losses-{window}.safetensors"))
        else:
            with open(os.path.join(out, "follower"), "w") as f:
                f.write(str(follow(cluster)))
    finally:
        leave_cluster(cluster)
