"""Typed values of the TrainingRun contract as Python sees them (decoded from calls and events)."""

from __future__ import annotations

from dataclasses import astuple, dataclass
from enum import IntEnum
from typing import Any

from base.units import ETH


class CommitStatus(IntEnum):
    NONE = 0
    COMMITTED = 1
    REVEALED = 2
    MISSED = 3


class SlashReason(IntEnum):
    DUPLICATE_CID = 0
    MISSED_REVEALS = 1


# The contract's caps (TrainingRun.sol constants), for defaults and for callers sizing a run.
MAX_VALIDATORS = 16
MAX_TRAINERS = 2048
MAX_WEIGHT_ENTRIES = 8192  # max_trainers × max_validators


@dataclass(frozen=True)
class RunParams:
    """What a sponsor fixes when creating a run (field order = the Solidity struct). The contract checks every
    field against its bound (contracts/README.md, "Parameters"); `publish_blocks` defaults to `window_blocks`."""

    config_digest: bytes
    window_blocks: int
    reveal_blocks: int
    windows_per_epoch: int
    grace_period_blocks: int
    unbonding_blocks: int
    validator_share_bps: int
    slash_bps: int
    miss_threshold: int
    min_trainer_stake: int
    min_validator_stake: int
    reward_per_epoch: int
    max_trainers: int = MAX_WEIGHT_ENTRIES // MAX_VALIDATORS
    max_validators: int = MAX_VALIDATORS
    publish_blocks: int | None = None
    start_delay_blocks: int = 0

    def as_tuple(self) -> tuple[Any, ...]:
        values = astuple(self)
        publish = self.window_blocks if self.publish_blocks is None else self.publish_blocks
        return (*values[:-2], publish, values[-1])

    @classmethod
    def dev(cls, config_digest: bytes, *, window_blocks: int = 10, reveal_blocks: int = 5, windows_per_epoch: int = 2,
            grace_period_blocks: int | None = None, unbonding_blocks: int | None = None, **overrides: Any
            ) -> RunParams:
        """The one preset of a development run (devnet, demo, benchmarks, tests); each caller overrides what its
        set-up needs. A settlement phase (`grace_period_blocks`) defaults to a window and unbonding to the
        contract's minimum; the stakes and rewards are the devnet's (1 ETH to train, 5 to validate, 10 per epoch).
        A run that pays real rewards chooses every field itself."""
        grace = window_blocks if grace_period_blocks is None else grace_period_blocks
        unbonding = (cls.min_unbonding_blocks(window_blocks, reveal_blocks, windows_per_epoch, grace)
                     if unbonding_blocks is None else unbonding_blocks)
        fields: dict[str, Any] = {
            "window_blocks": window_blocks, "reveal_blocks": reveal_blocks, "windows_per_epoch": windows_per_epoch,
            "grace_period_blocks": grace, "unbonding_blocks": unbonding, "validator_share_bps": 2000,
            "slash_bps": 1000, "miss_threshold": 3, "min_trainer_stake": ETH, "min_validator_stake": 5 * ETH,
            "reward_per_epoch": 10 * ETH,
        }
        return cls(config_digest=config_digest, **{**fields, **overrides})

    @property
    def epoch_blocks(self) -> int:
        return self.window_blocks * self.windows_per_epoch

    @staticmethod
    def min_unbonding_blocks(window_blocks: int, reveal_blocks: int, windows_per_epoch: int,
                             grace_period_blocks: int) -> int:
        """The contract's lower bound on unbonding: an epoch, its last reveal period and both settlement phases."""
        return windows_per_epoch * window_blocks + reveal_blocks + 2 * grace_period_blocks


OPEN_EPOCH = 2**32 - 1  # RunInfo.end_epoch of a run its sponsor has not ended


@dataclass(frozen=True)
class RunInfo:
    """The stored run (field order = the Solidity struct `Run`)."""

    start_block: int
    window_blocks: int
    reveal_blocks: int
    windows_per_epoch: int
    end_epoch: int  # OPEN_EPOCH while open
    miss_threshold: int
    slash_bps: int
    trainer_count: int  # trainer slots handed out so far (free ones included)
    min_trainer_stake: int
    min_validator_stake: int
    max_trainers: int
    max_validators: int
    validator_count: int  # active validators
    grace_period_blocks: int
    unbonding_blocks: int
    publish_blocks: int
    free_slots: int
    next_epoch: int
    validator_share_bps: int
    reward_per_epoch: int
    pool: int
    sponsor: str
    config_digest: bytes

    @property
    def ended(self) -> bool:
        return self.end_epoch != OPEN_EPOCH


