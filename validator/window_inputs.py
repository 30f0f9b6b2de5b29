"""Read-only I/O of one window: reveals and commits from chain events, payloads from IPFS, the evaluation data
from the run's dataset. The loop and the audit both build `WindowInputs` here, so an auditor feeds the pure
strategy exactly what the validator fed it.

Network payloads are hostile: every fetch is CID-verified and capped at `max_payload_bytes`, decoded from
safetensors only, and every failure becomes a `Rejection` with its reason (never an exception that stops the
window)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from base.model import ModelSpec
from base.report import Rejection, RejectReason
from base.run_config import RunConfig
from contracts.views import TrainingRunViews
from node.data import BlobStore, Dataset, heldout_batches
from validator.domain import Contribution, ParamDict
from validator.eval_data import common_eval_rows, own_eval_rows
from validator.fetch import Failure, Fetched, PayloadSource, fetch_payloads
from validator.strategy import WindowInputs
from validator.timing import StageClock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedPayload:
    """What the validator needs from a trainer's payload (manifest fields + the dense Δ and its indices)."""

    run_id: int
    trainer: str
    window: int
    base_model_cid: str
    codec: str
    delta: ParamDict
    indices: dict[str, Tensor]


class PayloadFormat(Protocol):
    """The payload and model codecs (tensors/payload.py); a Protocol so the loop does not fix their module layout."""

    errors: tuple[type[Exception], ...]  # what decoding raises on a bad payload

    def decode_contribution(self, data: bytes, spec: ModelSpec, max_bytes: int) -> DecodedPayload: ...

    def encode_model(self, params: ParamDict, window: int, base_model_cid: str) -> bytes:
        """The global model produced by `window` from `base_model_cid` (deterministic bytes)."""
        ...

    def encode_initial_model(self, params: ParamDict) -> bytes:
        """The seeded initial model, byte-identical to what trainers publish when the config names none."""
        ...

    def decode_model(self, data: bytes, spec: ModelSpec, max_bytes: int) -> ParamDict: ...


class RunStore(BlobStore, PayloadSource, Protocol):
    """The IPFS operations a validator needs (ipfs.client.IpfsClient has them). `only_hash`: the CID the data
    would have, with nothing stored (a report stays sealed until it is revealed: validator/sealed_reports.py)."""

    def add(self, data: bytes, pin: bool = True, only_hash: bool = False) -> str: ...


@dataclass(frozen=True)
class RunContext:
    """Everything fixed for the run that window I/O needs."""

    views: TrainingRunViews
    run_id: int
    config: RunConfig
    dataset: Dataset
    blobs: RunStore
    payloads: PayloadFormat
    spec: ModelSpec


@dataclass(frozen=True)
class GatheredWindow:
    inputs: WindowInputs
    missed_reveals: tuple[str, ...]  # committed, never revealed (to be reported on chain)
    reveal_count: int
    well_formed: int  # revealed payloads that fetched and decoded
    unavailable: tuple[str, ...] = ()  # revealed, but nobody served the payload (to be reported on chain)
    extra: dict[str, Any] = field(default_factory=dict)


def base_models(history: Mapping[int, str], initial_cid: str, window: int, max_stale: int) -> dict[str, int]:
    """Base models a window-`window` contribution may have trained from, each with its staleness in windows:
    the model produced by the latest window before `window` (0: fresh), the one before it (1), … up to
    `max_stale`; the run's initial model counts as produced before the first window.

    Trainers train window w from the model of w−1 (node/runner.py waits for it), so fresh is the rule; a base up
    to `max_stale` windows older is what a trainer gets when the model of w−1 came after its sync deadline. The
    rule for such an update: it is evaluated and, if it helps, applied on the current model like a fresh one
    (asynchronous SGD with bounded delay), so a stale direction that no longer lowers the loss scores nothing and
    stays out of the aggregate. Older bases are rejected as stale."""
    produced = [initial_cid] + [history[w] for w in sorted(history) if w < window]
    out: dict[str, int] = {}
    for age, cid in enumerate(reversed(produced[-(max_stale + 1):])):
        out.setdefault(cid, age)
    return out


def current_base_model(history: Mapping[int, str], initial_cid: str, window: int) -> str:
    """The global model window `window` is evaluated against: the most recent one produced before it."""
    before = [w for w in history if w < window]
    return history[max(before)] if before else initial_cid


def closing_block_hash(views: TrainingRunViews, run_id: int, window: int) -> bytes:
    """Hash of the last block of the window's reveal period: it did not exist when trainers committed."""
    bounds = views.window_bounds(run_id, window)
    block = views.web3.eth.get_block(bounds.reveal_end - 1)
    return bytes(block["hash"])


