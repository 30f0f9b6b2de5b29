"""The attacks of the contract audit, each written as the attack, on a real Anvil: an outsider who churns fresh
validator identities through one epoch, flash stake that joins after an epoch to buy its consensus and leaves,
validators holding half the *count* of validators who finalise alone, squatters that fill every validator seat
and never vote, honest trainer churn that fills every trainer slot, a trainer that unbonds before its reveal
deadline, a validator that copies the others' weights, and the most expensive finalisation the contract
accepts. These attacks succeeded against the contract before this hardening (commit 3aff143: run once with
helpers that vote through its submitWeights) and fails now.

Only the helpers of conftest (make_run, publish_epoch, vote, settle, finalize) know how a vote is cast, so an
attack reads the same against either contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from contracts.client import TrainingRunClient
from contracts.errors import ContractReverted, TransactionFailed
from contracts.sending import broadcast_all

from .conftest import (
    ETH,
    Chain,
    commit_cid,
    credited,
    finalize,
    make_run,
    publish_epoch,
    reverts,
    settle,
    settle_unvoted,
    to_epoch_end,
    to_start,
    vote,
)

FINALIZE_GAS_CAP = 15_000_000  # what one transaction may use (mainnet's per-transaction cap is 16.78M)


def fresh(chain: Chain, label: str, count: int, eth: int = 1000) -> list[TrainingRunClient]:
    """Funded accounts nobody else uses: an attacker's throwaway identities."""
    accounts: list[LocalAccount] = [Account.from_key(keccak(text=f"{label}-{i}")) for i in range(count)]
    for account in accounts:
        chain.node.set_balance(account.address, eth * ETH)
    return [chain.sponsor.with_account(a) for a in accounts]


def attempt(action: Callable[[], Any]) -> bool:
    """Run one step of an attack; False if the contract refused it."""
    try:
        action()
    except (ContractReverted, TransactionFailed):
        return False
    return True


def register_trainers(chain: Chain, rid: int, clients: list[TrainingRunClient], stake: int = ETH) -> None:
    """Many registrations of fresh accounts (nonce 0), signed locally and mined together."""
    data = chain.sponsor.contract.functions.registerTrainer(rid)._encode_transaction_data()
    common = {"to": chain.sponsor.contract.address, "data": data, "value": stake, "gas": 400_000, "nonce": 0,
              "gasPrice": chain.web3.eth.gas_price, "chainId": chain.web3.eth.chain_id}
    for start in range(0, len(clients), 128):
        raws = [c.account.sign_transaction(common).raw_transaction for c in clients[start:start + 128]]
        chain.node.set_automine(False)
        try:
            hashes = broadcast_all(chain.web3, raws)
        finally:
            chain.node.set_automine(True)
        for _ in range(len(hashes)):  # as many blocks as the block gas limit needs
            chain.node.mine(1)
            if chain.web3.eth.get_transaction_count(clients[start + len(hashes) - 1].account.address) == 1:
                break
        assert all(chain.web3.eth.get_transaction_receipt(h)["status"] == 1 for h in hashes)


def consensus(chain: Chain, rid: int, epoch: int, trainers: int) -> list[int]:
    return [chain.sponsor.consensus_weight(rid, epoch, i) for i in range(trainers)]


# ------------------------------------------------------------------ churned submitters


def test_churned_validator_identities_cannot_vote_or_grow_finalisation(chain: Chain) -> None:
    """Attack: with fresh addresses in a loop, register as a validator at the minimum stake, submit a vector for the
    epoch being settled, ask to leave and withdraw; every address adds a submission the finalisation must chew
    through (measured before: 28M gas with 25 of them at 2,048 trainers). Now an identity that bonded after the
    epoch began has no vote on it, so the epoch's ballots and its finalisation cost stay the honest ones."""
    rid = make_run(chain)
    honest = chain.validators[:3]
    for trainer in chain.trainers[:6]:
        trainer.register_trainer(rid, ETH)
    for v in honest:
        v.register_validator(rid, 2 * ETH)
    weights = [1, 2, 3, 4, 5, 6]
    settle(chain, rid, 0, {v: weights for v in honest})
    baseline = chain.sponsor.epoch_info(rid, 0)

    publish_epoch(chain, rid, 1, honest)
    to_epoch_end(chain, rid, 1)
    vote(chain, rid, 1, {v: weights for v in honest})
    votes = 0
    for churner in fresh(chain, "churn", 20):
        churner.register_validator(rid, 2 * ETH)
        publish_epoch(chain, rid, 1, [churner])
        votes += attempt(lambda c=churner: vote(chain, rid, 1, {c: [0] * 6}))
        attempt(lambda c=churner: c.request_unstake(rid))
        chain.node.mine(chain.sponsor.get_run(rid).unbonding_blocks)
        attempt(lambda c=churner: c.withdraw_stake(rid))
    finalize(chain, rid, 1, after_deadline=True)
    assert votes == 0
    assert chain.sponsor.epoch_info(rid, 1).submissions == baseline.submissions == 3
    assert consensus(chain, rid, 1, 6) == consensus(chain, rid, 0, 6)


