"""Typed values of the TrainingRun contract as Python sees them (decoded from calls and events)."""

from __future__ import annotations

from dataclasses import astuple, dataclass
from enum import IntEnum
from typing import Any


class CommitStatus(IntEnum):
    NONE = 0
    COMMITTED = 1
    REVEALED = 2
    MISSED = 3


class SlashReason(IntEnum):
    DUPLICATE_CID = 0
    MISSED_REVEALS = 1


@dataclass(frozen=True)
class RunParams:
    """What a sponsor fixes when creating a run (field order = the Solidity struct)."""

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

    def as_tuple(self) -> tuple[Any, ...]:
        return astuple(self)


@dataclass(frozen=True)
class RunInfo:
    start_block: int
    window_blocks: int
    reveal_blocks: int
    min_trainer_stake: int
    windows_per_epoch: int
    grace_period_blocks: int
    unbonding_blocks: int
    validator_share_bps: int
    slash_bps: int
    miss_threshold: int
    trainer_count: int
    validator_count: int
    next_epoch: int
    min_validator_stake: int
    reward_per_epoch: int
    pool: int
    sponsor: str
    config_digest: bytes


@dataclass(frozen=True)
class TrainerInfo:
    stake: int
    index: int
    misses: int
    slash_count: int
    registered: bool
    unbonding_at: int  # 0 = active
    next_claim_epoch: int

    @property
    def slashed(self) -> bool:
        return self.slash_count > 0

    @property
    def unbonding(self) -> bool:
        return self.unbonding_at != 0


@dataclass(frozen=True)
class ValidatorInfo:
    stake: int
    credit: int  # rewards not yet claimed
    unbonding_at: int  # 0 = active
    next_submit_epoch: int
    registered: bool

    @property
    def active(self) -> bool:
        return self.registered and self.unbonding_at == 0


@dataclass(frozen=True)
class EpochInfo:
    reward_per_weight: int  # wei per unit of stored consensus weight
    weight_sum: int
    submissions: int
    finalized: bool


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
    validator: str
    window: int
    model_cid: str
    report_cid: str
    block: int
