"""The demo network's fixed parts: who plays which role, the run's parameters and the deployment file (the
sponsor's setup, dataset and initial model on IPFS, is trainmarket/sponsor.py, shared with the devnet)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from base.run_config import RunConfig
from contracts.types import RunParams

ADVERSARY_ROLES = ("copier", "noise", "zero", "freerider", "stale", "poisoner", "malformed")


@dataclass(frozen=True)
class Participant:
    """One trainer identity in the demo."""

    name: str
    role: str
    account: LocalAccount
    sybil_leader: str = ""
    sybil_member: int = 0

    @property
    def honest(self) -> bool:
        return self.role == "honest"

    @property
    def address(self) -> str:
        return str(self.account.address)


def demo_account(label: str) -> LocalAccount:
    """A deterministic demo key (public knowledge: only for a local chain)."""
    return Account.from_key(keccak(text=f"trainmarket-demo/{label}"))


def participants(honest: int, sybils: int, adversaries: tuple[str, ...] = ADVERSARY_ROLES) -> list[Participant]:
    people = [Participant(f"honest-{i}", "honest", demo_account(f"honest-{i}")) for i in range(honest)]
    people += [Participant(role, role, demo_account(role)) for role in adversaries]
    if sybils:
        leader = demo_account("sybil-0").address
        people += [
            Participant(f"sybil-{i}", "sybil", demo_account(f"sybil-{i}"), leader, i) for i in range(sybils)
        ]
    return people


def run_params(config: RunConfig, window_blocks: int, reveal_blocks: int, windows_per_epoch: int) -> RunParams:
    """Each settlement phase (weight commits, then reveals) lasts a window; unbonding is the contract's minimum.
    Publications count toward a window's canonical model until the next window's reveal period is over."""
    return RunParams.dev(config.digest(), window_blocks=window_blocks, reveal_blocks=reveal_blocks,
                         windows_per_epoch=windows_per_epoch, validator_share_bps=1000)


def write_deployment(path: Path, fields: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields, indent=2, sort_keys=True))