# ------------------------------------------------------------------ flash stake


def test_flash_stake_cannot_buy_the_consensus(chain: Chain) -> None:
    """Attack: three honest validators hold 2 ETH each. After the epoch ends, a newcomer bonds 100 ETH, votes
    [65535, 0, 0, …], asks to leave and withdraws before the epoch is finalised (measured before: the consensus
    became its vector and it took 99.99% of the validator reward). Now it has no vote on an epoch that began
    before it bonded, and cannot withdraw until the epochs it votes on are settled."""
    rid = make_run(chain)
    honest = chain.validators[:3]
    for trainer in chain.trainers[:4]:
        trainer.register_trainer(rid, ETH)
    for v in honest:
        v.register_validator(rid, 2 * ETH)
    publish_epoch(chain, rid, 0, honest)
    to_epoch_end(chain, rid, 0)
    vote(chain, rid, 0, {v: [1, 1, 1, 1] for v in honest})
    whale = fresh(chain, "whale", 1)[0]
    whale.register_validator(rid, 100 * ETH)
    publish_epoch(chain, rid, 0, [whale])
    attempt(lambda: vote(chain, rid, 0, {whale: [65535, 0, 0, 0]}))
    attempt(lambda: whale.request_unstake(rid))
    chain.node.mine(chain.sponsor.get_run(rid).unbonding_blocks)
    attempt(lambda: whale.withdraw_stake(rid))
    finalize(chain, rid, 0, after_deadline=True)

    assert consensus(chain, rid, 0, 4) == [65535] * 4  # the honest vote, untouched
    assert chain.sponsor.claimable(rid, whale.account.address) == 0


# ------------------------------------------------------------------ half-count quorum and zero grace


def test_half_the_validator_count_cannot_finalise_alone(chain: Chain) -> None:
    """Attack: two small validators of four (2 ETH against 5 ETH each) vote, then ask to leave so that the
    active count drops to two, and finalise at once, before the others vote (before: the count of submissions
    reached the shrunken count). Now the quorum is stake snapshotted when the epoch began, ballots close only
    when every vote is in or the phases are over, and the two honest votes decide."""
    rid = make_run(chain)
    attackers, honest = chain.validators[:2], [chain.trainers[4], chain.trainers[5]]
    for trainer in chain.trainers[:3]:
        trainer.register_trainer(rid, ETH)
    for v in attackers:
        v.register_validator(rid, 2 * ETH)
    for v in honest:
        v.register_validator(rid, 5 * ETH)
    publish_epoch(chain, rid, 0, attackers + honest)
    to_epoch_end(chain, rid, 0)
    attempt(lambda: vote(chain, rid, 0, {v: [1, 0, 0] for v in attackers}, reveal=False))
    for v in attackers:
        v.request_unstake(rid)
    finalised_alone = attempt(lambda: chain.sponsor.finalize_epoch(rid, 0))
    if not finalised_alone:
        vote(chain, rid, 0, {v: [1, 1, 1] for v in honest})
        finalize(chain, rid, 0, after_deadline=True)
    assert not finalised_alone
    assert consensus(chain, rid, 0, 3) == [65535] * 3


def test_a_run_with_zero_grace_is_refused(chain: Chain) -> None:
    """Attack: with gracePeriodBlocks = 0, anyone could finalise an epoch with no submissions in the very block
    its settlement opens, and the trainers got nothing. Such a run can no longer be created."""
    with pytest.raises(ContractReverted) as info:
        make_run(chain, grace_period_blocks=0)
    assert info.value.error_name == "InvalidRunParams"


