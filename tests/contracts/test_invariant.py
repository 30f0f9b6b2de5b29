"""Stateful property on a real Anvil: random sequences of fund / register / add stake / commit / reveal / report /
settle / claim / unstake / withdraw / leave, and after every step the run's books balance:

- the contract's balance = pool + stakes + everything claimable (no wei appears or vanishes);
- pool = funded + slashed − credited (settlement and slashing only move value between these);
- everything claimable = credited − claimed, stakes = deposited − slashed − withdrawn;
- a claim or a withdrawal (stake plus the rewards still due) pays exactly what was due to that account, the
  contract's balance drops by exactly that, and a second attempt is refused: no account takes out more than was
  credited (or staked) to it.

Every rule tolerates the contract's refusals, so a run in which every commit, reveal and settlement reverted would
keep the books balanced too. So every example starts with one epoch of everything (a missed reveal slashed, a paid
settlement, a claim, a trainer leaving), the machine counts what took effect on chain across its examples, and the
test fails unless each kind happened at least once per example. Before that opening, 5 examples of 10 random steps
were measured to reach no claim and no withdrawal at all (and 1 slash, 0 paid settlements)."""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from typing import Any, ClassVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from base.commitments import commitment_hash
from contracts.client import TrainingRunClient
from contracts.errors import ContractReverted
from contracts.tx import NONCES

from .cids import cid
from .conftest import (
    ETH,
    POOL,
    Chain,
    make_run,
    publish_epoch,
    reveal_reports,
    reverts,
    settle,
    settle_unvoted,
    to_epoch_end,
    to_start,
    weight_salt,
)

person = st.integers(0, 8)  # validators 0..2, then trainers 0..5


