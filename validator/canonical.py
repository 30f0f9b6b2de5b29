"""One canonical model per window, and every validator follows it.

The rule is the contract's (`canonicalModel`): among a window's publications made before its deadline
(`revealEnd + publishBlocks`) by the validators that vote on the window's epoch, the model with the most of
their snapshotted stake; a tie stays with the one that got there first. It is a function of on-chain data only,
final at the deadline and unassailable earlier once it holds a strict majority, so trainers, validators and
auditors all read the same answer.

A validator scores window w against the canonical model of w − 1, never against its own aggregate when the two
differ (a payload it could not fetch, a bug, a late start): it adopts the canonical parameters (fetched by CID,
checked, decoded) and goes on. Its disagreement is on chain (its WindowPublished CID is not the canonical one),
in its store and its log; it costs that validator nothing here, and the run's liveness nothing at all."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from node.chain_view import canonical_settled
from validator.domain import ParamDict
from validator.window_inputs import RunContext, base_models, current_base_model, sorted_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowBase:
    """What window `window` is scored against: the canonical model before it, its parameters, and the bases a
    contribution may name with their staleness (0: the canonical model or another on-time candidate of w − 1)."""

    window: int
    cid: str
    params: ParamDict
    accepted: dict[str, int]
    adopted: bool  # the parameters are the canonical model's, not this validator's own aggregate


def canonical_history(ctx: RunContext, before: int, depth: int) -> dict[int, str]:
    """window → canonical model CID for the `depth` windows before `before` that have one."""
    out: dict[int, str] = {}
    for window in range(max(0, before - depth), before):
        chosen = ctx.views.canonical_model(ctx.run_id, window)
        if chosen.cid:
            out[window] = chosen.cid
    return out


def on_time_candidates(ctx: RunContext, window: int) -> set[str]:
    """Model CIDs published for `window` before its canonical deadline: a trainer that had to start before the
    canonical model was settled trained from one of them, as fresh as it could be."""
    if window < 0:
        return set()
    deadline = ctx.views.canonical_model(ctx.run_id, window).deadline
    return {p.model_cid for p in ctx.views.publications(ctx.run_id, window, reports=False).values()
            if p.block < deadline}


def ready(ctx: RunContext, window: int) -> bool:
    """Window `window` may be scored: the canonical model of the window before it is settled."""
    return window == 0 or canonical_settled(ctx.views, ctx.run_id, window - 1)


class ModelFetcher:
    """Fetch, CID-check and decode a global model (cached by CID: adoption repeats while a fork lasts)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._cache: dict[str, ParamDict] = {}

    def __call__(self, cid: str) -> ParamDict:
        if cid not in self._cache:
            data = self.ctx.blobs.cat(cid, self.ctx.config.max_model_bytes)
            params = self.ctx.payloads.decode_model(data, self.ctx.spec, self.ctx.config.max_model_bytes)
            self._cache = {cid: sorted_params(params)}  # one entry: a fork lasts a window or two
        return self._cache[cid]


def window_base(ctx: RunContext, window: int, initial_cid: str, own_cid: str, own_params: ParamDict,
                fetch: Callable[[str], ParamDict]) -> WindowBase:
    """The canonical base of `window` (see module docstring); `own_cid`/`own_params` is this validator's model
    after its previous window (or the initial model), used as is when it is the canonical one."""
    depth = ctx.config.max_stale_windows + 1
    history = canonical_history(ctx, window, depth)
    cid = current_base_model(history, initial_cid, window)
    accepted = base_models(history, initial_cid, window, ctx.config.max_stale_windows)
    for candidate in on_time_candidates(ctx, window - 1):
        accepted.setdefault(candidate, 0)
    if cid == own_cid:
        return WindowBase(window, cid, own_params, accepted, adopted=False)
    log.warning("window %d: scoring against the canonical model %s (this validator's own was %s)", window, cid,
                own_cid)
    return WindowBase(window, cid, fetch(cid), accepted, adopted=True)