# ------------------------------------------------------------------ squatting


def test_squatting_validators_are_ejected_and_an_honest_one_takes_a_seat(chain: Chain) -> None:
    """Attack: 16 identities at the minimum stake take every validator seat before the run starts and never vote:
    honest validators are locked out and no epoch ever pays (before: for good). Now a validator that served none
    of the last `missThreshold` settled epochs it could vote on is ejected by anyone, loses part of its bond,
    and its seat is free."""
    rid = make_run(chain)
    for trainer in chain.trainers[:3]:
        trainer.register_trainer(rid, ETH)
    squatters = fresh(chain, "squatter", 16)
    for s in squatters:
        s.register_validator(rid, 2 * ETH)
    honest = chain.validators[0]
    assert not attempt(lambda: honest.register_validator(rid, 2 * ETH))  # RunFull
    to_start(chain, rid)
    settle_unvoted(chain, rid, chain.sponsor.get_run(rid).miss_threshold)  # epochs pass, nobody votes
    for s in squatters:
        attempt(lambda s=s: chain.trainers[5].eject_validator(rid, s.account.address))
    honest.register_validator(rid, 2 * ETH)
    epoch = chain.sponsor.validator_info(rid, honest.account.address).from_epoch
    settle_unvoted(chain, rid, epoch)
    settle(chain, rid, epoch, {honest: [1, 1, 1]})
    assert chain.sponsor.claimable(rid, chain.trainers[0].account.address) > 0
    squatter = chain.sponsor.validator_info(rid, squatters[0].account.address)
    assert squatter.bond < squatter.stake  # slashed on the way out


# ------------------------------------------------------------------ trainer slots


def test_honest_trainer_churn_does_not_fill_the_run(chain: Chain) -> None:
    """Attack (by honest churn alone): every trainer slot is taken once, trainers leave, and nobody new can join
    because slots were never given back. Now a trainer that withdrew frees its slot for the next one."""
    rid = make_run(chain, max_trainers=4)
    limit = getattr(chain.sponsor.get_run(rid), "max_trainers", None) or int(
        chain.sponsor.contract.functions.MAX_TRAINERS().call())  # a contract without per-run slots: its cap
    register_trainers(chain, rid, fresh(chain, "fill", limit))
    leaver = chain.sponsor.with_account(Account.from_key(keccak(text="fill-0")))
    leaver.request_unstake(rid)
    chain.node.mine(chain.sponsor.get_run(rid).unbonding_blocks)
    leaver.withdraw_stake(rid)
    newcomer = fresh(chain, "newcomer", 1)[0]
    assert attempt(lambda: newcomer.register_trainer(rid, ETH))


# ------------------------------------------------------------------ unbonding before the reveal deadline


def test_a_trainer_cannot_unbond_before_its_reveal_deadline(chain: Chain) -> None:
    """Attack: commit, ask to leave, and withdraw before the reveal deadline, so the missed reveal has no stake
    left to slash. Runs whose unbonding is shorter than an epoch plus its settlement are refused, and in a valid
    run the stake is still there when the miss is reported."""
    assert not attempt(lambda: make_run(chain, unbonding_blocks=1))
    rid = make_run(chain, miss_threshold=1)
    trainer = chain.trainers[0]
    trainer.register_trainer(rid, ETH)
    to_start(chain, rid)
    commit_cid(chain, trainer, rid, 0, "never revealed")
    trainer.request_unstake(rid)
    reveal_end = chain.sponsor.window_bounds(rid, 0).reveal_end
    chain.mine_to(reveal_end)
    escaped = attempt(lambda: trainer.withdraw_stake(rid))
    attempt(lambda: chain.trainers[5].report_missed_reveal(rid, 0, trainer.account.address))
    assert not escaped
    assert chain.sponsor.trainer_info(rid, trainer.account.address).slash_count == 1


# ------------------------------------------------------------------ weight copier


