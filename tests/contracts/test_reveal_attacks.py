"""Attacks on commit–reveal: a copier who commits a trainer's commitment bytes and front-runs (or follows) its
reveal with the trainer's own (cid, salt), and replays of a reveal in another window, run or twice. A commitment
binds (cid, salt, run, window, trainer), so all of them fail and the honest trainer keeps its stake."""

from __future__ import annotations

from base.commitments import commitment_hash
from contracts.client import TrainingRunClient
from contracts.types import CommitStatus

from .cids import cid
from .conftest import ETH, Chain, make_run, reverts, salt_for, to_reveal_period

CID = cid("honest contribution")


def honest_commit(client: TrainingRunClient, run_id: int, window: int) -> bytes:
    commitment = commitment_hash(CID, salt_for(CID), run_id, window, client.account.address)
    client.commit(run_id, window, commitment)
    return commitment


def test_copied_commitment_cannot_front_run_or_follow_the_reveal(chain: Chain, run_id: int) -> None:
    honest, copier = chain.trainers[0], chain.trainers[1]
    commitment = honest_commit(honest, run_id, 0)
    copier.commit(run_id, 0, commitment)  # the bytes are public once the commit is mined; the copy is accepted
    to_reveal_period(chain, run_id, 0)
    # Front-run: the copier sends the honest trainer's (cid, salt), read from its pending reveal, first.
    with reverts("CommitmentMismatch", trainer=copier.account.address):
        copier.reveal(run_id, 0, CID, salt_for(CID))
    honest.reveal(run_id, 0, CID, salt_for(CID))
    with reverts("CommitmentMismatch"):  # following it does not work either
        copier.reveal(run_id, 0, CID, salt_for(CID))
    assert chain.sponsor.duplicates(run_id, 0) == []
    info = chain.sponsor.trainer_info(run_id, honest.account.address)
    assert (info.stake, info.slash_count) == (ETH, 0)
    assert [r.trainer for r in chain.sponsor.reveals(run_id, 0)] == [honest.account.address]
    # The copier is left with a commitment it can never open: a miss, not the honest trainer's loss.
    chain.mine_to(chain.sponsor.window_bounds(run_id, 0).reveal_end)
    chain.sponsor.report_missed_reveal(run_id, 0, copier.account.address)
    assert chain.sponsor.trainer_info(run_id, copier.account.address).misses == 1


def test_a_reveal_cannot_be_replayed_twice_or_in_another_window(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    commitment = honest_commit(trainer, run_id, 0)
    to_reveal_period(chain, run_id, 0)
    trainer.reveal(run_id, 0, CID, salt_for(CID))
    with reverts("AlreadyRevealed"):
        trainer.reveal(run_id, 0, CID, salt_for(CID))
    # Window 1 (open now): no commitment there → NoCommitment; the old commitment re-used there → mismatch.
    window = trainer.current_window(run_id)
    assert window == 1
    to_reveal_period(chain, run_id, window)
    with reverts("NoCommitment"):
        trainer.reveal(run_id, window, CID, salt_for(CID))
    trainer2 = chain.trainers[1]
    chain.mine_to(chain.sponsor.window_bounds(run_id, 2).start)
    trainer.commit(run_id, 2, commitment)
    trainer2.commit(run_id, 2, commitment)
    to_reveal_period(chain, run_id, 2)
    for client in (trainer, trainer2):
        with reverts("CommitmentMismatch", window=2):
            client.reveal(run_id, 2, CID, salt_for(CID))
    assert trainer.commitment_of(run_id, 2, trainer.account.address)[1] is CommitStatus.COMMITTED


def test_a_reveal_cannot_be_replayed_in_another_run(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    commitment = honest_commit(trainer, run_id, 0)
    other = make_run(chain, start_delay_blocks=0)
    trainer.register_trainer(other, ETH)
    trainer.commit(other, 0, commitment)  # same bytes, same window number, another run
    to_reveal_period(chain, run_id, 0)
    trainer.reveal(run_id, 0, CID, salt_for(CID))
    to_reveal_period(chain, other, 0)
    with reverts("CommitmentMismatch", runId=other):
        trainer.reveal(other, 0, CID, salt_for(CID))
    outsider = chain.trainers[4]  # not registered in the other run at all
    with reverts("NotTrainer"):
        outsider.reveal(other, 0, CID, salt_for(CID))
