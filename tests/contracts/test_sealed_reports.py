"""Sealed evaluation reports: a validator publishes keccak256(abi.encode(reportCid, validator)) per window and
reveals the CIDs (`revealReports`) only once the epoch's weight commits are closed, so no validator can rebuild
its ballot from another's reports; the validator share of an epoch pays only those that revealed theirs."""

from __future__ import annotations

from base.commitments import report_commitment

from .cids import cid
from .conftest import (
    ETH,
    POOL,
    Chain,
    finalize,
    make_run,
    publish_epoch,
    report_cid,
    reveal_reports,
    reverts,
    to_epoch_end,
    vote,
    weight_salt,
)

VALIDATOR_SHARE = 2 * ETH  # reward_per_epoch 10 ETH, validator_share_bps 2000


def setup(chain: Chain, validators: int = 2) -> int:
    rid = make_run(chain)
    for trainer in chain.trainers[:2]:
        trainer.register_trainer(rid, ETH)
    for validator in chain.validators[:validators]:
        validator.register_validator(rid, 2 * ETH)
    return rid


def reports_of(chain: Chain, rid: int, epoch: int, validator_index: int) -> list[str]:
    return [report_cid(w, chain.validators[validator_index]) for w in (2 * epoch, 2 * epoch + 1)]


def test_reports_stay_sealed_until_the_weight_commits_close(chain: Chain) -> None:
    rid = setup(chain)
    a, b = chain.validators[:2]
    publish_epoch(chain, rid, 0, [a, b])
    pub = a.publications(rid, 0)[a.address_of_account]
    assert pub.report_cid is None and pub.report_commitment == report_commitment(report_cid(0, a), a.address_of_account)
    to_epoch_end(chain, rid, 0)
    state = chain.sponsor.settlement_of(rid, 0)
    with reverts("ReportsSealed", epoch=0, opensAt=state.reveals_from):  # commit phase open, nothing committed
        a.reveal_reports(rid, 0, reports_of(chain, rid, 0, 0))
    a.commit_weights(rid, 0, [1, 1], weight_salt(a, 0))
    with reverts("ReportsSealed", epoch=0, opensAt=state.reveals_from):  # b may still commit
        a.reveal_reports(rid, 0, reports_of(chain, rid, 0, 0))
    with reverts("ReportsSealed", epoch=1):  # a later epoch: not even its settlement is open
        a.reveal_reports(rid, 1, reports_of(chain, rid, 1, 0))
    b.commit_weights(rid, 0, [1, 1], weight_salt(b, 0))
    reveal_reports(chain, rid, 0, a)  # every vote is committed: nothing is left to copy
    assert a.reports_revealed(rid, a.address_of_account, 0)
    assert not a.reports_revealed(rid, b.address_of_account, 0)
    assert [a.publications(rid, w)[a.address_of_account].report_cid for w in (0, 1)] == reports_of(chain, rid, 0, 0)
    assert a.publications(rid, 0)[b.address_of_account].report_cid is None


def test_the_commit_phase_closing_opens_the_reveal_without_every_vote(chain: Chain) -> None:
    rid = setup(chain)
    a, b = chain.validators[:2]
    publish_epoch(chain, rid, 0, [a, b])
    to_epoch_end(chain, rid, 0)
    a.commit_weights(rid, 0, [1, 1], weight_salt(a, 0))
    state = chain.sponsor.settlement_of(rid, 0)
    chain.mine_to(state.reveals_from - 1)
    with reverts("ReportsSealed", opensAt=state.reveals_from):
        a.reveal_reports(rid, 0, reports_of(chain, rid, 0, 0))
    chain.mine_to(state.reveals_from)
    reveal_reports(chain, rid, 0, a)
    reveal_reports(chain, rid, 0, b)  # b did not vote; its reports can still be revealed (it earns nothing)


