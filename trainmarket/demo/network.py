"""The demo network's fixed parts: who plays which role, the run's parameters, and the sponsor's setup
(dataset and initial model on IPFS, config digest on chain, stakes registered)."""

from __future__ import annotations

import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from base.model import build_model, model_spec
from base.run_config import RunConfig
from contracts.types import RunParams
from ipfs.client import IpfsClient
from node.data import build_dataset, collect_text, publish_dataset
from node.payloads import RunPayloads

ETH = 10**18
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


def demo_corpus(max_bytes: int) -> list[tuple[str, bytes]]:
    """Real text with no download: the interpreter's own standard library, up to `max_bytes`."""
    texts: list[tuple[str, bytes]] = []
    total = 0
    for name, data in collect_text([Path(sysconfig.get_paths()["stdlib"])]):
        texts.append((name, data))
        total += len(data)
        if total >= max_bytes:
            break
    return texts


def publish_run_config(blobs: IpfsClient, base: RunConfig, corpus_bytes: int) -> tuple[RunConfig, str]:
    """Dataset and initial model to IPFS, then the config that names both; returns (config, config CID)."""
    built = build_dataset(demo_corpus(corpus_bytes), shard_bytes=256 * 1024, heldout_fraction=0.1)
    dataset_cid = publish_dataset(blobs, built)
    config = base.model_copy(update={"dataset_cid": dataset_cid})
    model = build_model(config)
    params = {name: p.detach().float().cpu() for name, p in model.named_parameters()}
    # The initial model exists before the run (its CID is part of the config the run fixes): run id 0.
    initial_cid = blobs.add(RunPayloads(config, 0, model_spec(model)).encode_initial_model(params))
    config = config.model_copy(update={"initial_model_cid": initial_cid})
    return config, blobs.add(config.to_json_bytes())


def run_params(config: RunConfig, window_blocks: int, reveal_blocks: int, windows_per_epoch: int) -> RunParams:
    """Each settlement phase (weight commits, then reveals) lasts a window; unbonding is the contract's minimum.
    Publications count toward a window's canonical model until the next window's reveal period is over."""
    return RunParams(
        config_digest=config.digest(),
        window_blocks=window_blocks,
        reveal_blocks=reveal_blocks,
        windows_per_epoch=windows_per_epoch,
        grace_period_blocks=window_blocks,
        unbonding_blocks=RunParams.min_unbonding_blocks(window_blocks, reveal_blocks, windows_per_epoch, window_blocks),
        validator_share_bps=1000,
        slash_bps=1000,
        miss_threshold=3,
        min_trainer_stake=ETH,
        min_validator_stake=5 * ETH,
        reward_per_epoch=10 * ETH,
        publish_blocks=window_blocks,
    )


def write_deployment(path: Path, fields: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields, indent=2, sort_keys=True))