def test_a_weight_copier_earns_no_validator_share(chain: Chain) -> None:
    """Attack: a validator that evaluates nothing waits for the others' vectors and submits their median, to
    earn full agreement pay (before: it did). Now vectors are committed before any is revealed, a ballot needs
    the validator's own evaluation reports for every window of the epoch, and a reveal must match its commit."""
    rid = make_run(chain)
    honest = chain.validators[:3]
    copier = chain.trainers[5]
    for trainer in chain.trainers[:4]:
        trainer.register_trainer(rid, ETH)
    for v in [*honest, copier]:
        v.register_validator(rid, 2 * ETH)
    honest_vectors = {honest[0]: [3, 1, 1, 1], honest[1]: [3, 1, 1, 2], honest[2]: [3, 2, 1, 1]}
    publish_epoch(chain, rid, 0, honest)
    to_epoch_end(chain, rid, 0)
    median = [3, 1, 1, 1]
    # 1. copy without evaluating (no reports of its own), after the honest votes
    vote(chain, rid, 0, honest_vectors)
    attempt(lambda: vote(chain, rid, 0, {copier: median}))
    # 2. publish junk reports so that it may vote, commit a guess early, reveal the copy
    publish_epoch(chain, rid, 0, [copier])
    attempt(lambda: vote(chain, rid, 0, {copier: median}))
    finalize(chain, rid, 0, after_deadline=True)
    assert credited(chain, rid, copier.account.address) == 0
    assert all(credited(chain, rid, v.account.address) > 0 for v in honest)


def test_a_copier_that_commits_a_guess_cannot_reveal_the_copy(chain: Chain) -> None:
    """The copier's best try: publish junk reports, commit a placeholder in the commit phase, wait for the honest
    reveals, then reveal their median. The reveal does not match its commitment."""
    rid = make_run(chain)
    honest, copier = chain.validators[:2], chain.validators[2]
    for trainer in chain.trainers[:3]:
        trainer.register_trainer(rid, ETH)
    for v in [*honest, copier]:
        v.register_validator(rid, 2 * ETH)
    publish_epoch(chain, rid, 0, [*honest, copier])
    to_epoch_end(chain, rid, 0)
    copier.commit_weights(rid, 0, [1, 1, 1], keccak(text="guess"))
    vote(chain, rid, 0, {v: [2, 1, 1] for v in honest})
    with reverts("WeightsMismatch"):
        copier.reveal_weights(rid, 0, [2, 1, 1], keccak(text="guess"))
    finalize(chain, rid, 0, after_deadline=True)
    assert chain.sponsor.claimable(rid, copier.account.address) == 0


# ------------------------------------------------------------------ worst-case finalisation


def largest_configuration(chain: Chain) -> tuple[int, int]:
    """(validators, trainers) of the largest run the contract accepts: the most validators, and as many trainers
    as they may have."""
    fn = chain.sponsor.contract.functions
    validators = int(fn.MAX_VALIDATORS().call())
    try:
        trainers = int(fn.MAX_WEIGHT_ENTRIES().call()) // validators
    except (ContractReverted, ValueError, AttributeError):  # no cap on trainers × validators
        trainers = int(fn.MAX_TRAINERS().call())
    return validators, trainers


def test_the_largest_accepted_run_finalises_within_one_transaction(chain: Chain) -> None:
    """Attack: fill the largest configuration the contract accepts and make every validator's vector as costly to
    settle as possible (before: 2,048 trainers × 16 validators took 46M gas: over a block, and the run could
    never settle again). Now trainers × validators is capped and the worst case fits one transaction."""
    validators, trainers = largest_configuration(chain)
    # phases long enough for every validator to publish and commit one transaction at a time
    rid = make_run(chain, max_validators=validators, max_trainers=trainers, start_delay_blocks=200,
                   grace_period_blocks=100)
    register_trainers(chain, rid, fresh(chain, "worst-trainer", trainers))
    voters = fresh(chain, "worst-validator", validators)
    for k, v in enumerate(voters):  # the last one outweighs the rest: the stake scan visits every key
        v.register_validator(rid, (2 * validators if k == validators - 1 else 2) * ETH)
    # For every trainer but the first, each validator taken later in the settlement's sort (reveal order,
    # last first) gives a strictly larger share: every insertion moves every key before it.
    ballots = {v: [0xFFFF] + [60_000 - 100 * k] * (trainers - 1) for k, v in enumerate(voters)}
    publish_epoch(chain, rid, 0, voters)
    to_epoch_end(chain, rid, 0)
    vote(chain, rid, 0, ballots)
    receipt: dict[str, Any] = {}
    settled = attempt(lambda: receipt.update(chain.sponsor.finalize_epoch(rid, 0)))
    assert settled and int(receipt["gasUsed"]) <= FINALIZE_GAS_CAP, receipt.get("gasUsed")
