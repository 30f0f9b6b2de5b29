"""Evaluation rows are chosen after the commit: own rows from the whole assignment, common rows from the other
committed trainers' assignments, both by the closing block hash."""

from __future__ import annotations

import pytest
import torch

from base.run_config import RunConfig
from node.data import Dataset, assigned_batches, build_dataset
from trainmarket.demo.network import demo_corpus
from validator.eval_data import HELDOUT_OWNER, assignment_size, common_eval_rows, own_eval_rows, seeded_sample

CONFIG = RunConfig(seq_len=16, inner_steps=6, seqs_per_step=8, eval_own_seqs=8, eval_random_seqs=24)
TRAINERS = ["0x" + f"{i:040x}" for i in range(1, 6)]
BLOCK = bytes(range(32))


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return build_dataset(demo_corpus(400_000), shard_bytes=64 * 1024, heldout_fraction=0.2).to_dataset()


def _row_set(t: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(r.tolist()) for r in t}


def test_seeded_sample_is_a_reproducible_sample_without_replacement() -> None:
    first = seeded_sample(b"seed", 100, 10)
    assert first == seeded_sample(b"seed", 100, 10) and len(set(first)) == 10 and first == sorted(first)
    assert first != seeded_sample(b"other", 100, 10)
    assert seeded_sample(b"seed", 5, 10) == [0, 1, 2, 3, 4]


def test_own_rows_come_from_the_whole_assignment_not_its_first_rows(ds: Dataset) -> None:
    """Issue 13: the old own rows were the assignment's first rows, known before the commit, and an attacker
    trained extra steps on exactly those."""
    assignment = assigned_batches(ds, CONFIG.run_seed, TRAINERS[0], 3, assignment_size(CONFIG), CONFIG.seq_len)
    picks = [_row_set(own_eval_rows(ds, CONFIG, TRAINERS[0], 3, bytes([b]) * 32)) for b in range(20)]
    everything = _row_set(assignment)
    assert all(p <= everything and len(p) == CONFIG.eval_own_seqs for p in picks)
    first_rows = _row_set(assignment[: CONFIG.eval_own_seqs])
    assert sum(p == first_rows for p in picks) == 0
    covered = set().union(*picks)
    assert len(covered) > 0.9 * len(everything)  # over many block hashes, every row can be asked
    assert torch.equal(own_eval_rows(ds, CONFIG, TRAINERS[0], 3, BLOCK), own_eval_rows(ds, CONFIG, TRAINERS[0], 3,
                                                                                        BLOCK))


def test_common_rows_are_other_committed_trainers_rows_tagged_by_owner(ds: Dataset) -> None:
    rows, owners = common_eval_rows(ds, CONFIG, TRAINERS, 3, BLOCK)
    assert rows.shape == (CONFIG.eval_random_seqs, CONFIG.seq_len + 1) and len(owners) == rows.size(0)
    assert len(set(owners)) >= 3 and set(owners) <= set(TRAINERS)
    for owner in set(owners):
        mine = _row_set(rows[torch.tensor([o == owner for o in owners])])
        assignment = assigned_batches(ds, CONFIG.run_seed, owner, 3, assignment_size(CONFIG), CONFIG.seq_len)
        assert mine <= _row_set(assignment)
    again, same_owners = common_eval_rows(ds, CONFIG, list(reversed(TRAINERS)), 3, BLOCK)
    assert torch.equal(rows, again) and owners == same_owners  # order of the committed list does not matter
    other, _ = common_eval_rows(ds, CONFIG, TRAINERS, 3, bytes(32))
    assert not torch.equal(rows, other)  # a different closing block, different rows


def test_a_lone_committer_is_evaluated_on_held_out_rows(ds: Dataset) -> None:
    rows, owners = common_eval_rows(ds, CONFIG, TRAINERS[:1], 3, BLOCK)
    assert set(owners) == {HELDOUT_OWNER} and rows.size(0) == CONFIG.eval_random_seqs
