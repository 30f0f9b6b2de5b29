"""What the trainer reads from the chain, as pure functions over typed values where possible: the window
clock (from the run's fixed block parameters, so no RPC per question), which global model a window trains
from, and the deployment file that tells a node where the contract and the run's config are."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.errors import DeploymentError
from contracts.views import TrainingRunViews

MAX_LOOKBACK = 64  # windows a node looks back for a canonical model before falling back to the initial one


def base_model_for(published: Mapping[int, str], initial_cid: str, window: int) -> tuple[str, int | None]:
    """(CID, window it came from) of the global model window `window` trains from: the one chosen for the
    most recent earlier window, else the run's initial model (window None). A node that fell behind thus jumps
    to the latest model instead of replaying windows."""
    earlier = [w for w in published if w < window]
    if not earlier:
        return initial_cid, None
    latest = max(earlier)
    return published[latest], latest


def canonical_models(views: TrainingRunViews, run_id: int, before_window: int, depth: int = MAX_LOOKBACK
                     ) -> dict[int, str]:
    """window → model CID for the latest window before `before_window` that has a canonical model by the
    contract's rule (`canonicalModel`: the most on-time stake of the window's voting validators; final at its
    deadline, unassailable once it holds a majority), looking back at most `depth` windows; {} when none has
    one (train from the initial model). A window whose canonical model is not settled yet counts with its
    current leader: a node that cannot wait any longer trains from it and names it as its base."""
    for window in range(before_window - 1, max(-1, before_window - 1 - depth), -1):
        chosen = views.canonical_model(run_id, window)
        if chosen.cid:
            return {window: chosen.cid}
    return {}


def canonical_settled(views: TrainingRunViews, run_id: int, window: int) -> bool:
    """The canonical model of `window` can no longer change: a strict majority of the epoch's voting stake
    published it, or its publication deadline has passed."""
    chosen = views.canonical_model(run_id, window)
    return chosen.final or (chosen.cid is not None and chosen.majority)


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
