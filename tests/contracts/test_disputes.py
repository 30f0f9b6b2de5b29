"""Optimistic disputes of ballots (`disputeBallot`): a validator's credit for an epoch is held until the next
epoch is settled; meanwhile the epoch's other voters may dispute its ballot (it does not follow from its own
revealed reports), and disputers holding more than half of the epoch's stake, the accused's included, forfeit
that credit to the pool. A minority, a non-voter or a second vote changes nothing."""

from __future__ import annotations

from .conftest import (
    ETH,
    Chain,
    finalize,
    make_run,
    publish_epoch,
    reverts,
    settle,
    to_epoch_end,
    to_start,
    vote,
)

VALIDATOR_SHARE = 2 * ETH  # reward_per_epoch 10 ETH, validator_share_bps 2000
BALLOT = [1, 1]


def setup(chain: Chain, validators: int = 3) -> int:
    rid = make_run(chain)
    for trainer in chain.trainers[:2]:
        trainer.register_trainer(rid, ETH)
    for validator in chain.validators[:validators]:
        validator.register_validator(rid, 2 * ETH)
    to_start(chain, rid)
    return rid


def held(chain: Chain, rid: int, who: int) -> int:
    return chain.sponsor.held_credit(rid, chain.validators[who].address_of_account).amount


def books(chain: Chain, rid: int) -> int:
    """Wei the contract holds beyond the pool, the members' stakes, what is claimable and what is held: always 0."""
    sponsor = chain.sponsor
    total = sponsor.get_run(rid).pool
    for t in chain.trainers[:2]:
        total += sponsor.trainer_info(rid, t.address_of_account).stake + sponsor.claimable(rid, t.address_of_account)
    for v in chain.validators:
        address = v.address_of_account
        total += sponsor.validator_info(rid, address).bond + sponsor.claimable(rid, address)
        credit = sponsor.held_credit(rid, address)
        total += credit.amount if credit.disputable else 0
    return int(chain.web3.eth.get_balance(chain.deployment.address)) - total


def test_credit_is_held_until_the_next_epoch_is_settled(chain: Chain) -> None:
    rid = setup(chain)
    a, b, c = chain.validators[:3]
    settle(chain, rid, 0, {a: BALLOT, b: BALLOT, c: BALLOT})
    credit = chain.sponsor.held_credit(rid, a.address_of_account)
    assert credit.epoch == 0 and credit.disputable and not credit.forfeited
    assert credit.amount == VALIDATOR_SHARE // 3
    assert chain.sponsor.claimable(rid, a.address_of_account) == 0
    with reverts("NothingToClaim"):
        a.claim(rid)
    assert books(chain, rid) == 0
    settle(chain, rid, 1, {a: BALLOT, b: BALLOT, c: BALLOT})
    assert chain.sponsor.claimable(rid, a.address_of_account) == VALIDATOR_SHARE // 3  # epoch 0's, released
    assert chain.sponsor.held_credit(rid, a.address_of_account).epoch == 1
    assert a.claim(rid) == VALIDATOR_SHARE // 3
    with reverts("NotDisputer", epoch=0):  # epoch 0's dispute period closed when epoch 1 was settled
        a.dispute_ballot(rid, 0, c.address_of_account)
    assert books(chain, rid) == 0


def test_a_stake_majority_of_disputers_forfeits_the_credit(chain: Chain) -> None:
    rid = setup(chain)
    a, b, c = chain.validators[:3]
    settle(chain, rid, 0, {a: BALLOT, b: BALLOT, c: BALLOT})
    accused = c.address_of_account
    share = held(chain, rid, 2)
    pool = chain.sponsor.get_run(rid).pool
    receipt = a.dispute_ballot(rid, 0, accused)
    (event,) = chain.sponsor.contract.events.BallotDisputed().process_receipt(receipt)
    assert dict(event["args"]) == {"runId": rid, "epoch": 0, "accused": accused, "disputer": a.address_of_account,
                                   "stake": 2 * ETH, "epochStake": 6 * ETH}
    assert held(chain, rid, 2) == share and chain.sponsor.get_run(rid).pool == pool  # a third: no majority
    receipt = b.dispute_ballot(rid, 0, accused)
    (forfeit,) = chain.sponsor.contract.events.ValidatorCreditForfeited().process_receipt(receipt)
    assert dict(forfeit["args"]) == {"runId": rid, "epoch": 0, "validator": accused, "amount": share}
    credit = chain.sponsor.held_credit(rid, accused)
    assert credit.amount == 0 and credit.forfeited and credit.epoch == 0
    assert chain.sponsor.get_run(rid).pool == pool + share
    assert chain.sponsor.dispute_of(rid, 0, accused, b.address_of_account) == (4 * ETH, True)
    assert books(chain, rid) == 0
    with reverts("CreditForfeited", epoch=0, accused=accused):  # nothing more to take
        a.dispute_ballot(rid, 0, accused)
    # The accused still votes and is paid for the next epoch; the disputers' own credit is untouched.
    settle(chain, rid, 1, {a: BALLOT, b: BALLOT, c: BALLOT})
    assert chain.sponsor.claimable(rid, accused) == 0
    assert chain.sponsor.claimable(rid, a.address_of_account) == VALIDATOR_SHARE // 3
    assert held(chain, rid, 2) == VALIDATOR_SHARE // 3
    settle(chain, rid, 2, {a: BALLOT, b: BALLOT, c: BALLOT})
    assert c.claim(rid) == VALIDATOR_SHARE // 3  # epoch 1's credit only
    assert books(chain, rid) == 0


