"""What the trainer reads from the chain, as pure functions over typed values where possible: the window
clock (from the run's fixed block parameters, so no RPC per question), which global model a window trains
from, and the deployment file that tells a node where the contract and the run's config are."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3.exceptions import Web3Exception

from contracts.errors import ChainUnreachable, DeploymentError
from contracts.types import Publication, RunInfo
from contracts.views import TrainingRunViews


@dataclass(frozen=True)
class WindowClock:
    """Window `w` accepts commits in blocks [start + w·window_blocks, +window_blocks) and reveals in the
    `reveal_blocks` after it — the same arithmetic as the contract's windowOfBlock / windowBounds."""

    start_block: int
    window_blocks: int
    reveal_blocks: int

    @classmethod
    def of(cls, run: RunInfo) -> WindowClock:
        return cls(run.start_block, run.window_blocks, run.reveal_blocks)

    def window_of(self, block: int) -> int:
        """The window `block` belongs to; blocks before the run's start count as window 0 not yet open."""
        return max(0, (block - self.start_block) // self.window_blocks)

    def start(self, window: int) -> int:
        return self.start_block + window * self.window_blocks

    def end(self, window: int) -> int:
        """First block after the commit period = first block of the reveal period."""
        return self.start(window + 1)

    def reveal_end(self, window: int) -> int:
        """First block in which a reveal of `window` is refused."""
        return self.end(window) + self.reveal_blocks

    def can_commit(self, window: int, block: int) -> bool:
        return self.start(window) <= block < self.end(window)

    def can_reveal(self, window: int, block: int) -> bool:
        return self.end(window) <= block < self.reveal_end(window)


def choose_published_model(publications: Iterable[Publication], stakes: Mapping[str, int]) -> str | None:
    """The model CID the most validator stake published for one window; ties go to the lowest CID, so every
    node picks the same one. Validators missing from `stakes` count with zero stake."""
    weight: dict[str, int] = {}
    for pub in publications:
        if pub.model_cid:
            weight[pub.model_cid] = weight.get(pub.model_cid, 0) + stakes.get(pub.validator, 0)
    if not weight:
        return None
    return min(weight, key=lambda cid: (-weight[cid], cid))


def base_model_for(published: Mapping[int, str], initial_cid: str, window: int) -> tuple[str, int | None]:
    """(CID, window it came from) of the global model window `window` trains from: the one published for
    the most recent earlier window, else the run's initial model (window None). A node that fell behind
    thus jumps to the latest model instead of replaying windows."""
    earlier = [w for w in published if w < window]
    if not earlier:
        return initial_cid, None
    latest = max(earlier)
    return published[latest], latest


def published_models(views: TrainingRunViews, run_id: int, before_window: int) -> dict[int, str]:
    """window → chosen model CID for every window < `before_window` that has a publication (one log query)."""
    try:
        logs = views.contract.events.WindowPublished.get_logs(
            argument_filters={"runId": run_id}, from_block=views.from_block, to_block="latest"
        )
    except (OSError, Web3Exception) as err:
        raise ChainUnreachable(views.rpc_url, str(err)) from err
    by_window: dict[int, list[Publication]] = {}
    for g in logs:
        window = int(g["args"]["window"])
        if window >= before_window:
            continue
        by_window.setdefault(window, []).append(
            Publication(str(g["args"]["validator"]), window, str(g["args"]["modelCid"]),
                        str(g["args"]["reportCid"]), int(g["blockNumber"]))
        )
    validators = {p.validator for pubs in by_window.values() for p in pubs}
    stakes = {v: views.validator_info(run_id, v).stake for v in validators}
    chosen = {w: choose_published_model(pubs, stakes) for w, pubs in by_window.items()}
    return {w: cid for w, cid in chosen.items() if cid}


@dataclass(frozen=True)
class NodeDeployment:
    """The fields of a deployment file a node reads. `config_cid` and `run_id` are written by devnet/demo."""

    address: str
    block: int
    rpc_url: str
    config_cid: str
    run_id: int | None


def read_deployment(path: Path) -> NodeDeployment:
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        run_id = raw.get("run_id")
        return NodeDeployment(
            address=str(raw["address"]),
            block=int(raw.get("block", 0)),
            rpc_url=str(raw.get("rpc_url", "")),
            config_cid=str(raw.get("config_cid", "")),
            run_id=None if run_id is None else int(run_id),
        )
    except FileNotFoundError as err:
        hint = "run `trainmarket devnet` first or pass --deployment"
        raise DeploymentError(f"no deployment file at {path}: {hint}") from err
    except (ValueError, KeyError, TypeError) as err:
        raise DeploymentError(f"deployment file {path} is invalid: {err}") from err
