"""Property: whatever sequence of operations runs, every wei the contract holds is accounted for —
balance == pool + stakes + what participants can claim — and a claim pays exactly what was claimable.
Random sequences of fund / register / commit / reveal / report / settle / claim / unstake on a real Anvil."""

from __future__ import annotations

import contextlib
import random

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from contracts.client import TrainingRunClient, commitment_hash
from contracts.errors import ContractReverted
from contracts.tx import NONCES

from .conftest import ETH, Chain, make_run

OPS = ("fund", "register", "validator", "commit", "reveal", "report", "settle", "claim", "unstake", "withdraw")


class Scenario:
    def __init__(self, chain: Chain, seed: int) -> None:
        self.chain = chain
        self.rng = random.Random(seed)
        self.rid = make_run(chain, windows_per_epoch=1, miss_threshold=1, unbonding_blocks=3)
        self.people: list[TrainingRunClient] = chain.validators + chain.trainers
        self.commits: list[tuple[TrainingRunClient, int, str, bytes]] = []
        self.paid = 0

    def accounted(self) -> tuple[int, int]:
        sponsor, rid = self.chain.sponsor, self.rid
        held = self.chain.web3.eth.get_balance(sponsor.contract.address)
        total = sponsor.get_run(rid).pool
        for person in self.people:
            address = person.account.address
            total += sponsor.trainer_info(rid, address).stake + sponsor.validator_info(rid, address).stake
            total += sponsor.claimable(rid, address)
        return int(held), total

    def step(self, op: str, x: int) -> None:
        chain, rid, rng = self.chain, self.rid, self.rng
        person = self.people[x % len(self.people)]
        with contextlib.suppress(ContractReverted):
            if op == "fund":
                person.fund(rid, (1 + x % 5) * ETH)
            elif op == "register":
                chain.trainers[x % 6].register_trainer(rid, ETH + (x % 3) * ETH)
            elif op == "validator":
                chain.validators[x % 3].register_validator(rid, 2 * ETH + (x % 4) * ETH)
            elif op == "commit":
                window = person.current_window(rid)
                for trainer in chain.trainers[: 2 + x % 4]:
                    cid, salt = f"bafk-{rng.randint(0, 3)}", rng.randbytes(32)  # few CIDs: duplicates happen
                    with contextlib.suppress(ContractReverted):
                        trainer.commit(rid, window, commitment_hash(cid, salt, rid, window, trainer.account.address))
                        self.commits.append((trainer, window, cid, salt))
            elif op == "reveal" and self.commits:
                last_window = max(w for _, w, _, _ in self.commits)
                end = person.window_bounds(rid, last_window).end
                if chain.node.block_number() + 1 < end:
                    chain.mine_to(end)
                for trainer, window, cid, salt in self.commits:
                    if window == last_window and rng.random() < 0.7:
                        with contextlib.suppress(ContractReverted):
                            trainer.reveal(rid, window, cid, salt)
            elif op == "report" and self.commits:
                last_window = max(w for _, w, _, _ in self.commits)
                chain.mine_to(max(chain.node.block_number() + 1, person.window_bounds(rid, last_window).reveal_end))
                for trainer, window, _, _ in self.commits:
                    with contextlib.suppress(ContractReverted):
                        person.report_missed_reveal(rid, window, trainer.account.address)
            elif op == "settle":
                run = person.get_run(rid)
                epoch = run.next_epoch
                chain.mine_to(max(chain.node.block_number() + 1, person.epoch_end_block(rid, epoch)))
                for validator in chain.validators:
                    vector = [rng.randint(0, 9) for _ in range(run.trainer_count)]
                    with contextlib.suppress(ContractReverted):
                        validator.submit_weights(rid, epoch, vector)
                with contextlib.suppress(ContractReverted):
                    person.finalize_epoch(rid, epoch)
                chain.node.mine(run.grace_period_blocks)  # a later settle can use the grace path
            elif op == "claim":
                owed = [p for p in self.people if p.claimable(rid, p.account.address) > 0] or [person]
                person = owed[x % len(owed)]
                due = person.claimable(rid, person.account.address)
                paid = person.claim(rid)
                assert paid == due
                self.paid += paid
            elif op == "unstake":
                person.request_unstake(rid)
            elif op == "withdraw":
                chain.node.mine(3)
                person.withdraw_stake(rid)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32),
    ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 10**6)), min_size=6, max_size=16),
)
@example(  # one sequence that surely slashes, settles, claims and withdraws
    seed=1,
    ops=[
        ("commit", 3),
        ("reveal", 1),
        ("report", 2),
        ("settle", 3),
        ("claim", 4),
        ("claim", 5),
        ("fund", 1),
        ("settle", 7),
        ("unstake", 4),
        ("withdraw", 4),
        ("claim", 8),
    ],
)
def test_every_wei_is_accounted_for(chain: Chain, seed: int, ops: list[tuple[str, int]]) -> None:
    snapshot = chain.node.snapshot()
    try:
        scenario = Scenario(chain, seed)
        # a few participants up front so most sequences reach settlement
        scenario.step("register", 0)
        scenario.step("register", 1)
        scenario.step("validator", 0)
        for op, x in ops:
            scenario.step(op, x)
            held, accounted = scenario.accounted()
            assert held == accounted, (op, x)
        slashes = [chain.sponsor.trainer_info(scenario.rid, t.account.address).slash_count for t in chain.trainers]
        event(f"rewards claimed: {scenario.paid > 0}")
        event(f"trainer slashed: {any(slashes)}")
    finally:
        chain.node.revert(snapshot)
        NONCES.reset()