def test_a_minority_dispute_changes_nothing(chain: Chain) -> None:
    rid = setup(chain)
    a, b, c = chain.validators[:3]
    settle(chain, rid, 0, {a: BALLOT, b: BALLOT, c: BALLOT})
    share = held(chain, rid, 0)
    a.dispute_ballot(rid, 0, b.address_of_account)
    a.dispute_ballot(rid, 0, c.address_of_account)  # one disputer may dispute several ballots
    settle(chain, rid, 1, {a: BALLOT, b: BALLOT, c: BALLOT})
    for v in (a, b, c):
        assert v.claim(rid) == share
    assert books(chain, rid) == 0


def test_neither_of_two_validators_can_remove_the_other(chain: Chain) -> None:
    rid = setup(chain, validators=2)
    a, b = chain.validators[:2]
    settle(chain, rid, 0, {a: BALLOT, b: BALLOT})
    receipt = a.dispute_ballot(rid, 0, b.address_of_account)  # half of the stake is not more than half
    assert not chain.sponsor.contract.events.ValidatorCreditForfeited().process_receipt(receipt)
    b.dispute_ballot(rid, 0, a.address_of_account)
    assert held(chain, rid, 0) == held(chain, rid, 1) == VALIDATOR_SHARE // 2


def test_no_double_vote_and_no_self_dispute(chain: Chain) -> None:
    rid = setup(chain)
    a, b, c = chain.validators[:3]
    settle(chain, rid, 0, {a: BALLOT, b: BALLOT, c: BALLOT})
    a.dispute_ballot(rid, 0, c.address_of_account)
    with reverts("AlreadyDisputed", accused=c.address_of_account, disputer=a.address_of_account):
        a.dispute_ballot(rid, 0, c.address_of_account)
    with reverts("AlreadyDisputed", accused=a.address_of_account, disputer=a.address_of_account):
        a.dispute_ballot(rid, 0, a.address_of_account)
    assert chain.sponsor.dispute_of(rid, 0, c.address_of_account, a.address_of_account) == (2 * ETH, True)
    assert held(chain, rid, 2) == VALIDATOR_SHARE // 3


def test_only_the_epochs_voters_dispute_and_only_ballots_with_held_credit(chain: Chain) -> None:
    rid = setup(chain)
    a, b, c = chain.validators[:3]
    publish_epoch(chain, rid, 0, [a, b, c])
    to_epoch_end(chain, rid, 0)
    vote(chain, rid, 0, {a: BALLOT, b: BALLOT})  # c published but never voted
    finalize(chain, rid, 0, after_deadline=True)
    with reverts("NotDisputer", epoch=0, disputer=c.address_of_account):  # a registered validator, not a voter
        c.dispute_ballot(rid, 0, a.address_of_account)
    trainer = chain.trainers[0]
    with reverts("NotDisputer", disputer=trainer.address_of_account):
        trainer.dispute_ballot(rid, 0, a.address_of_account)
    with reverts("NotDisputer", epoch=1):  # an epoch it did not vote on (not even settled)
        a.dispute_ballot(rid, 1, b.address_of_account)
    with reverts("NothingToDispute", epoch=0, accused=c.address_of_account):  # no ballot: nothing held
        a.dispute_ballot(rid, 0, c.address_of_account)
    # a and b hold 4 of the 6 ETH that vote on epoch 0: together they can forfeit each other's, not alone
    a.dispute_ballot(rid, 0, b.address_of_account)
    assert not chain.sponsor.held_credit(rid, b.address_of_account).forfeited


def test_a_validator_cannot_leave_with_credit_in_dispute(chain: Chain) -> None:
    rid = setup(chain)
    a, b, c = chain.validators[:3]
    c.request_unstake(rid)  # leaves after epoch 0: it votes on epoch 0 only
    settle(chain, rid, 0, {a: BALLOT, b: BALLOT, c: BALLOT})
    chain.node.mine(chain.sponsor.get_run(rid).unbonding_blocks)
    with reverts("CreditHeld", account=c.address_of_account, epoch=0):
        c.withdraw_stake(rid)
    a.dispute_ballot(rid, 0, c.address_of_account)
    b.dispute_ballot(rid, 0, c.address_of_account)
    to_epoch_end(chain, rid, 1)
    finalize(chain, rid, 1, after_deadline=True)  # (unbonding outlasted epoch 1's ballots: settled unvoted)
    before = chain.balance(c)
    c.withdraw_stake(rid)  # its bond, without the forfeited credit
    assert chain.balance(c) - before == 2 * ETH - gas_of_last(chain, c)
    assert books(chain, rid) == 0


def gas_of_last(chain: Chain, client: object) -> int:
    block = chain.web3.eth.get_block("latest", full_transactions=True)
    tx = block["transactions"][-1]
    receipt = chain.web3.eth.get_transaction_receipt(tx["hash"])
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def test_the_last_epoch_of_an_ended_run_is_released_an_epoch_after_its_settlement(chain: Chain) -> None:
    rid = setup(chain)
    a, b, c = chain.validators[:3]
    chain.sponsor.end_run(rid)  # during epoch 0: epoch 0 is the last one
    settle(chain, rid, 0, {a: BALLOT, b: BALLOT, c: BALLOT})
    assert chain.sponsor.held_credit(rid, a.address_of_account).disputable
    a.dispute_ballot(rid, 0, c.address_of_account)
    b.dispute_ballot(rid, 0, c.address_of_account)
    run = chain.sponsor.get_run(rid)
    chain.node.mine(run.window_blocks * run.windows_per_epoch)
    assert not chain.sponsor.held_credit(rid, a.address_of_account).disputable
    assert a.claim(rid) == VALIDATOR_SHARE // 3
    assert chain.sponsor.claimable(rid, c.address_of_account) == 0
    pool = chain.sponsor.get_run(rid).pool
    assert chain.sponsor.reclaim(rid) == pool  # the forfeited credit went back to the sponsor with the pool
    assert books(chain, rid) == 0