class RunBooks(RuleBasedStateMachine):
    chain: Chain  # set by the test before the machine runs
    happened: ClassVar[Counter[str]] = Counter()  # what took effect on chain, summed over every example
    examples: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        RunBooks.examples += 1
        chain = self.chain
        self.snapshot = chain.node.snapshot()
        # PARAMS' start delay: the validator registered before the start votes from epoch 0, so the first
        # settlement can pay.
        self.rid = make_run(chain, windows_per_epoch=1, miss_threshold=1)
        self.from_block = chain.node.block_number()
        self.people: list[TrainingRunClient] = chain.validators + chain.trainers
        self.members: set[int] = set()  # indices into people that hold a role
        self.funded, self.deposited, self.claimed, self.withdrawn = POOL, 0, 0, 0
        self.commits: list[tuple[TrainingRunClient, int, str, bytes]] = []
        self.rng = random.Random(0)
        for who, stake in ((3, ETH), (4, ETH), (0, 2 * ETH)):  # two trainers and a validator, so epochs settle
            self._register(who, stake)
        to_start(chain, self.rid)

    def teardown(self) -> None:
        self.happened["slash"] += len(self._events("TrainerSlashed"))
        self.happened["slash"] += sum(1 for e in self._events("ValidatorEjected") if e["args"]["slashed"] > 0)
        self.happened["paid finalisation"] += sum(
            1 for e in self._events("EpochFinalized") if e["args"]["trainerReward"] + e["args"]["validatorReward"])
        self.chain.node.revert(self.snapshot)
        NONCES.reset()

    # ------------------------------------------------------------------ helpers

    def _held(self) -> int:
        return int(self.chain.web3.eth.get_balance(self.chain.deployment.address))

    def _events(self, name: str) -> list[Any]:
        event = getattr(self.chain.sponsor.contract.events, name)
        return list(event.get_logs(argument_filters={"runId": self.rid}, from_block=self.from_block))

    def _someone(self, data: st.DataObject) -> int:
        """A member three times in four (only a member's claim, unstake or withdrawal can succeed), else anyone."""
        if self.members and data.draw(st.integers(0, 3), label="a member") > 0:
            return data.draw(st.sampled_from(sorted(self.members)), label="member")
        return data.draw(person, label="anyone")

    def _register(self, who: int, stake: int) -> None:
        client = self.people[who]
        with contextlib.suppress(ContractReverted):
            if who < 3:
                client.register_validator(self.rid, stake)
            else:
                client.register_trainer(self.rid, stake)
            self.deposited += stake
            self.members.add(who)

    # ------------------------------------------------------------------ rules

    @initialize(data=st.data(), seed=st.integers(0, 2**16))
    def a_first_epoch_of_everything(self, data: st.DataObject, seed: int) -> None:
        """Every example starts with each kind of event the books must survive, then the random rules take over:
        both trainers commit, one of them (drawn) never reveals and is slashed when the epoch settles, the epoch
        pays, someone who is owed claims, and a trainer (drawn) leaves the run with its stake and rewards. Hypothesis'
        swarm testing leaves rules out of whole examples, so without this many examples only test refusals."""
        self.commit(count=2, cids=4)  # trainers 3 and 4
        silent = self.people[data.draw(st.sampled_from([3, 4]), label="never reveals")]
        self.chain.mine_to(self.chain.sponsor.window_bounds(self.rid, 0).end)
        for trainer, window, content, salt in self.commits:
            if trainer is not silent:
                with contextlib.suppress(ContractReverted):
                    trainer.reveal(self.rid, window, content, salt)
        self._settle(seed, late=False)
        owed = self._owed()
        if owed:
            self._claim(self.people[data.draw(st.sampled_from(owed), label="claims")])
        self._leave(data.draw(st.sampled_from([3, 4]), label="leaves"), seed)

    @rule(who=person, eth=st.integers(1, 5))
    def fund(self, who: int, eth: int) -> None:
        self.people[who].fund(self.rid, eth * ETH)
        self.funded += eth * ETH

    @rule(who=person, extra=st.integers(0, 3))
    def register(self, who: int, extra: int) -> None:
        self._register(who, (2 if who < 3 else 1) * ETH + extra * ETH)

    @rule(who=st.integers(3, 8), eth=st.integers(1, 2))
    def add_stake(self, who: int, eth: int) -> None:
        with contextlib.suppress(ContractReverted):
            self.people[who].add_stake(self.rid, eth * ETH)
            self.deposited += eth * ETH

    @rule(count=st.integers(1, 6), cids=st.integers(1, 4))
    def commit(self, count: int, cids: int) -> None:
        window = self.chain.sponsor.current_window(self.rid)
        for trainer in self.chain.trainers[:count]:
            content, salt = cid(f"c-{self.rng.randrange(cids)}"), self.rng.randbytes(32)  # few: duplicates happen
            with contextlib.suppress(ContractReverted):
                trainer.commit(self.rid, window,
                               commitment_hash(content, salt, self.rid, window, trainer.account.address))
                self.commits.append((trainer, window, content, salt))

    @rule(share=st.floats(0, 1))
    def reveal(self, share: float) -> None:
        if not self.commits:
            return
        last = max(w for _, w, _, _ in self.commits)
        end = self.chain.sponsor.window_bounds(self.rid, last).end
        self.chain.mine_to(max(self.chain.node.block_number() + 1, end))
        for trainer, window, content, salt in self.commits:
            if window == last and self.rng.random() < share:
                with contextlib.suppress(ContractReverted):
                    trainer.reveal(self.rid, window, content, salt)

    @rule(reporter=person)
    def report_missed(self, reporter: int) -> None:
        if not self.commits:
            return
        last = max(w for _, w, _, _ in self.commits)
        end = self.chain.sponsor.window_bounds(self.rid, last).reveal_end
        self.chain.mine_to(max(self.chain.node.block_number() + 1, end))
        self._report_misses(self.people[reporter], range(last + 1))

    def _report_misses(self, reporter: TrainingRunClient, windows: range) -> None:
        """Report every commit of `windows` as a missed reveal (refused for the revealed and the reported)."""
        for trainer, window, _, _ in self.commits:
            if window in windows:
                with contextlib.suppress(ContractReverted):
                    reporter.report_missed_reveal(self.rid, window, trainer.account.address)

    @rule(seed=st.integers(0, 2**16), late=st.booleans())
    def settle(self, seed: int, late: bool) -> None:
        self._settle(seed, late)

    def _settle(self, seed: int, late: bool) -> None:
        """Every registered validator publishes the next epoch's windows; some vote (late: some commit and never
        reveal, and the epoch is finalised after its deadline); the epoch is finalised."""
        rng, sponsor, chain = random.Random(seed), self.chain.sponsor, self.chain
        run = sponsor.get_run(self.rid)
        epoch = run.next_epoch
        validators = [v for v in chain.validators if sponsor.validator_info(self.rid, v.account.address).registered]
        publish_epoch(chain, self.rid, epoch, validators)
        # As the validator loop does: the epoch's commits that were never revealed are reported (and slashed).
        windows = range(epoch * run.windows_per_epoch, (epoch + 1) * run.windows_per_epoch)
        self._report_misses(validators[0] if validators else sponsor, windows)
        to_epoch_end(chain, self.rid, epoch)
        # Weight for every slot, vacant ones included (what validators give a slot whose trainer left must stay in
        # the pool), and any payout (what a vector does not assign must stay in the pool too).
        ballots = {v: [rng.randint(0, 0xFFFF) for _ in sponsor.trainers(self.rid)] for v in validators}
        payouts = {v: rng.choice([0, rng.randint(1, 0xFFFF), 0xFFFF, 0xFFFF]) for v in validators}
        committed = []
        for v, weights in ballots.items():
            with contextlib.suppress(ContractReverted):  # NotEligible, ReportsMissing, CommitPhaseOver
                v.commit_weights(self.rid, epoch, weights, weight_salt(v, epoch), payouts[v])
                committed.append(v)
        state = sponsor.settlement_of(self.rid, epoch)
        if not state.reveals_open(chain.node.block_number() + 1):
            chain.mine_to(max(chain.node.block_number() + 1, state.reveals_from))
        for v in committed:
            if late and rng.random() < 0.5:
                continue
            if rng.random() < 0.8:  # a validator that keeps its reports sealed is credited nothing
                reveal_reports(chain, self.rid, epoch, v)
            v.reveal_weights(self.rid, epoch, ballots[v], weight_salt(v, epoch), payouts[v])
        if late or not sponsor.settlement_of(self.rid, epoch).finalizable(chain.node.block_number() + 1):
            chain.mine_to(max(chain.node.block_number() + 1, sponsor.settlement_of(self.rid, epoch).closes_at))
        sponsor.finalize_epoch(self.rid, epoch)

    def _owed(self) -> list[int]:
        return [who for who, c in enumerate(self.people) if self.chain.sponsor.claimable(self.rid, c.account.address)]

    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        owed = self._owed()
        if owed and data.draw(st.integers(0, 3), label="one who is owed") > 0:
            self._claim(self.people[data.draw(st.sampled_from(owed), label="owed")])
        else:
            self._claim(self.people[self._someone(data)])

    def _claim(self, client: TrainingRunClient) -> None:
        due = client.claimable(self.rid, client.account.address)
        if due == 0:
            with reverts("NothingToClaim"):
                client.claim(self.rid)
            return
        before = self._held()
        assert client.claim(self.rid) == due
        assert self._held() == before - due
        self.claimed += due
        self.happened["claim"] += 1
        with reverts("NothingToClaim"):  # a second claim takes nothing more
            client.claim(self.rid)

    @rule(data=st.data())
    def unstake(self, data: st.DataObject) -> None:
        with contextlib.suppress(ContractReverted):
            self.people[self._someone(data)].request_unstake(self.rid)

    @rule(who=st.integers(0, 2), reporter=person)
    def eject(self, who: int, reporter: int) -> None:
        with contextlib.suppress(ContractReverted):  # NotEjectable while it served recently
            self.people[reporter].eject_validator(self.rid, self.people[who].account.address)

    @rule(data=st.data(), wait=st.booleans())
    def withdraw(self, data: st.DataObject, wait: bool) -> None:
        self._withdraw(self._someone(data), wait)

    @rule(data=st.data(), seed=st.integers(0, 2**16))
    def leave(self, data: st.DataObject, seed: int) -> None:
        """A trainer leaves the run: requests its unstake (unless it did), the epochs it served are settled, its
        unbonding passes, and it withdraws its stake with the rewards still due."""
        trainers = sorted(who for who in self.members if who >= 3)
        if not trainers:
            return
        self._leave(data.draw(st.sampled_from(trainers), label="leaving"), seed)

    def _leave(self, who: int, seed: int) -> None:
        if who not in self.members:
            return
        client, sponsor = self.people[who], self.chain.sponsor
        with contextlib.suppress(ContractReverted):  # Unbonding: it asked before
            client.request_unstake(self.rid)
        until = sponsor.trainer_info(self.rid, client.account.address).until_epoch
        while sponsor.get_run(self.rid).next_epoch < until:
            self._settle(seed, late=False)
        self._withdraw(who, wait=True)

    def _withdraw(self, who: int, wait: bool) -> None:
        client, sponsor = self.people[who], self.chain.sponsor
        if wait:
            self.chain.node.mine(sponsor.get_run(self.rid).unbonding_blocks)
        address = client.account.address
        trainer, validator = sponsor.trainer_info(self.rid, address), sponsor.validator_info(self.rid, address)
        stake = trainer.stake if trainer.registered else validator.bond
        rewards = sponsor.claimable(self.rid, address)
        before = self._held()
        try:
            client.withdraw_stake(self.rid)
        except ContractReverted:  # NotMember, NotUnbonding, UnbondingNotOver, EpochsNotSettled, ClaimFirst
            assert self._held() == before
            assert sponsor.claimable(self.rid, address) == rewards
            return
        assert self._held() == before - stake - rewards
        self.withdrawn += stake
        self.claimed += rewards
        self.members.discard(who)
        self.happened["withdrawal"] += 1
        with reverts("NotMember"):
            client.withdraw_stake(self.rid)

    # ------------------------------------------------------------------ the books

    @invariant()
    def books_balance(self) -> None:
        sponsor, rid = self.chain.sponsor, self.rid
        pool = sponsor.get_run(rid).pool
        stakes = claimable = 0
        for who in self.members:
            address = self.people[who].account.address
            stakes += sponsor.trainer_info(rid, address).stake + sponsor.validator_info(rid, address).bond
            claimable += sponsor.claimable(rid, address)
        slashed = sum(int(e["args"]["amount"]) for e in self._events("TrainerSlashed"))
        slashed += sum(int(e["args"]["slashed"]) for e in self._events("ValidatorEjected"))
        credited = sum(int(e["args"]["trainerReward"]) + int(e["args"]["validatorReward"])
                       for e in self._events("EpochFinalized"))
        assert self._held() == pool + stakes + claimable
        assert pool == self.funded + slashed - credited
        assert claimable == credited - self.claimed
        assert stakes == self.deposited - slashed - self.withdrawn


