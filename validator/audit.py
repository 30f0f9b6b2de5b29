"""Third-party audit of a validator's published window: recompute every number of its report and its model CID.

A window's scores depend on the validator's state (ratings, moving averages, recent fingerprints, the outer
optimiser's momentum), and that state is a deterministic function of every window it processed. So the audit
replays the pure strategy over the validator's windows, from the first one it published (fresh state, the
run's initial model) to the audited one, feeding it the very inputs the loop builds (window_inputs.py: chain
reveals, CID-verified payloads, the run's dataset, the closing block hash). Each replayed window's model CID
is checked against the one on chain; the audited window's report is compared number by number."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from base.report import ReportFormatError, WindowReport
from contracts.client import unpack_weights
from ipfs.errors import IpfsError, IpfsUnavailable
from validator import canonical
from validator.domain import ValidatorError
from validator.loop import build_strategy, initial_model
from validator.settlement import ballot_numbers
from validator.strategy import ValidatorState
from validator.window_inputs import (
    RunContext,
    gather_window,
    sorted_params,
)

REPORT_MAX_BYTES = 16 * 1024 * 1024


class AuditError(ValidatorError):
    """The audit cannot start: nothing published by that validator, or its report cannot be fetched/parsed."""


@dataclass(frozen=True)
class Check:
    path: str  # e.g. "scores[0x…].s_i", "model_cid[window 3]"
    published: Any
    recomputed: Any
    ok: bool

    def line(self) -> str:
        verdict = "match   " if self.ok else "MISMATCH"
        detail = repr(self.published) if self.ok else f"published {self.published!r}, recomputed {self.recomputed!r}"
        return f"{verdict} {self.path} = {detail}"


@dataclass(frozen=True)
class AuditResult:
    window: int
    validator: str
    replayed_from: int
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def mismatches(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)


def _flatten(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key in sorted(value):
            yield from _flatten(value[key], f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{path}[{i}]")
    else:
        yield path, value


def _keyed(report: WindowReport) -> dict[str, Any]:
    """The report as a dict whose scores/rejections are keyed by trainer, so one missing entry does not shift
    every later comparison."""
    raw = asdict(report)
    raw["scores"] = {s["trainer"]: s for s in raw["scores"]}
    raw["rejections"] = {f"{r['trainer']}/{r['reason']}": r for r in raw["rejections"]}
    return raw


def _same(a: Any, b: Any, rtol: float, atol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            return False
        return math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=atol)
    return bool(a == b)


def compare_reports(published: WindowReport, recomputed: WindowReport, rtol: float = 1e-9, atol: float = 1e-12
                    ) -> list[Check]:
    """Every leaf of both reports, paired by path: present in one only, or different → a mismatch."""
    left = dict(_flatten(_keyed(published), ""))
    right = dict(_flatten(_keyed(recomputed), ""))
    missing = object()
    checks = []
    for path in sorted(set(left) | set(right)):
        a, b = left.get(path, missing), right.get(path, missing)
        ok = a is not missing and b is not missing and _same(a, b, rtol, atol)
        checks.append(Check(path, None if a is missing else a, None if b is missing else b, ok))
    return checks


def first_published_window(ctx: RunContext, validator: str, up_to: int) -> int:
    for window in range(up_to + 1):
        if _publication(ctx, window, validator) is not None:
            return window
    raise AuditError(f"validator {validator} published nothing in windows 0..{up_to}")


def _publication(ctx: RunContext, window: int, validator: str) -> tuple[str, str | None] | None:
    """(model CID, report CID) `validator` published for `window`; the report CID is None until revealed."""
    for who, pub in ctx.views.publications(ctx.run_id, window).items():
        if who.lower() == validator.lower():
            return pub.model_cid, pub.report_cid
    return None


def fetch_report(ctx: RunContext, cid: str) -> WindowReport:
    try:
        return WindowReport.from_json(ctx.blobs.cat(cid, REPORT_MAX_BYTES))
    except ReportFormatError as err:
        raise AuditError(f"report {cid} is not a valid window report: {err}") from err


def sole_publisher(ctx: RunContext, window: int) -> str:
    publishers = sorted(ctx.views.publications(ctx.run_id, window))
    if len(publishers) != 1:
        raise AuditError(f"window {window} has {len(publishers)} publishers {publishers}; pick one with --validator")
    return publishers[0]


def audit_window(ctx: RunContext, window: int, validator: str, from_window: int | None = None,
                 rtol: float = 1e-9, atol: float = 1e-12, device: torch.device | str = "cpu") -> AuditResult:
    """Replay `validator`'s windows up to `window` and compare (see the module docstring)."""
    published = _publication(ctx, window, validator)
    if published is None:
        raise AuditError(f"validator {validator} published nothing for window {window}")
    if published[1] is None:
        raise AuditError(f"validator {validator}'s report of window {window} is still sealed: it is revealed once "
                         "the window's epoch's weight commits are closed")
    report = fetch_report(ctx, published[1])
    start = first_published_window(ctx, validator, window) if from_window is None else from_window
    strategy = build_strategy(ctx.config, device)
    initial_cid, params = initial_model(ctx)
    own_cid = initial_cid
    fetch = canonical.ModelFetcher(ctx)
    state = ValidatorState()
    checks: list[Check] = []
    recomputed: WindowReport | None = None
    for w in range(start, window + 1):
        # The validator scored each window against the canonical model before it (validator/canonical.py).
        base = canonical.window_base(ctx, w, initial_cid, own_cid, params, fetch)
        gathered = gather_window(ctx, w, base.cid, base.params, base.accepted)
        result, new_params, state = strategy.score_window(gathered.inputs, state)
        params = sorted_params(new_params)
        model_cid = ctx.blobs.add(ctx.payloads.encode_model(params, w, base.cid))
        own_cid = model_cid
        on_chain = _publication(ctx, w, validator)
        if on_chain is not None and w < window:
            checks.append(Check(f"model_cid[window {w}]", on_chain[0], model_cid, on_chain[0] == model_cid))
        recomputed = WindowReport(**{**{f: getattr(result, f) for f in result.__dataclass_fields__},
                                     "model_cid": model_cid})
    assert recomputed is not None
    checks.append(Check(f"model_cid[window {window}] on chain", published[0], recomputed.model_cid,
                        published[0] == recomputed.model_cid))
    checks += compare_reports(report, recomputed, rtol, atol)
    checks += audit_ballot(ctx, window // ctx.views.get_run(ctx.run_id).windows_per_epoch, validator)
    return AuditResult(window, validator, start, tuple(checks))


def audit_ballot(ctx: RunContext, epoch: int, validator: str) -> list[Check]:
    """The ballot `validator` revealed for `epoch` (payout and weight vector) against the one its own revealed
    reports of the epoch give (validator/settlement.ballot_numbers): a ballot that does not follow from the
    validator's reports (copied, lagged or guessed) is a mismatch, and so is a report that is missing, sealed or
    unreadable. Nothing to check before the ballot is revealed. Trainer slots are read as they were at the reveal."""
    revealed = [r for r in ctx.views.revealed_weights(ctx.run_id, epoch) if r.validator.lower() == validator.lower()]
    if not revealed:
        return []
    per_epoch = ctx.views.get_run(ctx.run_id).windows_per_epoch
    reports = []
    for w in range(epoch * per_epoch, (epoch + 1) * per_epoch):
        published = _publication(ctx, w, validator)
        if published is None or published[1] is None:  # a voter published every window of its epoch
            state = "not published" if published is None else "sealed"
            return [Check(f"ballot[epoch {epoch}] report of window {w}", state, "revealed", False)]
        try:
            reports.append(fetch_report(ctx, published[1]))
        except IpfsUnavailable:
            raise  # our own daemon is down: nothing is known about the report
        except (AuditError, IpfsError) as err:  # unfetchable (a made-up CID times out), not a report, wrong bytes
            return [Check(f"ballot[epoch {epoch}] report of window {w}", str(err), "a readable report", False)]
    _, vector, payout = ballot_numbers(reports, ctx.views.trainers(ctx.run_id, block=revealed[0].block))
    got_payout, got_vector = unpack_weights(revealed[0].weights)
    size = max(len(vector), len(got_vector))  # trailing zero weights may be left out
    want_vector, got_vector = vector + [0] * (size - len(vector)), got_vector + [0] * (size - len(got_vector))
    return [Check(f"ballot[epoch {epoch}].payout", got_payout, payout, got_payout == payout),
            Check(f"ballot[epoch {epoch}].weights", got_vector, want_vector, got_vector == want_vector)]


def render(result: AuditResult, only_mismatches: bool = False) -> str:
    lines = [c.line() for c in result.checks if not (only_mismatches and c.ok)]
    verdict = "PASS" if result.ok else f"FAIL ({len(result.mismatches)} mismatches)"
    lines.append(f"audit of window {result.window} by {result.validator} (replayed from window "
                 f"{result.replayed_from}): {len(result.checks)} numbers checked, {verdict}")
    return "\n".join(lines)


def as_json(result: AuditResult) -> str:
    return json.dumps({"window": result.window, "validator": result.validator, "ok": result.ok,
                       "mismatches": [asdict(c) for c in result.mismatches]}, default=str)
