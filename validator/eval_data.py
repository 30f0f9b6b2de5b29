"""Which rows a window's contributions are evaluated on. Both sets are chosen after every commit, by the
window's closing block hash (validator/window_inputs.closing_block_hash), so no trainer can know or steer them
when it commits:

* own rows: `eval_own_seqs` rows of the trainer's *whole* assignment for the window. Before this change they were
  the assignment's first rows, known in advance: a trainer could spend a few extra steps on exactly those and
  win the own-vs-common test (issue 13 measured ~9× an honest trainer's pay for it). Drawn from all of it, the
  only way to fit the evaluated rows is to fit the assignment, which is the work asked for.
* common rows: `eval_random_seqs` rows drawn from the same-window assignments of every trainer that committed
  (each row tagged with its owner), instead of the public held-out split. They are the same distribution as a
  trainer's own rows, so "own − common" measures training on one's own data and nothing else (the held-out
  split is other files, a distribution shift that moved every update's own-vs-common gap), and which of them
  count is unknown until the block exists. A contribution is judged on the common rows it does not own.
  With fewer than two committers there are no other trainers' rows: the held-out split stands in (owner "").

Pure functions of (dataset, config, trainers, window, block hash): the loop, the audit and bench/marketsim
call the same ones, so everyone evaluates on the same rows."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from base.run_config import RunConfig
from node.data import Dataset, assigned_batches, assignment_offsets, heldout_batches

DOMAIN = b"trainmarket/eval-rows/v1|"
HELDOUT_OWNER = ""  # owner tag of held-out rows: nobody's assignment


def assignment_size(config: RunConfig) -> int:
    """Rows a trainer is assigned per window (what it trains on): H steps × sequences per step."""
    return config.inner_steps * config.seqs_per_step


def seeded_sample(seed: bytes, n: int, k: int) -> list[int]:
    """k distinct indices of range(n) (all of them if k ≥ n), ascending: the k with the smallest
    sha256(seed | i). A uniform sample without replacement that anyone can recompute from the seed."""
    ranked = sorted(range(n), key=lambda i: hashlib.sha256(seed + i.to_bytes(8, "big")).digest())
    return sorted(ranked[: max(0, k)])


def _seed(kind: bytes, block_hash: bytes, window: int, extra: bytes = b"") -> bytes:
    return DOMAIN + kind + b"|" + block_hash + window.to_bytes(8, "big") + extra


def own_eval_rows(ds: Dataset, config: RunConfig, trainer: str, window: int, block_hash: bytes) -> Tensor:
    """`eval_own_seqs` rows of the trainer's whole window assignment, chosen by the closing block hash."""
    rows = assigned_batches(ds, config.run_seed, trainer, window, assignment_size(config), config.seq_len)
    chosen = seeded_sample(_seed(b"own", block_hash, window, trainer.lower().encode()), rows.size(0),
                           config.eval_own_seqs)
    return rows[torch.tensor(chosen, dtype=torch.long)]


def common_eval_rows(ds: Dataset, config: RunConfig, trainers: Sequence[str], window: int, block_hash: bytes
                     ) -> tuple[Tensor, tuple[str, ...]]:
    """(rows [R, seq_len + 1], owner of each row): `eval_random_seqs` rows drawn without replacement from the
    union of the committed `trainers`' window assignments, in (owner, row) order."""
    owners = sorted({t.lower() for t in trainers})
    if len(owners) < 2:
        rows = heldout_batches(ds, block_hash, config.eval_random_seqs, config.seq_len)
        return rows, (HELDOUT_OWNER,) * rows.size(0)
    per = assignment_size(config)
    chosen = seeded_sample(_seed(b"common", block_hash, window), len(owners) * per, config.eval_random_seqs)
    span = config.seq_len + 1
    starts: list[int] = []
    tags: list[str] = []
    offsets: dict[str, list[int]] = {}
    for index in chosen:
        owner = owners[index // per]
        if owner not in offsets:
            offsets[owner] = assignment_offsets(ds.train.numel(), config.run_seed, owner, window, per, config.seq_len)
        starts.append(offsets[owner][index % per])
        tags.append(owner)
    gather = torch.tensor(starts, dtype=torch.long).unsqueeze(1) + torch.arange(span, dtype=torch.long)
    return ds.train[gather].long(), tuple(tags)