def test_a_reveal_must_match_its_own_commitments(chain: Chain) -> None:
    rid = setup(chain)
    a, b = chain.validators[:2]
    publish_epoch(chain, rid, 0, [a, b])
    to_epoch_end(chain, rid, 0)
    vote(chain, rid, 0, {a: [1, 1], b: [1, 1]}, reveal=False)
    mine = reports_of(chain, rid, 0, 0)
    with reverts("WrongReportCount", given=1, expected=2):
        a.reveal_reports(rid, 0, mine[:1])
    with reverts("ReportsMismatch", validator=a.address_of_account):
        a.reveal_reports(rid, 0, [mine[0], cid("another report")])
    with reverts("ReportsMismatch"):
        a.reveal_reports(rid, 0, mine[::-1])  # window order
    with reverts("ReportsMismatch", validator=b.address_of_account):  # a's CIDs are not b's to reveal
        b.reveal_reports(rid, 0, mine)
    with reverts("NoReportCommitments", validator=chain.validators[2].address_of_account):
        chain.validators[2].reveal_reports(rid, 0, mine)
    with reverts("InvalidCid", length=0):
        a.reveal_reports(rid, 0, [mine[0], ""])
    a.reveal_reports(rid, 0, mine)
    with reverts("ReportsAlreadyRevealed"):
        a.reveal_reports(rid, 0, mine)


def test_a_copied_commitment_is_bound_to_its_publisher(chain: Chain) -> None:
    """A copier republishes the honest validator's model and report commitment for every window: once the reports
    are revealed it cannot open that commitment (it names the honest validator), so it earns no share."""
    rid = setup(chain)
    honest, copier = chain.validators[:2]
    publish_epoch(chain, rid, 0, [honest])
    for window in (0, 1):
        pub = honest.publications(rid, window)[honest.address_of_account]
        copier._tx(copier.contract.functions.publishWindow(rid, window, pub.model_cid, pub.report_commitment),
                   "publishWindow")
    to_epoch_end(chain, rid, 0)
    vote(chain, rid, 0, {honest: [1, 1], copier: [1, 1]}, reveal=False)
    reveal_reports(chain, rid, 0, honest)
    copied = [honest.publications(rid, w)[honest.address_of_account].report_cid or "" for w in (0, 1)]
    with reverts("ReportsMismatch", validator=copier.address_of_account):
        copier.reveal_reports(rid, 0, copied)
    for client in (honest, copier):
        client.reveal_weights(rid, 0, [1, 1], weight_salt(client, 0))
    finalize(chain, rid, 0)
    assert chain.sponsor.claimable(rid, copier.address_of_account) == 0
    assert chain.sponsor.claimable(rid, honest.address_of_account) == VALIDATOR_SHARE // 2


def test_only_validators_that_revealed_their_reports_are_paid(chain: Chain) -> None:
    rid = setup(chain, validators=3)
    revealed, unrevealed, late = chain.validators[:3]
    publish_epoch(chain, rid, 0, [revealed, unrevealed, late])
    to_epoch_end(chain, rid, 0)
    ballots = {revealed: [1, 1], unrevealed: [1, 1], late: [1, 1]}
    vote(chain, rid, 0, ballots, reveal=False)
    reveal_reports(chain, rid, 0, revealed)
    for client in ballots:
        client.reveal_weights(rid, 0, [1, 1], weight_salt(client, 0))
    finalize(chain, rid, 0)  # every commit revealed: finalised early, before `late` revealed its reports
    pay = [chain.sponsor.claimable(rid, v.address_of_account) for v in (revealed, unrevealed, late)]
    assert pay == [VALIDATOR_SHARE // 3, 0, 0]  # equal stakes, full agreement: a third each, two thirds withheld
    trainers = sum(chain.sponsor.claimable(rid, t.address_of_account) for t in chain.trainers[:2])
    assert chain.sponsor.get_run(rid).pool == POOL - trainers - VALIDATOR_SHARE // 3  # the rest stays in the pool
    reveal_reports(chain, rid, 0, late)  # after settlement: allowed (audits read them), paid nothing
    assert chain.sponsor.claimable(rid, late.address_of_account) == 0
    assert chain.sponsor.reports_revealed(rid, late.address_of_account, 0)


def test_every_vote_in_opens_the_reveal_whatever_the_grace_period(chain: Chain) -> None:
    """A grace period longer than the run so far: with every vote committed the reveal opens at once (the opening
    block is computed without subtracting the grace period from an earlier block)."""
    rid = make_run(chain, grace_period_blocks=10_000, unbonding_blocks=2 * 10 + 5 + 2 * 10_000)
    chain.trainers[0].register_trainer(rid, ETH)
    a = chain.validators[0]
    a.register_validator(rid, 2 * ETH)
    publish_epoch(chain, rid, 0, [a])
    to_epoch_end(chain, rid, 0)
    a.commit_weights(rid, 0, [1], weight_salt(a, 0))
    reveal_reports(chain, rid, 0, a)
    assert a.reports_revealed(rid, a.address_of_account, 0)
