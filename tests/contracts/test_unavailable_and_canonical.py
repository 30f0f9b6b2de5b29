"""Two rules over validators' snapshotted stake: a payload that validators holding more than half of the epoch's
stake could not fetch is a miss for its trainer (counted and slashed like a missing reveal), and a window's
canonical model is the one published on time by the most of that stake."""

from __future__ import annotations

from base.units import ETH
from contracts.types import CommitStatus

from .cids import cid, encodings
from .conftest import Chain, commit_cid, make_run, reveal_cid, reverts, to_reveal_period, to_start


def three_validator_run(chain: Chain, stakes: tuple[int, int, int] = (2, 2, 2), **overrides: int) -> int:
    rid = make_run(chain, **overrides)
    for trainer in chain.trainers[:3]:
        trainer.register_trainer(rid, ETH)
    for validator, stake in zip(chain.validators, stakes, strict=True):
        validator.register_validator(rid, stake * ETH)
    to_start(chain, rid)
    return rid


def revealed_window(chain: Chain, rid: int) -> None:
    """Trainers 0 and 1 commit and reveal in window 0; the chain is left after its reveal period."""
    for i, trainer in enumerate(chain.trainers[:2]):
        commit_cid(chain, trainer, rid, 0, f"payload-{i}")
    to_reveal_period(chain, rid, 0)
    for i, trainer in enumerate(chain.trainers[:2]):
        reveal_cid(trainer, rid, 0, f"payload-{i}")
    chain.mine_to(chain.sponsor.window_bounds(rid, 0).reveal_end)


def test_a_payload_a_stake_majority_could_not_fetch_is_a_miss(chain: Chain) -> None:
    rid = three_validator_run(chain, miss_threshold=1)
    revealed_window(chain, rid)
    trainer = chain.trainers[0].account.address
    a, b, c = chain.validators[:3]
    pool = chain.sponsor.get_run(rid).pool
    a.report_unavailable(rid, 0, trainer)
    assert chain.sponsor.unavailable_stake(rid, 0, trainer) == 2 * ETH
    assert chain.sponsor.commitment_of(rid, 0, trainer)[1] == CommitStatus.REVEALED  # one third is no quorum
    with reverts("AlreadyReported"):
        a.report_unavailable(rid, 0, trainer)
    b.report_unavailable(rid, 0, trainer)  # two thirds of the epoch's stake
    assert chain.sponsor.commitment_of(rid, 0, trainer)[1] == CommitStatus.MISSED
    info = chain.sponsor.trainer_info(rid, trainer)
    assert (info.stake, info.slash_count) == (ETH - ETH // 10, 1)  # miss_threshold 1: slashed like a missed reveal
    assert chain.sponsor.get_run(rid).pool == pool + ETH // 10
    with reverts("NotRevealed"):  # decided: a late third report changes nothing
        c.report_unavailable(rid, 0, trainer)
    other = chain.trainers[1].account.address
    assert chain.sponsor.commitment_of(rid, 0, other)[1] == CommitStatus.REVEALED


def test_half_of_the_stake_is_not_a_quorum(chain: Chain) -> None:
    rid = three_validator_run(chain, stakes=(2, 2, 4))
    revealed_window(chain, rid)
    trainer = chain.trainers[0].account.address
    chain.validators[0].report_unavailable(rid, 0, trainer)
    chain.validators[1].report_unavailable(rid, 0, trainer)  # 4 of 8 ETH: exactly half
    assert chain.sponsor.commitment_of(rid, 0, trainer)[1] == CommitStatus.REVEALED
    assert chain.sponsor.trainer_info(rid, trainer).misses == 0


def test_only_validators_that_vote_on_the_epoch_report(chain: Chain) -> None:
    rid = three_validator_run(chain)
    late = chain.trainers[5]
    late.register_validator(rid, 100 * ETH)  # after epoch 0 began: no say on it
    revealed_window(chain, rid)
    trainer = chain.trainers[0].account.address
    with reverts("NotEligible", epoch=0):
        late.report_unavailable(rid, 0, trainer)
    with reverts("NotEligible"):
        chain.trainers[1].report_unavailable(rid, 0, trainer)
    with reverts("NoCommitment"):  # trainer 2 committed nothing
        chain.validators[0].report_unavailable(rid, 0, chain.trainers[2].account.address)
    with reverts("RevealPeriodNotOver"):
        chain.validators[0].report_unavailable(rid, 1, trainer)


def test_an_unrevealed_commitment_is_reported_missed_not_unavailable(chain: Chain) -> None:
    rid = three_validator_run(chain)
    trainer = chain.trainers[0]
    commit_cid(chain, trainer, rid, 0, "never revealed")
    chain.mine_to(chain.sponsor.window_bounds(rid, 0).reveal_end)
    with reverts("NotRevealed"):
        chain.validators[0].report_unavailable(rid, 0, trainer.account.address)


def publish(chain: Chain, rid: int, window: int, models: dict[int, str]) -> None:
    """Validator i publishes models[i] for `window` (a report CID of its own)."""
    for i, model in models.items():
        chain.validators[i].publish_window(rid, window, model, cid(f"report-{window}-{i}"))


def test_the_canonical_model_is_the_stake_plurality_of_on_time_publications(chain: Chain) -> None:
    rid = three_validator_run(chain, stakes=(2, 3, 4))
    chain.mine_to(chain.sponsor.window_bounds(rid, 0).reveal_end)
    x, y = cid("model-x"), cid("model-y")
    assert chain.sponsor.canonical_model(rid, 0).cid is None
    publish(chain, rid, 0, {0: x})
    got = chain.sponsor.canonical_model(rid, 0)
    assert (got.cid, got.stake, got.epoch_stake, got.majority, got.final) == (x, 2 * ETH, 9 * ETH, False, False)
    publish(chain, rid, 0, {1: y})  # 3 > 2: y leads
    assert chain.sponsor.canonical_model(rid, 0).cid == y
    publish(chain, rid, 0, {2: encodings("model-x")["v1-base58"]})  # the same model as x, spelt otherwise: 6 > 3
    got = chain.sponsor.canonical_model(rid, 0)
    assert (got.stake, got.majority) == (6 * ETH, True)
    assert got.cid == encodings("model-x")["v1-base58"]  # the publication that made it lead
    chain.mine_to(got.deadline)
    assert chain.sponsor.canonical_model(rid, 0).final


def test_a_tie_stays_with_the_first_and_late_or_unbonded_publications_do_not_count(chain: Chain) -> None:
    rid = three_validator_run(chain, stakes=(2, 2, 4))
    late = chain.trainers[5]
    late.register_validator(rid, 100 * ETH)  # votes from epoch 1 on: its publication of window 0 counts 0
    bounds = chain.sponsor.window_bounds(rid, 0)
    chain.mine_to(bounds.reveal_end)
    x, y, z = cid("x"), cid("y"), cid("z")
    publish(chain, rid, 0, {0: x, 1: y})  # 2 = 2: x stays
    late.publish_window(rid, 0, y, cid("late report"))
    assert chain.sponsor.canonical_model(rid, 0).cid == x
    deadline = chain.sponsor.canonical_model(rid, 0).deadline
    assert deadline == bounds.reveal_end + 10  # publish_blocks
    chain.mine_to(deadline)
    publish(chain, rid, 0, {2: z})  # after the deadline: it counts for the validator's reports, not the model
    got = chain.sponsor.canonical_model(rid, 0)
    assert (got.cid, got.stake, got.final) == (x, 2 * ETH, True)
