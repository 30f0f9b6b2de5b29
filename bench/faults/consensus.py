"""Run-wide agreement checks for the process scenarios, read after the run from the chain and the evaluation
reports the validators published on IPFS (not from the validators' word about themselves):

forks — windows in which the validators did not all score against the one base the rule names: the canonical
model of the latest earlier window that has one (by then final: every deadline has passed), else the run's
initial model. A window counts once, however many validators strayed.

stalled epochs — epochs that an honest trainer's served contribution fell in (revealed, and not ruled
unavailable by a quorum) but that were settled without any trainer reward: finalised paying trainers nothing,
skipped, or never settled."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from validator.domain import WindowReport

if TYPE_CHECKING:
    from bench.faults.killnet import KillNet

REPORT_MAX_BYTES = 4 * 1024 * 1024


@dataclass
class Agreement:
    forks: dict[int, str] = field(default_factory=dict)  # window → what differed
    stalled: dict[int, str] = field(default_factory=dict)  # epoch → why it counts
    bases: dict[int, dict[str, str]] = field(default_factory=dict)  # window → validator name → base it scored
    no_canonical: list[int] = field(default_factory=list)  # windows nobody published before their deadline
    adopted: dict[str, list[int]] = field(default_factory=dict)  # validator → windows it scored on an adopted base


def events(net: KillNet, name: str) -> list[Any]:
    logs = getattr(net.views.contract.events, name).get_logs(
        argument_filters={"runId": net.run_id}, from_block=net.views.from_block, to_block="latest")
    return list(logs)


def expected_base(net: KillNet, window: int) -> str:
    """The base the rule names for `window` (validator/canonical.py, node/chain_view.py)."""
    for earlier in range(window - 1, window - 2 - net.config.max_stale_windows, -1):
        if earlier >= 0 and (cid := net.views.canonical_model(net.run_id, earlier).cid):
            return cid
    return net.config.initial_model_cid


def published_bases(net: KillNet, window: int) -> dict[str, str]:
    """Validator name → the base its published report for `window` says it scored against."""
    names = {net.address(f"validator-{i}").lower(): f"validator-{i}" for i in range(len(net.validator_clients))}
    out: dict[str, str] = {}
    for validator, pub in net.views.publications(net.run_id, window).items():
        name = names.get(validator.lower())
        if name is not None:  # a copier republishes someone else's report: it scored nothing
            report = WindowReport.from_json(net.blobs.cat(pub.report_cid, REPORT_MAX_BYTES))
            out[name] = report.inputs.base_model_cid
    return out


def audit(net: KillNet, honest: Iterable[str] | None = None, through: int | None = None) -> Agreement:
    """Forks over windows first..`through` (default settle_through) and stalled epochs over the epochs they
    span; `honest`: trainer names whose served work must be paid for (default: every trainer)."""
    last = net.settle_through if through is None else through
    found = Agreement()
    for window in range(net.first, last + 1):
        bases = found.bases[window] = published_bases(net, window)
        want = expected_base(net, window)
        if window > net.first and not net.views.canonical_model(net.run_id, window - 1).cid:
            found.no_canonical.append(window - 1)
        strays = {name: base for name, base in sorted(bases.items()) if base != want}
        if strays:
            found.forks[window] = f"window {window}: canonical base {want}, but {strays} scored on others"
        for name in bases:
            if net.store_rows(name, "SELECT value FROM kv WHERE key=?", (f"window:{window}:adopted_base",)):
                found.adopted.setdefault(name, []).append(window)
    found.stalled = stalled_epochs(net, honest, last)
    return found


def stalled_epochs(net: KillNet, honest: Iterable[str] | None, last: int) -> dict[int, str]:
    wpe = net.s.windows_per_epoch
    names = set(honest) if honest is not None else {p.name for p in net.people}
    addresses = {p.address.lower(): p.name for p in net.people if p.name in names}
    unavailable = {(int(g["args"]["window"]), str(g["args"]["trainer"]).lower())
                   for g in events(net, "PayloadUnavailable")}
    paid = {int(g["args"]["epoch"]): int(g["args"]["trainerReward"]) for g in events(net, "EpochFinalized")}
    skipped = {int(g["args"]["epoch"]) for g in events(net, "EpochSkipped")}
    out: dict[int, str] = {}
    for epoch in range(net.first // wpe, last // wpe + 1):
        served = sorted({addresses[r.trainer.lower()] for w in range(epoch * wpe, (epoch + 1) * wpe)
                         for r in net.views.reveals(net.run_id, w)
                         if r.trainer.lower() in addresses and (w, r.trainer.lower()) not in unavailable})
        if not served:
            continue
        if epoch in skipped:
            out[epoch] = f"epoch {epoch} skipped while {served} served their work"
        elif epoch not in paid:
            out[epoch] = f"epoch {epoch} never settled while {served} served their work"
        elif paid[epoch] == 0:
            out[epoch] = f"epoch {epoch} finalised paying trainers nothing while {served} served their work"
    return out


def charge(starts: list[int], window: int) -> int:
    """Index of the fault a window's finding is charged to: the last one that began at or before it."""
    return max([i for i, start in enumerate(starts) if start <= window] or [0])