def gather_window(ctx: RunContext, window: int, base_cid: str, base_params: ParamDict,
                  allowed_bases: Mapping[str, int], clock: StageClock | None = None) -> GatheredWindow:
    """Build the strategy's inputs for `window` (whose reveal period must be over). `clock` times the fetch
    and decode stages (validator/timing.py)."""
    clock = clock or StageClock()
    reveals = ctx.views.reveals(ctx.run_id, window)
    revealed = {r.trainer.lower() for r in reveals}
    committed = sorted({c.trainer.lower() for c in ctx.views.commits(ctx.run_id, window)} | revealed)
    missed = sorted(set(committed) - revealed)
    rejections = [Rejection(t, window, RejectReason.MISSING_REVEAL, "committed but never revealed") for t in missed]
    contributions: list[Contribution] = []
    unavailable: list[str] = []
    # Fetched concurrently, retried until one deadline for the window (validator/fetch.py); the results come back
    # in reveal order, so the outcome does not depend on which fetch finishes first.
    with clock.stage("fetch"):
        fetched = fetch_payloads(ctx.blobs, [(r.trainer.lower(), r.cid) for r in reveals],
                                 ctx.config.max_payload_bytes, ctx.config.payload_fetch_seconds)
    with clock.stage("decode"):
        decoded_all: list[Contribution | Rejection] = []
        for got in fetched:
            if got.failure == Failure.UNAVAILABLE:
                unavailable.append(got.trainer)
                decoded_all.append(Rejection(got.trainer, window, RejectReason.UNAVAILABLE,
                                             "no one served the payload before the fetch deadline", got.cid))
            else:
                decoded_all.append(decode_contribution(ctx, got, window))
    for decoded in decoded_all:
        if isinstance(decoded, Rejection):
            rejections.append(decoded)
        else:
            contributions.append(decoded)
    block_hash = closing_block_hash(ctx.views, ctx.run_id, window)
    common, owners = common_eval_rows(ctx.dataset, ctx.config, committed, window, block_hash)
    well_formed = len(contributions)
    inputs = WindowInputs(
        window=window,
        block_hash="0x" + block_hash.hex(),
        base_model_cid=base_cid,
        stale_bases={cid: age for cid, age in allowed_bases.items() if cid != base_cid},
        params=base_params,
        contributions=sorted(contributions, key=lambda c: c.trainer),
        own_batches={c.trainer: own_eval_rows(ctx.dataset, ctx.config, c.trainer, window, block_hash)
                     for c in contributions},
        common_batch=common,
        common_owners=owners,
        prior_rejections=tuple(sorted(rejections, key=lambda r: (r.trainer, r.reason.value))),
    )
    return GatheredWindow(inputs, tuple(missed), len(reveals), well_formed, tuple(sorted(unavailable)))


def decode_contribution(ctx: RunContext, got: Fetched, window: int) -> Contribution | Rejection:
    """Verify and decode one fetched payload; any failure is a rejection with its reason."""
    limit = ctx.config.max_payload_bytes
    trainer, cid = got.trainer, got.cid
    if got.failure == Failure.TOO_LARGE or (got.data is not None and len(got.data) > limit):
        return Rejection(trainer, window, RejectReason.MALFORMED, f"payload over the run's {limit}-byte cap", cid)
    if got.data is None:
        return Rejection(trainer, window, RejectReason.MALFORMED, "not a CID", cid)
    try:
        payload = ctx.payloads.decode_contribution(got.data, ctx.spec, limit)
    except ctx.payloads.errors as err:
        return Rejection(trainer, window, RejectReason.MALFORMED, f"undecodable: {err}"[:500], cid)
    if (payload.run_id, payload.trainer.lower(), payload.window) != (ctx.run_id, trainer, window):
        detail = f"manifest names run {payload.run_id} trainer {payload.trainer} window {payload.window}"
        return Rejection(trainer, window, RejectReason.MALFORMED, detail[:500], cid)
    if payload.codec != ctx.config.codec:
        detail = f"codec {payload.codec!r} is not the run's {ctx.config.codec!r}"
        return Rejection(trainer, window, RejectReason.MALFORMED, detail[:500], cid)
    # The base the payload names travels on unchanged: the strategy's staleness filter judges it.
    return Contribution(trainer=trainer, window=window, cid=cid, base_model_cid=payload.base_model_cid,
                        delta=payload.delta, indices=payload.indices)


def model_spec_of(params: ParamDict) -> dict[str, tuple[tuple[int, ...], str]]:
    return {n: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in params.items()}


def sorted_params(params: Mapping[str, Tensor]) -> ParamDict:
    """A CPU float32 contiguous copy in name order: the canonical form that is encoded and hashed."""
    return {n: params[n].detach().to("cpu", torch.float32).contiguous() for n in sorted(params)}


MONITOR_SEQS = 64


def monitor_batch(dataset: Dataset, config: RunConfig) -> Tensor:
    """A fixed held-out batch for the global model's loss curve. The scoring batch changes every window (it is
    seeded by the closing block hash) and is small, so its loss jumps from window to window; this one is the
    same for every window of the run and for every validator, so consecutive figures are comparable."""
    seed = b"trainmarket/monitor|" + str(config.run_seed).encode()
    return heldout_batches(dataset, seed, MONITOR_SEQS, config.seq_len)
