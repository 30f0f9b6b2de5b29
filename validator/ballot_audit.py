"""The cheap half of `validator audit`: does a validator's revealed ballot for an epoch follow from its own revealed
evaluation reports of the epoch? (The expensive half, replaying the windows that produced the reports, is
validator/audit.py.) Honest validators run this on every peer's ballot and dispute the ones that do not follow
(validator/disputes.py); it needs the chain and IPFS only, not the model or the data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from base.report import ReportFormatError, WindowReport
from contracts.client import unpack_weights
from ipfs.errors import IpfsError, IpfsRequestFailed, IpfsTimeout, IpfsUnavailable
from validator.domain import ValidatorError
from validator.settlement import ballot_numbers
from validator.window_inputs import RunContext

REPORT_MAX_BYTES = 16 * 1024 * 1024


class AuditError(ValidatorError):
    """The audit cannot start: nothing published by that validator, or its report cannot be fetched/parsed."""


class ReportUnfetchable(AuditError):
    """A revealed report's CID is served by nobody (yet): a timeout or a refusal of the daemon. It may be served
    later (its validator pins after revealing), so a dispute waits before counting it as a mismatch."""


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


def publication(ctx: RunContext, window: int, validator: str) -> tuple[str, str | None] | None:
    """(model CID, report CID) `validator` published for `window`; the report CID is None until revealed."""
    for who, pub in ctx.views.publications(ctx.run_id, window).items():
        if who.lower() == validator.lower():
            return pub.model_cid, pub.report_cid
    return None


def fetch_report(ctx: RunContext, cid: str) -> WindowReport:
    try:
        data = ctx.blobs.cat(cid, REPORT_MAX_BYTES)
    except (IpfsTimeout, IpfsRequestFailed) as err:
        raise ReportUnfetchable(f"report {cid} cannot be fetched: {err}") from err
    try:
        return WindowReport.from_json(data)
    except ReportFormatError as err:
        raise AuditError(f"report {cid} is not a valid window report: {err}") from err


def audit_ballot(ctx: RunContext, epoch: int, validator: str) -> list[Check]:
    """The ballot `validator` revealed for `epoch` (payout and weight vector) against the one its own revealed
    reports of the epoch give (validator/settlement.ballot_numbers): a ballot that does not follow from the
    validator's reports (copied, lagged or guessed) is a mismatch, and so is a report that is missing, sealed or
    unreadable. Nothing to check before the ballot is revealed. Trainer slots are read as they were at the reveal.
    Raises ReportUnfetchable when a report cannot be fetched (yet), IpfsUnavailable when our own daemon is down."""
    revealed = [r for r in ctx.views.revealed_weights(ctx.run_id, epoch) if r.validator.lower() == validator.lower()]
    if not revealed:
        return []
    per_epoch = ctx.views.get_run(ctx.run_id).windows_per_epoch
    reports = []
    for w in range(epoch * per_epoch, (epoch + 1) * per_epoch):
        published = publication(ctx, w, validator)
        if published is None or published[1] is None:  # a voter published every window of its epoch
            state = "not published" if published is None else "sealed"
            return [Check(f"ballot[epoch {epoch}] report of window {w}", state, "revealed", False)]
        try:
            reports.append(fetch_report(ctx, published[1]))
        except (IpfsUnavailable, ReportUnfetchable):
            raise  # our own daemon is down, or nobody serves it yet: nothing is known about the report
        except (AuditError, IpfsError) as err:  # not a report, wrong bytes, too large
            return [Check(f"ballot[epoch {epoch}] report of window {w}", str(err), "a readable report", False)]
    _, vector, payout = ballot_numbers(reports, ctx.views.trainers(ctx.run_id, block=revealed[0].block))
    got_payout, got_vector = unpack_weights(revealed[0].weights)
    size = max(len(vector), len(got_vector))  # trailing zero weights may be left out
    want_vector, got_vector = vector + [0] * (size - len(vector)), got_vector + [0] * (size - len(got_vector))
    return [Check(f"ballot[epoch {epoch}].payout", got_payout, payout, got_payout == payout),
            Check(f"ballot[epoch {epoch}].weights", got_vector, want_vector, got_vector == want_vector)]
