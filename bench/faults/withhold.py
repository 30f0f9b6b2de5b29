"""A trainer serves its payload to some validators only, several windows in a row, and the validators still
agree on one model per window, report the payload unavailable exactly where they could not fetch it, and turn
it into a miss exactly when a quorum (more than half the epoch's stake) could not.

The network has three validators of equal stake. Validators 1 and 2 reach IPFS through a FaultProxy that
answers a request for the victim's payload of a chosen window the way a daemon answers for content nobody
provides ("request timed out"); the proxy recognises the payload by its manifest (trainer, window), so the
schedule is fixed before the run and no race with the validators' fetches is possible. Windows come in runs of
RUN_LENGTH of one kind, alternating:
  one_validator — fetchable by validator-0 only: two of three report it, a quorum: a miss for the trainer;
  two_validators — withheld from validator-2 only: one report, a third of the stake: no quorum, no miss.
Judged per window from the chain (UnavailabilityReported, PayloadUnavailable, RevealMissed, the canonical
model) and the reports each validator published on IPFS."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from base.report import RejectReason, WindowReport
from bench.faults import FaultOutcome, consensus
from bench.faults.killnet import FaultRunError, KillNet
from bench.faults.proxy import Fault, FaultPlan

SCENARIO = "withhold"
VICTIM = "honest-0"
RUN_LENGTH = 3
KINDS: dict[str, frozenset[int]] = {"one_validator": frozenset({1, 2}), "two_validators": frozenset({2})}
PROXIED = (1, 2)
MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True)
class Withheld:
    window: int
    kind: str

    @property
    def denied(self) -> frozenset[int]:
        return KINDS[self.kind]


def schedule(first: int, faults: int) -> list[Withheld]:
    kinds = list(KINDS)
    return [Withheld(first + i, kinds[(i // RUN_LENGTH) % len(kinds)]) for i in range(faults)]


def payload_manifest(body: bytes) -> dict[str, Any] | None:
    """The manifest of a safetensors payload (tensors/payload.py), or None for anything else; never raises."""
    if len(body) < 8:
        return None
    length = int.from_bytes(body[:8], "little")
    if length > MAX_HEADER_BYTES or 8 + length > len(body):
        return None
    try:
        manifest = json.loads(json.loads(body[8 : 8 + length])["__metadata__"]["manifest"])
    except (ValueError, KeyError, TypeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def refuses(validator: int, victim: str, plan: list[Withheld]) -> Callable[[bytes], bool]:
    """Whether `validator`'s proxy refuses a response body: the victim's payload of a window it is denied."""
    denied = {w.window for w in plan if validator in w.denied}

    def judge(body: bytes) -> bool:
        manifest = payload_manifest(body)
        return (manifest is not None and manifest.get("kind") == "contribution"
                and str(manifest.get("trainer", "")).lower() == victim and manifest.get("window") in denied)

    return judge


def arm(net: KillNet, plan: list[Withheld]) -> None:
    victim = net.address(VICTIM).lower()
    for index in PROXIED:
        net.proxies[f"validator-{index}"].plan(
            FaultPlan(Fault.REFUSE, b"/api/v0/cat", when_body=refuses(index, victim, plan)))


def published_reports(net: KillNet, window: int) -> dict[str, WindowReport]:
    names = {net.address(f"validator-{i}").lower(): f"validator-{i}" for i in range(len(net.validator_clients))}
    reports = {names[v.lower()]: consensus.revealed_report(net, p)
               for v, p in net.views.publications(net.run_id, window).items() if v.lower() in names}
    return {name: report for name, report in reports.items() if report is not None}


def judge(net: KillNet, plan: list[Withheld]) -> list[FaultOutcome]:
    victim = net.address(VICTIM).lower()
    epoch = plan[0].window // net.s.windows_per_epoch
    stakes = {f"validator-{i}": net.views.voting_stake(net.run_id, v.address_of_account, epoch)
              for i, v in enumerate(net.validator_clients)}
    total = sum(stakes.values())
    by_address = {net.address(n).lower(): n for n in stakes}
    reported: Counter[tuple[int, str, str]] = Counter(
        (int(g["args"]["window"]), str(g["args"]["trainer"]).lower(),
         by_address.get(str(g["args"]["validator"]).lower(), "?"))
        for g in consensus.events(net, "UnavailabilityReported"))
    quorum = Counter((int(g["args"]["window"]), str(g["args"]["trainer"]).lower())
                     for g in consensus.events(net, "PayloadUnavailable"))
    misses = Counter((int(g["args"]["window"]), str(g["args"]["trainer"]).lower())
                     for g in consensus.events(net, "RevealMissed"))
    slashes = [g for g in consensus.events(net, "TrainerSlashed") if str(g["args"]["trainer"]).lower() == victim]
    agreement = consensus.audit(net)
    starts = [w.window for w in plan]
    found = consensus.charge_findings(agreement, starts, net.s.windows_per_epoch)
    outcomes: list[FaultOutcome] = []
    for i, w in enumerate(plan):
        notes: list[str] = []
        lost = double = 0
        denied = {f"validator-{v}" for v in w.denied}
        expect_miss = 2 * sum(stakes[n] for n in denied) > total
        if not any(r.trainer.lower() == victim for r in net.views.reveals(net.run_id, w.window)):
            notes.append(f"{VICTIM} did not reveal window {w.window}: nothing was withheld")
            lost += 1
        reports = published_reports(net, w.window)
        for name in sorted(stakes):
            report = reports.get(name)
            if report is None:
                notes.append(f"{name} never published window {w.window}")
                lost += 1
                continue
            unavailable = {r.trainer.lower() for r in report.rejections if r.reason == RejectReason.UNAVAILABLE}
            scored = {s.trainer.lower() for s in report.scores}
            others = unavailable - {victim}
            if others:  # an honest payload that was served but not fetched in time
                notes.append(f"{name} found {sorted(others)} unavailable too")
                lost += len(others)
            if name in denied:
                if victim not in unavailable or reported[(w.window, victim, name)] != 1:
                    notes.append(f"{name} could not fetch it but did not reject and report it once "
                                 f"(rejected {victim in unavailable}, reports {reported[(w.window, victim, name)]})")
                    lost += 1
            elif victim in unavailable or reported[(w.window, victim, name)]:
                notes.append(f"{name} was served the payload but judged it unavailable "
                             f"({reported[(w.window, victim, name)]} reports)")
                lost += 1
            elif victim not in scored:  # fetched, then filtered like anyone's (e.g. stale): not the withholding
                why = [f"{r.reason.value}: {r.detail}" for r in report.rejections if r.trainer.lower() == victim]
                notes.append(f"{name} fetched it and rejected it: {why}")
        missed = misses[(w.window, victim)]
        if missed > 1 or quorum[(w.window, victim)] > 1:
            double += 1
            notes.append(f"the miss was counted {missed} times")
        if bool(missed) != expect_miss or bool(quorum[(w.window, victim)]) != expect_miss:
            lost += 1
            notes.append(f"quorum expected {expect_miss}, chain shows PayloadUnavailable "
                         f"{quorum[(w.window, victim)]}, RevealMissed {missed}")
        canonical = net.views.canonical_model(net.run_id, w.window)
        behind = sorted(n for n, r in reports.items() if r.model_cid != canonical.cid)
        adopted = sorted(n for n, ws in agreement.adopted.items() if w.window + 1 in ws)
        forks, stalled = found.forks[i], found.stalled[i]
        notes += found.notes.get(i, [])
        summary = (f"window {w.window}: withheld from {sorted(denied)}; "
                   f"{'miss (quorum)' if missed else 'no miss (no quorum)'}; canonical held by "
                   f"{canonical.stake}/{canonical.epoch_stake} of the stake; differing: {behind or 'none'}; "
                   f"adopted at {w.window + 1}: {adopted or 'none'}")
        if i == len(plan) - 1:
            summary += f"; victim slashed {len(slashes)} times in the run"
        ok = not (lost or double or forks or stalled) and canonical.cid is not None
        outcomes.append(FaultOutcome(SCENARIO, f"payload {w.kind.replace('_', ' ')}", recovered=ok, lost=lost,
                                     double_applied=double, forks=forks, stalled_epochs=stalled,
                                     unpaid_by_scoring=found.unpaid[i],
                                     detail="; ".join([summary, *notes])))
    return outcomes


def scenario(faults: int, net: KillNet) -> list[FaultOutcome]:
    """Arm the schedule on a started network (before its first window), run it to the end and judge it."""
    plan = schedule(net.first, faults)
    try:
        arm(net, plan)
        net.wait_settled()
    except FaultRunError as err:
        return [FaultOutcome(SCENARIO, "payload withheld", recovered=False, lost=1, detail=str(err))]
    return judge(net, plan)
