"""Commit–reveal by block number: timing, hash checks, duplicates, missed reveals and their slashing."""

from __future__ import annotations

from contracts.client import commitment_hash
from contracts.types import CommitStatus

from .conftest import ETH, Chain, commit_cid, make_run, reverts, salt_for, to_reveal_period


def test_commit_and_reveal_happy_path(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    window = trainer.current_window(run_id)
    commit_cid(chain, trainer, run_id, window, "bafk-one")
    prefix, status = trainer.commitment_of(run_id, window, trainer.account.address)
    assert status is CommitStatus.COMMITTED
    expected = commitment_hash("bafk-one", salt_for("bafk-one"), run_id, window, trainer.account.address)
    assert prefix[:24] == expected[:24]
    assert [c.trainer for c in trainer.commits(run_id, window)] == [trainer.account.address]
    to_reveal_period(chain, run_id, window)
    trainer.reveal(run_id, window, "bafk-one", salt_for("bafk-one"))
    reveals = trainer.reveals(run_id, window)
    assert [(r.trainer, r.cid) for r in reveals] == [(trainer.account.address, "bafk-one")]
    assert trainer.commitment_of(run_id, window, trainer.account.address)[1] is CommitStatus.REVEALED


def test_commit_only_inside_its_window(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    bounds = trainer.window_bounds(run_id, 0)
    chain.mine_to(bounds.end - 1)  # last block of window 0: still accepted
    with reverts("WrongWindow", window=1, currentWindow=0):
        commit_cid(chain, trainer, run_id, 1, "early")
    commit_cid(chain, trainer, run_id, 0, "last-block")
    with reverts("WrongWindow", window=0, currentWindow=1):
        commit_cid(chain, chain.trainers[1], run_id, 0, "late")


def test_one_commitment_per_trainer_per_window(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    commit_cid(chain, trainer, run_id, 0, "a")
    with reverts("AlreadyCommitted"):
        commit_cid(chain, trainer, run_id, 0, "b")


def test_commit_requires_an_active_trainer_with_minimum_stake(chain: Chain, run_id: int) -> None:
    with reverts("NotTrainer"):
        commit_cid(chain, chain.trainers[5], run_id, 0, "x")
    with reverts("NotTrainer"):  # validators are not trainers
        commit_cid(chain, chain.validators[0], run_id, 0, "x")
    chain.trainers[1].request_unstake(run_id)
    with reverts("Unbonding"):
        commit_cid(chain, chain.trainers[1], run_id, 0, "x")


def test_reveal_only_in_reveal_blocks(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    commit_cid(chain, trainer, run_id, 0, "cid")
    bounds = trainer.window_bounds(run_id, 0)
    with reverts("NotInRevealPeriod", opensAt=bounds.end, closesAt=bounds.reveal_end):
        trainer.reveal(run_id, 0, "cid", salt_for("cid"))
    chain.mine_to(bounds.reveal_end)
    with reverts("NotInRevealPeriod"):
        trainer.reveal(run_id, 0, "cid", salt_for("cid"))


def test_reveal_reverts_on_bad_input(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    commit_cid(chain, trainer, run_id, 0, "cid")
    to_reveal_period(chain, run_id, 0)
    with reverts("CommitmentMismatch"):
        trainer.reveal(run_id, 0, "other-cid", salt_for("cid"))
    with reverts("CommitmentMismatch"):
        trainer.reveal(run_id, 0, "cid", salt_for("wrong"))
    with reverts("NoCommitment"):
        chain.trainers[1].reveal(run_id, 0, "cid", salt_for("cid"))
    with reverts("NotTrainer"):
        chain.trainers[5].reveal(run_id, 0, "cid", salt_for("cid"))
    with reverts("InvalidCid", length=0):
        trainer.reveal(run_id, 0, "", salt_for("cid"))
    with reverts("InvalidCid", length=129):
        trainer.reveal(run_id, 0, "b" * 129, salt_for("cid"))
    trainer.reveal(run_id, 0, "cid", salt_for("cid"))
    with reverts("AlreadyRevealed"):
        trainer.reveal(run_id, 0, "cid", salt_for("cid"))


def test_duplicate_cid_flags_and_slashes_both(chain: Chain, run_id: int) -> None:
    first, second, third = chain.trainers[:3]
    salts = {first: b"\x01" * 32, second: b"\x02" * 32, third: b"\x03" * 32}
    for trainer in (first, second, third):
        trainer.commit(run_id, 0, commitment_hash("same-cid", salts[trainer], run_id, 0, trainer.account.address))
    to_reveal_period(chain, run_id, 0)
    pool = chain.sponsor.get_run(run_id).pool
    first.reveal(run_id, 0, "same-cid", salts[first])
    second.reveal(run_id, 0, "same-cid", salts[second])
    third.reveal(run_id, 0, "same-cid", salts[third])
    pairs = chain.sponsor.duplicates(run_id, 0)
    addr = [t.account.address for t in (first, second, third)]
    assert pairs == [(addr[0], addr[1], "same-cid"), (addr[0], addr[2], "same-cid")]
    slash = ETH // 10  # slash_bps = 1000
    for trainer in (first, second, third):  # the first revealer is slashed once, not per copier
        info = chain.sponsor.trainer_info(run_id, trainer.account.address)
        assert (info.stake, info.slash_count) == (ETH - slash, 1)
    assert chain.sponsor.get_run(run_id).pool == pool + 3 * slash
    assert len(chain.sponsor.reveals(run_id, 0)) == 3


def test_same_cid_in_different_windows_is_not_a_duplicate(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    commit_cid(chain, trainer, run_id, 0, "cid")
    to_reveal_period(chain, run_id, 0)
    trainer.reveal(run_id, 0, "cid", salt_for("cid"))
    other = chain.trainers[1]
    other.commit(run_id, 1, commitment_hash("cid", b"\x09" * 32, run_id, 1, other.account.address))
    to_reveal_period(chain, run_id, 1)
    chain.trainers[1].reveal(run_id, 1, "cid", b"\x09" * 32)
    assert chain.sponsor.duplicates(run_id, 1) == []


def test_missed_reveal_report_and_threshold_slash(chain: Chain, run_id: int) -> None:
    trainer, reporter = chain.trainers[0], chain.trainers[5]
    address = trainer.account.address
    commit_cid(chain, trainer, run_id, 0, "w0")
    with reverts("RevealPeriodNotOver"):
        reporter.report_missed_reveal(run_id, 0, address)
    chain.mine_to(trainer.window_bounds(run_id, 1).start)
    commit_cid(chain, trainer, run_id, 1, "w1")
    chain.mine_to(trainer.window_bounds(run_id, 1).reveal_end)
    with reverts("NoCommitment"):
        reporter.report_missed_reveal(run_id, 0, chain.trainers[1].account.address)
    with reverts("NotTrainer"):
        reporter.report_missed_reveal(run_id, 0, reporter.account.address)
    reporter.report_missed_reveal(run_id, 0, address)
    assert trainer.commitment_of(run_id, 0, address)[1] is CommitStatus.MISSED
    info = chain.sponsor.trainer_info(run_id, address)
    assert (info.misses, info.stake) == (1, ETH)
    with reverts("AlreadyRevealed"):  # already reported
        reporter.report_missed_reveal(run_id, 0, address)
    pool = chain.sponsor.get_run(run_id).pool
    reporter.report_missed_reveal(run_id, 1, address)  # second miss = miss_threshold
    info = chain.sponsor.trainer_info(run_id, address)
    assert (info.misses, info.stake, info.slash_count) == (0, ETH - ETH // 10, 1)
    assert chain.sponsor.get_run(run_id).pool == pool + ETH // 10


def test_revealed_commitment_cannot_be_reported(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    commit_cid(chain, trainer, run_id, 0, "cid")
    to_reveal_period(chain, run_id, 0)
    trainer.reveal(run_id, 0, "cid", salt_for("cid"))
    chain.mine_to(trainer.window_bounds(run_id, 0).reveal_end)
    with reverts("AlreadyRevealed"):
        chain.trainers[5].report_missed_reveal(run_id, 0, trainer.account.address)


def test_reusing_a_ring_slot_counts_the_unrevealed_commitment(chain: Chain) -> None:
    rid = make_run(chain, miss_threshold=5)
    trainer = chain.trainers[0]
    trainer.register_trainer(rid, ETH)
    commit_cid(chain, trainer, rid, 0, "never-revealed")
    chain.mine_to(trainer.window_bounds(rid, 4).start)  # RING = 4: window 4 reuses window 0's slot
    commit_cid(chain, trainer, rid, 4, "w4")
    assert chain.sponsor.trainer_info(rid, trainer.account.address).misses == 1
    assert trainer.commitment_of(rid, 0, trainer.account.address)[1] is CommitStatus.NONE


def test_slashed_trainer_below_minimum_cannot_commit_until_topped_up(chain: Chain) -> None:
    rid = make_run(chain, miss_threshold=1)
    trainer = chain.trainers[0]
    trainer.register_trainer(rid, ETH)
    commit_cid(chain, trainer, rid, 0, "cid")
    chain.mine_to(trainer.window_bounds(rid, 0).reveal_end)
    chain.trainers[5].report_missed_reveal(rid, 0, trainer.account.address)
    window = trainer.current_window(rid)
    with reverts("StakeTooLow", stake=ETH - ETH // 10, required=ETH):
        commit_cid(chain, trainer, rid, window, "next")
    trainer.add_stake(rid, ETH // 10)
    commit_cid(chain, trainer, rid, window, "next")