@dataclass(frozen=True)
class TrainerInfo:
    stake: int
    index: int
    misses: int
    slash_count: int
    registered: bool
    unbonding_at: int  # 0 = active
    next_claim_epoch: int
    until_epoch: int  # while unbonding: the first epoch it could not work in

    @property
    def slashed(self) -> bool:
        return self.slash_count > 0

    @property
    def unbonding(self) -> bool:
        return self.unbonding_at != 0


@dataclass(frozen=True)
class ValidatorInfo:
    stake: int  # voting stake, fixed at registration
    bond: int  # what a withdrawal returns: the stake less slashes
    from_epoch: int  # first epoch it votes on
    until_epoch: int  # first epoch it no longer votes on (2**32 - 1 while active)
    credit: int  # rewards not yet claimed
    unbonding_at: int  # 0 = active
    pub_epoch: int
    pub_count: int
    full_mask: int
    served_plus_one: int  # last epoch it revealed weights for, + 1
    registered: bool

    @property
    def active(self) -> bool:
        return self.registered and self.unbonding_at == 0

    def votes_on(self, epoch: int) -> bool:
        return self.registered and self.from_epoch <= epoch < self.until_epoch


@dataclass(frozen=True)
class EpochInfo:
    reward_per_weight: int  # wei per unit of stored consensus weight
    weight_sum: int
    submissions: int  # weight vectors revealed
    finalized: bool  # settled (finalised or skipped)
    skipped: bool = False


@dataclass(frozen=True)
class Settlement:
    """The schedule and counters of the oldest unsettled epoch's settlement (`settlementOf`): weight commits in
    [opens_at, reveals_from), reveals in [reveals_from, closes_at) — from opens_at already once every vote is
    committed — and finalizeEpoch from closes_at, or once every commit is revealed and no more can come."""

    opens_at: int
    reveals_from: int
    closes_at: int
    commits: int
    reveals: int
    committed_stake: int
    epoch_stake: int

    def reveals_open(self, block: int) -> bool:
        """Whether a reveal can land in `block`."""
        start = self.opens_at if self.committed_stake >= self.epoch_stake else self.reveals_from
        return start <= block < self.closes_at

    def commits_open(self, block: int) -> bool:
        return self.opens_at <= block < self.reveals_from

    def finalizable(self, block: int) -> bool:
        closed = block >= self.reveals_from or self.committed_stake >= self.epoch_stake
        return block >= self.closes_at or (block >= self.opens_at and closed and self.reveals == self.commits)


@dataclass(frozen=True)
class Ballot:
    """A validator's weight ballot as stored: epoch, status and the hash prefix (commitment, then vector)."""

    hash_prefix: bytes
    epoch: int
    status: CommitStatus


@dataclass(frozen=True)
class HeldCredit:
    """A validator's credit of the last epoch it was credited for (`heldCredit`): held, not claimable, while the
    epoch's ballots can be disputed (`disputeBallot`); 0 once forfeited by a stake majority of disputers."""

    amount: int
    epoch: int
    disputable: bool
    forfeited: bool


@dataclass(frozen=True)
class RevealedWeights:
    validator: str
    slot: int  # position in finalizeEpoch's input
    weights: bytes  # packed big-endian uint16 per trainer slot
    block: int


@dataclass(frozen=True)
class CanonicalModel:
    """A window's canonical model by the on-chain rule (`canonicalModel`): the model CID published, before
    `deadline`, by the most stake of the validators that vote on the window's epoch (a tie stays with the one that
    got there first). `cid` is None while nothing counted was published."""

    window: int
    cid: str | None
    validator: str  # a validator whose publication of `cid` counted
    stake: int
    epoch_stake: int
    deadline: int
    final: bool  # no publication can land before the deadline any more: nothing can change it

    @property
    def majority(self) -> bool:
        """More than half of the epoch's voting stake published it."""
        return 2 * self.stake > self.epoch_stake


@dataclass(frozen=True)
class WindowBounds:
    """Commits in [start, end); reveals in [end, reveal_end)."""

    start: int
    end: int
    reveal_end: int


@dataclass(frozen=True)
class Reveal:
    trainer: str
    cid: str
    window: int
    block: int


@dataclass(frozen=True)
class Commit:
    trainer: str
    commitment: bytes
    window: int
    block: int


@dataclass(frozen=True)
class Publication:
    """A validator's publication of a window: its model CID, its sealed report commitment, and the report CID
    once revealed (`revealReports`, after the epoch's weight commits close; None before, or when not asked)."""

    validator: str
    window: int
    model_cid: str
    report_cid: str | None
    block: int
    report_commitment: bytes = b""
