"""Stateful property on a real Anvil: three honest validators settle epoch after epoch while hostile identities
join with any stake at any moment, vote garbage, withhold their reveals, leave and try to withdraw. After every
epoch:

- it was finalised (no sequence of hostile actions stalls the run);
- the electorate is the one fixed when the epoch began: the contract's snapshotted stake equals the stake of the
  validators this machine saw bonded before the epoch began and not leaving, every counted vote came from one of
  them, and the consensus is the reference stake-weighted median of those votes over that stake (stake that
  joined late changes nothing);
- while the honest validators hold more than half of that stake, the consensus is exactly the honest vector;
- no validator withdrew before every epoch it could vote on was settled."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from base.units import ETH
from contracts.client import TrainingRunClient, unpack_weights
from contracts.errors import ContractReverted, TransactionFailed
from contracts.tx import NONCES

from .conftest import Chain, finalize, make_run, publish_epoch, to_epoch_end, weight_salt
from .test_attacks import fresh
from .test_settlement_fuzz import reference_settlement

HONEST_VECTOR = [4, 3, 2, 1]
OPEN = 2**32 - 1
hostile = st.integers(0, 4)
vectors = st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4)


@dataclass
class Member:
    client: TrainingRunClient
    stake: int
    joined: int  # block of registration
    left: int | None = None  # block of requestUnstake / ejection
    withdrawn: bool = False


class Consensus(RuleBasedStateMachine):
    chain: Chain  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        chain = self.chain
        self.snapshot = chain.node.snapshot()
        # epochs longer than a settlement, so that settling keeps up and hostiles that join get votes
        self.rid = make_run(chain, window_blocks=60, reveal_blocks=2, windows_per_epoch=1, grace_period_blocks=20,
                            max_validators=8, miss_threshold=3, start_delay_blocks=30)
        self.run = chain.sponsor.get_run(self.rid)
        for trainer in chain.trainers[:4]:
            trainer.register_trainer(self.rid, ETH)
        self.members: dict[str, Member] = {}
        self.honest = chain.validators[:3]
        for v in self.honest:
            self._join(v, 2 * ETH)
        self.hostiles = fresh(chain, "machine-hostile", 5, eth=10**6)
        self.intent: dict[str, tuple[list[int], bool]] = {}  # hostile → (vector, reveals it), until it changes

    @initialize(stakes=st.lists(st.integers(2, 60), max_size=2), weights=vectors, reveals=st.booleans())
    def hostiles_bonded_from_the_start(self, stakes: list[int], weights: list[int], reveals: bool) -> None:
        """Hostile stake that bonded before the run started votes from epoch 0 on, legitimately."""
        for client, stake in zip(self.hostiles, stakes, strict=False):
            if self._join(client, stake * ETH):
                self.intent[client.account.address] = (weights, reveals)

    def teardown(self) -> None:
        self.chain.node.revert(self.snapshot)
        NONCES.reset()

    # ------------------------------------------------------------------ the machine's own model of the electorate

    def _epoch_of(self, block: int) -> int:
        return (block - self.run.start_block) // (self.run.window_blocks * self.run.windows_per_epoch)

    def _from(self, m: Member) -> int:
        return 0 if m.joined < self.run.start_block else self._epoch_of(m.joined) + 1

    def _until(self, m: Member) -> int:
        if m.left is None:
            return OPEN
        return 0 if m.left < self.run.start_block else self._epoch_of(m.left) + 1

    def _votes_on(self, m: Member, epoch: int) -> bool:
        return self._from(m) <= epoch < self._until(m)

    def _join(self, client: TrainingRunClient, stake: int) -> bool:
        try:
            receipt = client.register_validator(self.rid, stake)
        except (ContractReverted, TransactionFailed):
            return False
        self.members[client.account.address] = Member(client, stake, int(receipt["blockNumber"]))
        return True

    # ------------------------------------------------------------------ hostile actions

    @rule(who=hostile, stake=st.integers(2, 60), weights=vectors, reveals=st.booleans())
    def hostile_joins(self, who: int, stake: int, weights: list[int], reveals: bool) -> None:
        self._catch_up()
        client = self.hostiles[who]
        member = self.members.get(client.account.address)
        if (member is None or member.withdrawn) and self._join(client, stake * ETH):
            self.intent[client.account.address] = (weights, reveals)

    @rule(who=hostile, weights=vectors, reveals=st.booleans())
    def hostile_changes_its_vote(self, who: int, weights: list[int], reveals: bool) -> None:
        self.intent[self.hostiles[who].account.address] = (weights, reveals)

    @rule(who=hostile)
    def hostile_leaves(self, who: int) -> None:
        self._catch_up()
        client = self.hostiles[who]
        member = self.members.get(client.account.address)
        try:
            receipt = client.request_unstake(self.rid)
        except (ContractReverted, TransactionFailed):
            return
        assert member is not None and member.left is None
        member.left = int(receipt["blockNumber"])

    @rule(who=hostile, wait=st.booleans())
    def hostile_withdraws(self, who: int, wait: bool) -> None:
        client = self.hostiles[who]
        if wait:
            self._advance(self.run.unbonding_blocks)
        self._catch_up()
        try:
            client.withdraw_stake(self.rid)
        except (ContractReverted, TransactionFailed):
            return
        member = self.members[client.account.address]
        settled = self.chain.sponsor.get_run(self.rid).next_epoch
        assert self._until(member) <= settled or self._from(member) >= self._until(member), \
            "a validator withdrew before the epochs it votes on were settled"
        member.withdrawn = True

    # ------------------------------------------------------------------ one epoch, honestly settled

    def _catch_up(self) -> None:
        """The honest validators are prompt: every epoch whose settlement has opened is settled before anything
        else happens (and before any blocks are mined past its commit phase)."""
        sponsor = self.chain.sponsor
        while True:
            epoch = sponsor.get_run(self.rid).next_epoch
            if sponsor.settlement_of(self.rid, epoch).opens_at > self.chain.node.block_number() + 1:
                return
            self._settle(epoch)

    def _advance(self, blocks: int) -> None:
        """Mine `blocks` blocks, settling every epoch whose settlement opens on the way."""
        target = self.chain.node.block_number() + blocks
        while True:
            opens = self.chain.sponsor.settlement_of(self.rid, self.chain.sponsor.get_run(self.rid).next_epoch)
            if opens.opens_at > target:
                break
            self.chain.mine_to(max(self.chain.node.block_number() + 1, opens.opens_at))
            self._catch_up()
        self.chain.mine_to(max(self.chain.node.block_number() + 1, target + 1))

    @rule()
    def settle_next_epoch(self) -> None:
        self._catch_up()
        epoch = self.chain.sponsor.get_run(self.rid).next_epoch
        to_epoch_end(self.chain, self.rid, epoch)
        self._settle(epoch)

    def _settle(self, epoch: int) -> None:
        chain, sponsor, rid = self.chain, self.chain.sponsor, self.rid
        voters = [m for m in self.members.values() if not m.withdrawn]
        hostile_voters = [m for m in voters if m.client.account.address in self.intent]
        publish_epoch(chain, rid, epoch, self.honest + [m.client for m in hostile_voters])
        to_epoch_end(chain, rid, epoch)
        # Settlement opens when the epoch is over and the previous one settled (the machine settles at once, but
        # a phase can still be used up by publications): an epoch without honest votes settles without them.
        honest_votes = sponsor.settlement_of(rid, epoch).commits_open(chain.node.block_number() + 1)
        committed: list[Member] = []
        for m in hostile_voters:  # before the honest ones: they cannot see honest vectors yet anyway
            weights, _ = self.intent[m.client.account.address]
            try:
                m.client.commit_weights(rid, epoch, weights, weight_salt(m.client, epoch))
                committed.append(m)
            except (ContractReverted, TransactionFailed):
                assert not (honest_votes and self._votes_on(m, epoch)), "an eligible validator could not commit"
        if honest_votes:
            for v in self.honest:
                v.commit_weights(rid, epoch, HONEST_VECTOR, weight_salt(v, epoch))
            state = sponsor.settlement_of(rid, epoch)
            if not state.reveals_open(chain.node.block_number() + 1):
                chain.mine_to(state.reveals_from)
            for v in self.honest:
                v.reveal_weights(rid, epoch, HONEST_VECTOR, weight_salt(v, epoch))
        for m in committed:
            weights, reveals = self.intent[m.client.account.address]
            if reveals:
                m.client.reveal_weights(rid, epoch, weights, weight_salt(m.client, epoch))
        finalize(chain, rid, epoch, after_deadline=not sponsor.settlement_of(rid, epoch).finalizable(
            chain.node.block_number() + 1))
        self._check_epoch(epoch, honest_votes)

    def _check_epoch(self, epoch: int, honest_voted: bool) -> None:
        sponsor, rid = self.chain.sponsor, self.rid
        assert sponsor.epoch_info(rid, epoch).finalized
        electorate = {a: m for a, m in self.members.items() if self._votes_on(m, epoch)}
        total = sum(m.stake for m in electorate.values())
        assert sponsor.total_stake(rid, epoch) == total
        revealed = sponsor.revealed_weights(rid, epoch)
        assert {r.validator for r in revealed} <= set(electorate), "a vote from outside the epoch's electorate"
        vectors = [unpack_weights(r.weights)[1] for r in revealed]
        stakes = [electorate[r.validator].stake for r in revealed]
        run = self.run
        pool_before = sponsor.get_run(rid).pool  # only the shape of the consensus is compared, not the amounts
        want = reference_settlement(vectors, stakes, run.reward_per_epoch, max(pool_before, run.reward_per_epoch),
                                    run.validator_share_bps, epoch_stake=total)
        got = [sponsor.consensus_weight(rid, epoch, i) for i in range(4)]
        assert got == (want.quantised + [0] * 4)[:4]
        honest_stake = sum(electorate[v.account.address].stake for v in self.honest)
        if honest_voted and 2 * honest_stake > total:
            assert got == [65535, 49151, 32767, 16383]  # HONEST_VECTOR scaled to its maximum

    @invariant()
    def the_run_keeps_settling(self) -> None:
        run = self.chain.sponsor.get_run(self.rid)
        assert run.validator_count <= run.max_validators


def test_hostile_validators_neither_stall_nor_sway_the_consensus(chain: Chain) -> None:
    Consensus.chain = chain
    run_state_machine_as_test(
        Consensus,
        settings=settings(
            max_examples=4, stateful_step_count=8, deadline=None,
            # each step is real transactions; a failure is reported as found rather than shrunk for minutes
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
