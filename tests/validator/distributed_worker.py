"""The body of one rank in tests/validator/test_distributed.py: rank 0 evaluates a window's contributions through
`DistributedEvaluate` and scores two whole windows (evaluation spread, then aggregation bar, valuation and pay)
through a strategy that uses it; rank 1 follows. Imports only torch, node/, validator/ and the pipeline fixtures
(no chain client)."""

from __future__ import annotations

import hashlib
import json
import os

import torch

from base.model import GPT, build_model
from base.run_config import RunConfig
from node.ddp import leave_cluster
from tests.validator.pipeline_fixtures import (
    BASE_CID,
    contribution,
    corpus,
    noise_update,
    random_rows,
    rows,
    sparsify,
    train_delta,
)
from validator.distributed import DistributedEvaluate, follow, join_scoring_group
from validator.domain import ParamDict
from validator.evaluate import RowLosses
from validator.loop import configure_determinism
from validator.strategy import Evaluate, ScoringStrategy, ValidatorState, WindowInputs

CONFIG = RunConfig(model_preset="tiny", model_overrides={"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32},
                   seq_len=16)
CONTRIBUTIONS = 7  # odd: the ranks' slices differ in size


def model() -> GPT:
    return build_model(CONFIG)


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


def rows_json(losses: list[RowLosses]) -> list[dict[str, list[float]]]:
    """Every per-row float; float64 round-trips exactly through JSON."""
    return [{k: getattr(r, k).tolist() for k in ("own_before", "own_after", "common_before", "common_after")}
            for r in losses]


def scoring_window(window: int, params: ParamDict) -> WindowInputs:
    """Five honest trainers and a noise sender, every common row owned by one of them (seeded, real text)."""
    tokens = corpus()
    trainers = [f"0xh{i}" for i in range(5)]
    own = {t: rows(tokens, 3_000 + 17_000 * i + 1_000 * window, 4) for i, t in enumerate(trainers)}
    contribs = [contribution(t, window, *sparsify(train_delta(model(), params, own[t])), base=BASE_CID)
                for t in trainers]
    contribs.append(contribution("0xnoise", window, *noise_update(params, 0.05, seed=window), base=BASE_CID))
    own["0xnoise"] = rows(tokens, 120_000 + 1_000 * window, 4)
    owners = [*trainers, "0xnoise"]
    return WindowInputs(window=window, block_hash=f"0x{window:064x}", base_model_cid=BASE_CID, params=params,
                        contributions=contribs, own_batches=own,
                        common_batch=random_rows(tokens, 24, seed=100 + window),
                        common_owners=[owners[i % len(owners)] for i in range(24)])


def score_two_windows(evaluate: Evaluate | None) -> list[dict[str, str]]:
    """Two windows scored in a row (the second's valuation sees the first's step); each report's canonical JSON
    and a digest of the new model's bits."""
    strategy = ScoringStrategy(model(), device="cpu", evaluate=evaluate)
    params: ParamDict = {n: p.detach().clone() for n, p in model().named_parameters()}
    state = ValidatorState()
    out = []
    for w in range(2):
        report, params, state = strategy.score_window(scoring_window(w, params), state)
        digest = hashlib.sha256(b"".join(params[n].contiguous().numpy().tobytes() for n in sorted(params)))
        out.append({"report": report.to_json(), "model": digest.hexdigest()})
    return out


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
            with open(os.path.join(out, "results.json"), "w") as f:
                json.dump([rows_json(run) for run in results], f)
            with open(os.path.join(out, "windows.json"), "w") as f:
                json.dump(score_two_windows(evaluate), f)
        else:
            with open(os.path.join(out, "follower"), "w") as f:
                f.write(str(follow(cluster)))
    finally:
        leave_cluster(cluster)
