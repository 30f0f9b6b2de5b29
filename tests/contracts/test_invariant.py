"""Stateful property on a real Anvil: random sequences of fund / register / add stake / commit / reveal / report /
settle / claim / unstake / withdraw, and after every step the run's books balance:

- the contract's balance = pool + stakes + everything claimable (no wei appears or vanishes);
- pool = funded + slashed − credited (settlement and slashing only move value between these);
- everything claimable = credited − claimed, stakes = deposited − slashed − withdrawn;
- a claim or a withdrawal (stake plus the rewards still due) pays exactly what was due to that account, the
  contract's balance drops by exactly that, and a second attempt is refused: no account takes out more than was
  credited (or staked) to it."""

from __future__ import annotations

import contextlib
import random
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from contracts.client import TrainingRunClient, commitment_hash
from contracts.errors import ContractReverted
from contracts.tx import NONCES

from .cids import cid
from .conftest import ETH, POOL, Chain, make_run, publish_epoch, reverts, to_epoch_end, weight_salt

person = st.integers(0, 8)  # validators 0..2, then trainers 0..5


class RunBooks(RuleBasedStateMachine):
    chain: Chain  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        chain = self.chain
        self.snapshot = chain.node.snapshot()
        self.rid = make_run(chain, windows_per_epoch=1, miss_threshold=1, start_delay_blocks=0)
        self.from_block = chain.node.block_number()
        self.people: list[TrainingRunClient] = chain.validators + chain.trainers
        self.members: set[int] = set()  # indices into people that hold a role
        self.funded, self.deposited, self.claimed, self.withdrawn = POOL, 0, 0, 0
        self.commits: list[tuple[TrainingRunClient, int, str, bytes]] = []
        self.rng = random.Random(0)
        for who, stake in ((3, ETH), (4, ETH), (0, 2 * ETH)):  # two trainers and a validator, so epochs settle
            self._register(who, stake)

    def teardown(self) -> None:
        self.chain.node.revert(self.snapshot)
        NONCES.reset()

    # ------------------------------------------------------------------ helpers

    def _held(self) -> int:
        return int(self.chain.web3.eth.get_balance(self.chain.deployment.address))

    def _events(self, name: str) -> list[Any]:
        event = getattr(self.chain.sponsor.contract.events, name)
        return list(event.get_logs(argument_filters={"runId": self.rid}, from_block=self.from_block))

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
        for trainer, window, _, _ in self.commits:
            with contextlib.suppress(ContractReverted):
                self.people[reporter].report_missed_reveal(self.rid, window, trainer.account.address)

    @rule(seed=st.integers(0, 2**16), late=st.booleans())
    def settle(self, seed: int, late: bool) -> None:
        """Every registered validator publishes the next epoch's windows; some vote (late: some commit and never
        reveal, and the epoch is finalised after its deadline); the epoch is finalised."""
        rng, sponsor, chain = random.Random(seed), self.chain.sponsor, self.chain
        run = sponsor.get_run(self.rid)
        epoch = run.next_epoch
        validators = [v for v in chain.validators if sponsor.validator_info(self.rid, v.account.address).registered]
        publish_epoch(chain, self.rid, epoch, validators)
        to_epoch_end(chain, self.rid, epoch)
        ballots = {v: [rng.randint(0, 0xFFFF) for _ in range(run.trainer_count)] for v in validators}
        committed = []
        for v, weights in ballots.items():
            with contextlib.suppress(ContractReverted):  # NotEligible, ReportsMissing, CommitPhaseOver
                v.commit_weights(self.rid, epoch, weights, weight_salt(v, epoch))
                committed.append(v)
        state = sponsor.settlement_of(self.rid, epoch)
        if not state.reveals_open(chain.node.block_number() + 1):
            chain.mine_to(max(chain.node.block_number() + 1, state.reveals_from))
        for v in committed:
            if late and rng.random() < 0.5:
                continue
            v.reveal_weights(self.rid, epoch, ballots[v], weight_salt(v, epoch))
        if late or not sponsor.settlement_of(self.rid, epoch).finalizable(chain.node.block_number() + 1):
            chain.mine_to(max(chain.node.block_number() + 1, sponsor.settlement_of(self.rid, epoch).closes_at))
        sponsor.finalize_epoch(self.rid, epoch)

    @rule(who=person)
    def claim(self, who: int) -> None:
        client = self.people[who]
        due = client.claimable(self.rid, client.account.address)
        if due == 0:
            with reverts("NothingToClaim"):
                client.claim(self.rid)
            return
        before = self._held()
        assert client.claim(self.rid) == due
        assert self._held() == before - due
        self.claimed += due
        with reverts("NothingToClaim"):  # a second claim takes nothing more
            client.claim(self.rid)

    @rule(who=person)
    def unstake(self, who: int) -> None:
        with contextlib.suppress(ContractReverted):
            self.people[who].request_unstake(self.rid)

    @rule(who=st.integers(0, 2), reporter=person)
    def eject(self, who: int, reporter: int) -> None:
        with contextlib.suppress(ContractReverted):  # NotEjectable while it served recently
            self.people[reporter].eject_validator(self.rid, self.people[who].account.address)

    @rule(who=person, wait=st.booleans())
    def withdraw(self, who: int, wait: bool) -> None:
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
    run_state_machine_as_test(
        RunBooks,
        settings=settings(
            max_examples=5, stateful_step_count=10, deadline=None,
            # each step is real transactions; a failure is reported as found rather than shrunk for minutes
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