def test_the_books_always_balance(chain: Chain) -> None:
    RunBooks.chain = chain
    RunBooks.happened.clear()
    RunBooks.examples = 0
    run_state_machine_as_test(
        RunBooks,
        settings=settings(
            max_examples=5, stateful_step_count=10, deadline=None,
            # each step is real transactions; a failure is reported as found rather than shrunk for minutes
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
    rare = [what for what in ("slash", "paid finalisation", "claim", "withdrawal")
            if RunBooks.happened[what] < RunBooks.examples]
    assert not rare, f"fewer than one per example ({RunBooks.examples}): {rare}; happened: {dict(RunBooks.happened)}"


def test_rewards_voted_to_a_vacant_slot_stay_claimable(chain: Chain) -> None:
    """A trainer leaves (unstake, its epoch settled, unbonding over, withdraw); the next epoch's consensus still gives
    its vacant slot weight. Every wei the contract holds must stay in the pool, a stake or someone's claim."""
    rid = make_run(chain)
    leaver, stayer, validator = chain.trainers[0], chain.trainers[1], chain.validators[0]
    for trainer in (leaver, stayer):
        trainer.register_trainer(rid, ETH)
    validator.register_validator(rid, 2 * ETH)
    to_start(chain, rid)
    leaver.request_unstake(rid)
    settle(chain, rid, 0, {validator: [1, 1]})
    chain.node.mine(chain.sponsor.get_run(rid).unbonding_blocks)
    leaver.withdraw_stake(rid)
    sponsor = chain.sponsor
    assert int(sponsor.trainers(rid)[0], 16) == 0  # the slot is vacant
    epoch = sponsor.current_window(rid) // sponsor.get_run(rid).windows_per_epoch
    settle_unvoted(chain, rid, epoch)
    pool_before = sponsor.get_run(rid).pool
    settle(chain, rid, epoch, {validator: [1, 1]})  # a consensus that still weights it
    # the stayer is credited its half, not the leaver's too: the vacant slot's half stays in the pool
    run = sponsor.get_run(rid)
    trainer_reward = run.reward_per_epoch - run.reward_per_epoch * run.validator_share_bps // 10_000
    info = sponsor.epoch_info(rid, epoch)
    credited = info.reward_per_weight * info.weight_sum
    assert sponsor.consensus_weight(rid, epoch, 0) == 0 and info.weight_sum == 0xFFFF
    assert trainer_reward // 2 - 0xFFFF <= credited <= trainer_reward // 2
    validator_credit = run.reward_per_epoch * run.validator_share_bps // 10_000
    assert pool_before - sponsor.get_run(rid).pool <= credited + validator_credit
    held = int(chain.web3.eth.get_balance(chain.deployment.address))
    stakes = sponsor.trainer_info(rid, stayer.account.address).stake + sponsor.validator_info(
        rid, validator.account.address).bond
    claims = sum(sponsor.claimable(rid, c.account.address) for c in (leaver, stayer, validator))
    locked = held - sponsor.get_run(rid).pool - stakes - claims
    assert locked == 0, f"{locked} wei are in no pool, stake or claim"
