"""Commit–reveal by block number: timing, hash checks, duplicates (by content: the CID's multihash), missed
reveals and their slashing."""

from __future__ import annotations

import pytest

from base.commitments import commitment_hash
from contracts.errors import ContractReverted
from contracts.types import CommitStatus

from .cids import b32, cid, encodings
from .conftest import ETH, Chain, commit_cid, make_run, reveal_cid, reverts, salt_for, to_reveal_period, to_start


def test_commit_and_reveal_happy_path(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    window = trainer.current_window(run_id)
    content = commit_cid(chain, trainer, run_id, window, "one")
    prefix, status = trainer.commitment_of(run_id, window, trainer.account.address)
    assert status is CommitStatus.COMMITTED
    expected = commitment_hash(content, salt_for("one"), run_id, window, trainer.account.address)
    assert prefix[:24] == expected[:24]
    assert [c.trainer for c in trainer.commits(run_id, window)] == [trainer.account.address]
    to_reveal_period(chain, run_id, window)
    reveal_cid(trainer, run_id, window, "one")
    reveals = trainer.reveals(run_id, window)
    assert [(r.trainer, r.cid) for r in reveals] == [(trainer.account.address, content)]
    assert trainer.commitment_of(run_id, window, trainer.account.address)[1] is CommitStatus.REVEALED


def test_no_commit_before_the_run_starts(chain: Chain) -> None:
    rid = make_run(chain)
    chain.trainers[0].register_trainer(rid, ETH)
    start = chain.sponsor.get_run(rid).start_block
    with reverts("RunNotStarted", startBlock=start):
        commit_cid(chain, chain.trainers[0], rid, 0, "early")
    with reverts("RunNotStarted"):
        chain.sponsor.current_window(rid)


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
        reveal_cid(trainer, run_id, 0, "cid")
    chain.mine_to(bounds.reveal_end)
    with reverts("NotInRevealPeriod"):
        reveal_cid(trainer, run_id, 0, "cid")


def test_reveal_reverts_on_bad_input(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    commit_cid(chain, trainer, run_id, 0, "cid")
    to_reveal_period(chain, run_id, 0)
    with reverts("CommitmentMismatch"):
        trainer.reveal(run_id, 0, cid("other"), salt_for("cid"))
    with reverts("CommitmentMismatch"):
        trainer.reveal(run_id, 0, cid("cid"), salt_for("wrong"))
    with reverts("NoCommitment"):
        reveal_cid(chain.trainers[1], run_id, 0, "cid")
    with reverts("NotTrainer"):
        reveal_cid(chain.trainers[5], run_id, 0, "cid")
    reveal_cid(trainer, run_id, 0, "cid")
    with reverts("AlreadyRevealed"):
        reveal_cid(trainer, run_id, 0, "cid")


NOT_CIDS = {
    "empty": "",
    "one char": "b",
    "too long": "b" + "a" * 128,
    "no multibase": "xafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    "bad base32 char": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk1",
    "truncated digest": cid("x")[:-4],
    "digest too long": b32(bytes([1, 0x55, 0x12, 0x20]) + bytes(33)),
    "cid version 2": b32(bytes([2, 0x55, 0x12, 0x20]) + bytes(32)),
    "bad base58 char": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbd0",
    "odd base16": "f0155122" + "00" * 32,
    "non-ascii": "bafkrei\u00e9" + "a" * 50,
}


@pytest.mark.parametrize("text", NOT_CIDS.values(), ids=NOT_CIDS.keys())
def test_a_reveal_must_be_a_cid(chain: Chain, run_id: int, text: str) -> None:
    trainer = chain.trainers[0]
    trainer.commit(run_id, 0, commitment_hash(text, salt_for("x"), run_id, 0, trainer.account.address))
    to_reveal_period(chain, run_id, 0)
    with reverts("InvalidCid", length=len(text.encode())):
        trainer.reveal(run_id, 0, text, salt_for("x"))


def test_every_encoding_of_a_multihash_is_the_same_content(chain: Chain) -> None:
    keys = {name: chain.sponsor.cid_key(text) for name, text in encodings("content").items()}
    assert len(set(keys.values())) == 1, keys
    assert chain.sponsor.cid_key(cid("other content")) != keys["v0"]
    for text in NOT_CIDS.values():
        with pytest.raises(ContractReverted):
            chain.sponsor.cid_key(text)


def test_a_duplicate_slashes_only_the_later_revealers(chain: Chain, run_id: int) -> None:
    first, second, third = chain.trainers[:3]
    content = cid("same")
    salts = {first: b"\x01" * 32, second: b"\x02" * 32, third: b"\x03" * 32}
    for trainer in (first, second, third):
        trainer.commit(run_id, 0, commitment_hash(content, salts[trainer], run_id, 0, trainer.account.address))
    to_reveal_period(chain, run_id, 0)
    pool = chain.sponsor.get_run(run_id).pool
    for trainer in (first, second, third):
        trainer.reveal(run_id, 0, content, salts[trainer])
    pairs = chain.sponsor.duplicates(run_id, 0)
    addr = [t.account.address for t in (first, second, third)]
    assert pairs == [(addr[0], addr[1], content), (addr[0], addr[2], content)]
    slash = ETH // 10  # slash_bps = 1000
    stakes = [chain.sponsor.trainer_info(run_id, a) for a in addr]
    assert [(i.stake, i.slash_count) for i in stakes] == [(ETH, 0), (ETH - slash, 1), (ETH - slash, 1)]
    assert chain.sponsor.get_run(run_id).pool == pool + 2 * slash
    assert len(chain.sponsor.reveals(run_id, 0)) == 3


@pytest.mark.parametrize("encoding", [e for e in encodings("x") if e != "v1-base32"])
def test_a_re_encoded_cid_is_a_duplicate(chain: Chain, run_id: int, encoding: str) -> None:
    """CIDv0 vs v1, another base or case, another codec: the same multihash is the same content."""
    honest, copier = chain.trainers[:2]
    original, copy = encodings("payload")["v1-base32"], encodings("payload")[encoding]
    honest.commit(run_id, 0, commitment_hash(original, salt_for("h"), run_id, 0, honest.account.address))
    copier.commit(run_id, 0, commitment_hash(copy, salt_for("c"), run_id, 0, copier.account.address))
    to_reveal_period(chain, run_id, 0)
    honest.reveal(run_id, 0, original, salt_for("h"))
    copier.reveal(run_id, 0, copy, salt_for("c"))
    assert chain.sponsor.duplicates(run_id, 0) == [(honest.account.address, copier.account.address, copy)]
    assert chain.sponsor.trainer_info(run_id, honest.account.address).stake == ETH
    assert chain.sponsor.trainer_info(run_id, copier.account.address).stake == ETH - ETH // 10


def test_same_cid_in_different_windows_is_not_a_duplicate(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    commit_cid(chain, trainer, run_id, 0, "cid")
    to_reveal_period(chain, run_id, 0)
    reveal_cid(trainer, run_id, 0, "cid")
    other = chain.trainers[1]
    commit_cid(chain, other, run_id, 1, "cid")
    to_reveal_period(chain, run_id, 1)
    reveal_cid(other, run_id, 1, "cid")
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
    reveal_cid(trainer, run_id, 0, "cid")
    chain.mine_to(trainer.window_bounds(run_id, 0).reveal_end)
    with reverts("AlreadyRevealed"):
        chain.trainers[5].report_missed_reveal(run_id, 0, trainer.account.address)


def test_reusing_a_ring_slot_counts_the_unrevealed_commitment(chain: Chain) -> None:
    rid = make_run(chain, miss_threshold=5)
    trainer = chain.trainers[0]
    trainer.register_trainer(rid, ETH)
    to_start(chain, rid)
    commit_cid(chain, trainer, rid, 0, "never-revealed")
    chain.mine_to(trainer.window_bounds(rid, 4).start)  # RING = 4: window 4 reuses window 0's slot
    commit_cid(chain, trainer, rid, 4, "w4")
    assert chain.sponsor.trainer_info(rid, trainer.account.address).misses == 1
    assert trainer.commitment_of(rid, 0, trainer.account.address)[1] is CommitStatus.NONE


def test_slashed_trainer_below_minimum_cannot_commit_until_topped_up(chain: Chain) -> None:
    rid = make_run(chain, miss_threshold=1)
    trainer = chain.trainers[0]
    trainer.register_trainer(rid, ETH)
    to_start(chain, rid)
    commit_cid(chain, trainer, rid, 0, "cid")
    chain.mine_to(trainer.window_bounds(rid, 0).reveal_end)
    chain.trainers[5].report_missed_reveal(rid, 0, trainer.account.address)
    window = trainer.current_window(rid)
    with reverts("StakeTooLow", stake=ETH - ETH // 10, required=ETH):
        commit_cid(chain, trainer, rid, window, "next")
    trainer.add_stake(rid, ETH // 10)
    commit_cid(chain, trainer, rid, window, "next")
