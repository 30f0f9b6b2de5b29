"""Run-wide agreement checks for the process scenarios, read after the run from the chain and the evaluation
reports the validators published on IPFS (not from the validators' word about themselves):

forks — windows in which the validators did not all score against the one base the rule names: the canonical
model of the latest earlier window that has one (by then final: every deadline has passed), else the run's
initial model. A window counts once, however many validators strayed.

stalled epochs — epochs that an honest trainer's served contribution fell in (revealed, and not ruled
unavailable by a quorum) but that were settled without any trainer reward although the validators' own
evaluations would pay: skipped, never settled, finalised with no ballot at all, or finalised paying trainers
nothing while a revealed ballot gives a served honest trainer weight (no median formed). An epoch whose every
ballot gives the served trainers 0 was settled as the validators agreed: the scoring rule paid nothing (early
OpenSkill ordinals are not yet positive, for instance); it is counted apart, as `unpaid_by_scoring`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from base.report import WindowReport
from contracts.client import unpack_weights
from contracts.types import Publication

if TYPE_CHECKING:
    from bench.faults.killnet import KillNet

REPORT_MAX_BYTES = 4 * 1024 * 1024


@dataclass
class Agreement:
    forks: dict[int, str] = field(default_factory=dict)  # window → what differed
    stalled: dict[int, str] = field(default_factory=dict)  # epoch → why it counts
    unpaid_by_scoring: dict[int, str] = field(default_factory=dict)  # epoch → every ballot gave served work 0
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


def revealed_report(net: KillNet, pub: Publication) -> WindowReport | None:
    """The report `pub`'s validator revealed for its window; None while sealed (revealed once the epoch's weight
    commits close; a validator that did not publish the whole epoch never reveals it)."""
    if pub.report_cid is None:
        return None
    return WindowReport.from_json(net.blobs.cat(pub.report_cid, REPORT_MAX_BYTES))


def published_bases(net: KillNet, window: int) -> dict[str, str]:
    """Validator name → the base its published report for `window` says it scored against."""
    names = {net.address(f"validator-{i}").lower(): f"validator-{i}" for i in range(len(net.validator_clients))}
    out: dict[str, str] = {}
    for validator, pub in net.views.publications(net.run_id, window).items():
        name = names.get(validator.lower())
        if name is None:  # a copier scores nothing
            continue
        report = revealed_report(net, pub)
        if report is not None:
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
    found.stalled, found.unpaid_by_scoring = stalled_epochs(net, honest, last)
    return found


def stalled_epochs(net: KillNet, honest: Iterable[str] | None, last: int) -> tuple[dict[int, str], dict[int, str]]:
    """(stalled, unpaid by scoring): epoch → why, over the epochs of windows first..`last`."""
    wpe = net.s.windows_per_epoch
    names = set(honest) if honest is not None else {p.name for p in net.people}
    addresses = {p.address.lower(): p.name for p in net.people if p.name in names}
    slots = {t.lower(): i for i, t in enumerate(net.views.trainers(net.run_id))}
    unavailable = {(int(g["args"]["window"]), str(g["args"]["trainer"]).lower())
                   for g in events(net, "PayloadUnavailable")}
    paid = {int(g["args"]["epoch"]): int(g["args"]["trainerReward"]) for g in events(net, "EpochFinalized")}
    skipped = {int(g["args"]["epoch"]) for g in events(net, "EpochSkipped")}
    ballots: dict[int, list[bytes]] = {}
    for g in events(net, "WeightsRevealed"):
        ballots.setdefault(int(g["args"]["epoch"]), []).append(bytes(g["args"]["weights"]))
    stalled: dict[int, str] = {}
    by_scoring: dict[int, str] = {}
    for epoch in range(net.first // wpe, last // wpe + 1):
        served = sorted({r.trainer.lower() for w in range(epoch * wpe, (epoch + 1) * wpe)
                         for r in net.views.reveals(net.run_id, w)
                         if r.trainer.lower() in addresses and (w, r.trainer.lower()) not in unavailable})
        if not served:
            continue
        who = [addresses[t] for t in served]
        weighted = any(_weight(b, slots[t]) for b in ballots.get(epoch, []) for t in served)
        if epoch in skipped:
            stalled[epoch] = f"epoch {epoch} skipped while {who} served their work"
        elif epoch not in paid:
            stalled[epoch] = f"epoch {epoch} never settled while {who} served their work"
        elif paid[epoch] == 0 and (weighted or not ballots.get(epoch)):
            stalled[epoch] = (f"epoch {epoch} finalised paying trainers nothing while {who} served their work and "
                              f"{len(ballots.get(epoch, []))} ballots were revealed")
        elif paid[epoch] == 0:
            by_scoring[epoch] = f"epoch {epoch}: every ballot gave {who} weight 0"
    return stalled, by_scoring


def _weight(packed: bytes, slot: int) -> int:
    """Trainer slot `slot`'s uint16 weight in a revealed vector (trailing slots may be left out: 0)."""
    _, weights = unpack_weights(packed)
    return weights[slot] if slot < len(weights) else 0


def charge(starts: list[int], window: int) -> int:
    """Index of the fault a window's finding is charged to: the last one that began at or before it."""
    return max([i for i, start in enumerate(starts) if start <= window] or [0])


@dataclass
class Charged:
    """An audit's findings per fault (by index into the faults' first windows)."""

    forks: Counter[int] = field(default_factory=Counter)
    stalled: Counter[int] = field(default_factory=Counter)
    unpaid: Counter[int] = field(default_factory=Counter)
    notes: dict[int, list[str]] = field(default_factory=dict)


def charge_findings(found: Agreement, starts: list[int], windows_per_epoch: int) -> Charged:
    """Forks charged by window, stalled and unpaid epochs by the epoch's first window (see `charge`)."""
    out = Charged()
    items = [(w, out.forks, why) for w, why in found.forks.items()]
    items += [(e * windows_per_epoch, out.stalled, why) for e, why in found.stalled.items()]
    items += [(e * windows_per_epoch, out.unpaid, why) for e, why in found.unpaid_by_scoring.items()]
    for window, counter, why in items:
        index = charge(starts, window)
        counter[index] += 1
        out.notes.setdefault(index, []).append(why)
    return out
