"""Settlement arithmetic fuzzed against a Python reference on a real Anvil: stake-weighted median consensus of
normalised weights, the uint16 quantisation, the trainer/validator split, validators' agreement shares and where
the rounding dust goes — with stakes and rewards far beyond realistic sizes to look for overflow."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from base.units import ETH
from contracts.tx import NONCES

from .conftest import PARAMS, Chain, credited, settle

SCALE = 10**12
BPS = 10_000
UINT96 = 2**96 - 1


@dataclass(frozen=True)
class Settlement:
    reward_per_weight: int
    weight_sum: int
    quantised: list[int]  # stored consensus weight per trainer index
    validator_credit: list[int]
    pool_after: int


def reference_settlement(
    vectors: list[list[int]], stakes: list[int], reward_per_epoch: int, pool: int, validator_share_bps: int,
    epoch_stake: int | None = None, payouts: list[int] | None = None,
) -> Settlement:
    """What finalizeEpoch must compute, written from its specification (not from its assembly). `epoch_stake` is
    the stake of every validator that votes on the epoch (default: exactly the ones that revealed); `payouts`
    the vectors' payout headers (default: the whole trainer reward)."""
    n = len(vectors)
    reward = min(reward_per_epoch, pool)
    entries = max((len(v) for v in vectors), default=0)
    if n == 0 or reward == 0:
        return Settlement(0, 0, [0] * entries, [0] * n, pool)
    validator_reward = reward * validator_share_bps // BPS
    total_stake = sum(stakes) if epoch_stake is None else epoch_stake
    payout = stake_median(payouts or [0xFFFF] * n, stakes, total_stake)
    trainer_reward = (reward - validator_reward) * payout // 0xFFFF
    sums = [sum(v) for v in vectors]
    consensus: list[int] = []
    agreement = [0] * n
    for i in range(entries):
        values = [v[i] * SCALE // sums[k] if i < len(v) and v[i] else 0 for k, v in enumerate(vectors)]
        c = stake_median(values, stakes, total_stake)
        consensus.append(c)
        if c:
            for k in range(n):
                agreement[k] += min(values[k], c)
    # the payout is part of the ballot: agreement shrinks with the distance of a vote from the agreed payout
    agreement = [a * (0xFFFF - abs(p - payout)) // 0xFFFF for a, p in zip(agreement, payouts or [0xFFFF] * n,
                                                                             strict=True)]
    top = max(consensus, default=0)
    quantised = [c * 0xFFFF // top for c in consensus] if top and trainer_reward else [0] * entries
    weight_sum = sum(quantised)
    unit = trainer_reward // weight_sum if weight_sum else 0
    trainer_paid = unit * weight_sum
    shares = [s * a for s, a in zip(stakes, agreement, strict=True)]
    shift = 0
    while sum(shares) >> shift > 2**128 - 1:  # scaled down together so that reward × share fits 256 bits
        shift += 8
    shares = [x >> shift for x in shares]
    total = sum(shares)
    credit = [0] * n
    if total and validator_reward:
        credit = [min(validator_reward * x // total, UINT96) for x in shares]
    return Settlement(unit, weight_sum, quantised, credit, pool - trainer_paid - sum(credit))


def stake_median(values: list[int], stakes: list[int], total_stake: int) -> int:
    """The largest value that validators holding more than half of `total_stake` give at least (0 if none)."""
    return max((v for v in values if 2 * sum(s for u, s in zip(values, stakes, strict=True) if u >= v) > total_stake),
               default=0)


def test_reference_on_a_hand_computed_case() -> None:
    # two validators, equal stake: a strict majority needs both, so consensus is the element-wise minimum
    got = reference_settlement([[3, 1], [1, 1]], [1, 1], 1000, 10_000, 2000)
    assert got.quantised == [0xFFFF, 0xFFFF // 2]  # consensus (0.5, 0.25) scaled to its maximum
    assert got.reward_per_weight == 800 // (0xFFFF + 0xFFFF // 2) == 0  # all 800 wei of trainer reward is dust
    assert got.validator_credit == [100, 100]  # equal stake × equal agreement (0.75 each) of 200 wei
    assert got.pool_after == 10_000 - 200
    # a third validator of the same stake that revealed nothing: neither of the two is a majority alone, and
    # together they agree on at least min(w) per trainer, as before
    assert reference_settlement([[3, 1], [1, 1]], [1, 1], 1000, 10_000, 2000, epoch_stake=3).quantised == \
        got.quantised
    assert reference_settlement([[3, 1]], [1], 1000, 10_000, 2000, epoch_stake=3).quantised == [0, 0]
    # payouts 1/4 and 3/4 of equal stake: a strict majority gives at least 1/4, so 200 of the 800 wei are assigned
    quarter = reference_settlement([[1, 1], [1, 1]], [1, 1], 1000, 10_000, 2000, payouts=[0xFFFF // 4, 0xFFFF * 3 // 4])
    assert (quarter.reward_per_weight, quarter.weight_sum) == (199 // (2 * 0xFFFF), 2 * 0xFFFF)
    assert stake_median([10, 30, 20], [1, 1, 1], 3) == 20 and stake_median([10, 30], [1, 1], 5) == 0


uint16 = st.integers(0, 0xFFFF)
SETTLE_CASE = st.integers(1, 3).flatmap(
    lambda n: st.tuples(
        st.integers(1, 6),  # trainers
        st.lists(st.lists(uint16, max_size=6), min_size=n, max_size=n),  # raw vectors, cut to the trainer count
        st.lists(st.integers(2 * ETH, 2**95), min_size=n, max_size=n),  # validator stakes
        st.integers(1, 2**127),  # rewardPerEpoch
        st.integers(0, 2**100),  # pool
        st.integers(0, BPS),  # validator share
        st.lists(uint16, min_size=n, max_size=n),  # payouts
    )
)


# Each example is ~15 transactions; shrinking would replay hundreds of them, so a failure reports the example as
# found (it is small already: at most 3 validators × 6 trainers).
@settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=SETTLE_CASE)
# the extremes: largest stakes and rewards, all reward to validators; dust-only trainer reward
@example(case=(6, [[0xFFFF] * 6, [1, 0, 0xFFFF, 2, 3, 0], [0] * 6], [2**95, 2**95, 2 * ETH], 2**127,
               2**100, BPS, [0xFFFF] * 3))
@example(case=(6, [[0xFFFF, 1, 1, 1, 1, 1], [0xFFFF, 0xFFFF, 0, 0, 0, 7]], [3 * ETH, 2 * ETH], 10**5, 10**6, 1,
               [0xFFFF, 0xFFFF]))
# payouts split by stake: the larger stake's smaller payout is the majority's; a zero payout pays trainers nothing
@example(case=(3, [[5, 3, 1], [1, 1, 1]], [3 * ETH, 2 * ETH], 10**18, 10**19, 1000, [0x4000, 0xC000]))
@example(case=(2, [[1, 1]], [2 * ETH], 10**18, 10**19, 1000, [0]))
def test_settlement_matches_the_reference(
    chain: Chain, case: tuple[int, list[list[int]], list[int], int, int, int, list[int]]
) -> None:
    trainers, raw, stakes, reward_per_epoch, pool, share, payouts = case
    vectors = [v[:trainers] for v in raw]
    snapshot = chain.node.snapshot()
    try:
        for client in [chain.sponsor, *chain.validators]:
            chain.node.set_balance(client.account.address, 2**101)
        params = replace(PARAMS, window_blocks=1, reveal_blocks=1, windows_per_epoch=1,
                         reward_per_epoch=reward_per_epoch, validator_share_bps=share)
        rid = chain.sponsor.create_run(params, pool)
        for client in chain.trainers[:trainers]:
            client.register_trainer(rid, ETH)
        validators = chain.validators[: len(vectors)]
        for client, stake in zip(validators, stakes, strict=True):
            client.register_validator(rid, stake)
        settle(chain, rid, 0, dict(zip(validators, vectors, strict=True)),
               payouts=dict(zip(validators, payouts, strict=True)))

        want = reference_settlement(vectors, stakes, reward_per_epoch, pool, share, payouts=payouts)
        epoch = chain.sponsor.epoch_info(rid, 0)
        assert epoch.finalized
        assert (epoch.reward_per_weight, epoch.weight_sum) == (want.reward_per_weight, want.weight_sum)
        assert [chain.sponsor.consensus_weight(rid, 0, i) for i in range(len(want.quantised))] == want.quantised
        for i, client in enumerate(chain.trainers[:trainers]):
            q = want.quantised[i] if i < len(want.quantised) else 0
            assert chain.sponsor.claimable(rid, client.account.address) == want.reward_per_weight * q
        assert [chain.sponsor.held_credit(rid, v.account.address).amount for v in validators] == \
            want.validator_credit  # held while epoch 0's ballots can be disputed
        assert chain.sponsor.get_run(rid).pool == want.pool_after
        # dust stays in the pool: what left it is never more than the epoch's reward
        assert 0 <= pool - want.pool_after <= min(reward_per_epoch, pool)
        # and every wei the contract holds is still accounted for
        held = chain.web3.eth.get_balance(chain.deployment.address)
        owed = sum(credited(chain, rid, c.account.address) for c in [*chain.trainers[:trainers], *validators])
        assert held == want.pool_after + trainers * ETH + sum(stakes) + owed
    finally:
        chain.node.revert(snapshot)
        NONCES.reset()
