"""SIGKILL the validator at random points of its windows, many times over one run, and judge the result
against an uninterrupted validator of the same run.

The network has two validators scoring the same reveals: validator-0 is never touched (the uninterrupted
run), validator-1 is killed and restarted from its SQLite state. Scoring is a deterministic function of the
on-chain reveals, the IPFS payloads and the closing block hash, so the victim must publish, window by window,
the very model CID the reference publishes with the very same (sealed) report CID, reveal its reports of every
epoch it votes on, and submit the very same weight bytes each epoch; anything else is a window skipped, scored
twice, a share lost, or a weight vector submitted twice (read from chain events, not from the victim's own word;
a sealed report's CID, bound to its publisher on chain, from each validator's store)."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench.faults import FaultOutcome, consensus
from bench.faults.killnet import FaultRunError, KillNet

SCENARIO = "validator_sigkill"
REFERENCE, VICTIM = "validator-0", "validator-1"


@dataclass
class ValidatorKill:
    window: int  # the lowest window the victim had not published when it was killed
    delay_s: float  # after the window's reveal period ended
    phase: str  # what the victim's state file says it was doing
    restart_s: float = 0.0
    republished: bool = False  # the restarted victim went on to publish `window`


def unpublished_window(net: KillNet) -> int:
    rows = net.store_rows(VICTIM, "SELECT MAX(window) AS w FROM windows WHERE status='published'")
    last = rows[0]["w"] if rows else None
    return net.first if last is None else int(last) + 1


def phase_of(net: KillNet, window: int) -> str:
    """The victim's state at the kill, read from its SQLite file (pending/scored/published, txs in flight)."""
    rows = net.store_rows(VICTIM, "SELECT status FROM windows WHERE window=?", (window,))
    status = rows[0]["status"] if rows else "not begun"
    sent = net.store_rows(VICTIM, "SELECT kind, key FROM pending_txs WHERE status='sent'")
    in_flight = ",".join(f"{r['kind']}:{r['key']}" for r in sent)
    return f"window {window} {status}" + (f"; tx in flight {in_flight}" if in_flight else "")


def drive(net: KillNet, faults: int, rng: random.Random) -> list[ValidatorKill]:
    """Kill the victim `faults` times; each time it is restarted at once and must publish the window it was
    working on before the next kill. Kill moments are uniform over ~1.3× a window's processing time after the
    window became due, so they land in scoring, recording, publishing, settling and idle polling alike."""
    first_due = net.clock.reveal_end(net.first)
    net.wait_block(first_due)
    t0 = time.monotonic()
    net.wait_until(lambda: _published_by(net, REFERENCE, net.first), 300, f"{REFERENCE} publishing {net.first}")
    processing_s = max(2.0, time.monotonic() - t0)
    kills: list[ValidatorKill] = []
    # The victim may skip ahead of the trainers' last window while it catches up: kills go on in the windows
    # after it (nothing to score, still a report, a model and the epoch's weights), judged the same way.
    net.settle_through = net.last + 2 * faults
    for _ in range(faults):
        window = unpublished_window(net)
        if window > net.settle_through - 2:
            break
        net.wait_block(net.clock.reveal_end(window))
        delay = rng.uniform(0.0, 1.3 * processing_s)
        time.sleep(delay)
        net.sigkill(VICTIM)
        kill = ValidatorKill(window, round(delay, 2), phase_of(net, window))
        kills.append(kill)
        kill.restart_s = round(net.restart(VICTIM), 1)
        net.wait_until(partial(_published_by, net, VICTIM, window), 600, f"{VICTIM} publishing {window}")
        kill.republished = True
    return kills


def _published_by(net: KillNet, name: str, window: int) -> bool:
    me = net.address(name).lower()
    return any(v.lower() == me for v in net.views.publications(net.run_id, window))


def _events(net: KillNet, event: str) -> list[Any]:
    logs = getattr(net.views.contract.events, event).get_logs(
        argument_filters={"runId": net.run_id}, from_block=net.views.from_block, to_block="latest")
    return list(logs)


def judge(net: KillNet, kills: list[ValidatorKill]) -> list[FaultOutcome]:
    """One outcome per kill; every window and epoch of the run is charged to the kill it followed."""
    ref, victim = net.address(REFERENCE).lower(), net.address(VICTIM).lower()
    sealed = {name: {int(row["window"]): row["report_cid"] for row in net.store_rows(
        name, "SELECT window, report_cid FROM windows WHERE report_cid IS NOT NULL", ())}
        for name in (REFERENCE, VICTIM)}
    published: dict[tuple[str, int], list[tuple[str, str | None]]] = {}
    for g in _events(net, "WindowPublished"):
        who, window = str(g["args"]["validator"]).lower(), int(g["args"]["window"])
        report = sealed[REFERENCE if who == ref else VICTIM].get(window)
        published.setdefault((who, window), []).append((str(g["args"]["modelCid"]), report))
    submitted: dict[tuple[str, int], list[bytes]] = {}
    for g in _events(net, "WeightsRevealed"):
        key = (str(g["args"]["validator"]).lower(), int(g["args"]["epoch"]))
        submitted.setdefault(key, []).append(bytes(g["args"]["weights"]))
    committed: Counter[tuple[str, int]] = Counter(
        (str(g["args"]["validator"]).lower(), int(g["args"]["epoch"])) for g in _events(net, "WeightsCommitted"))
    starts = [k.window for k in kills]
    lost: Counter[int] = Counter()
    double: Counter[int] = Counter()
    notes: dict[int, list[str]] = {}

    def charge(window: int, counter: Counter[int], note: str) -> None:
        index = max([i for i, start in enumerate(starts) if start <= window] or [0])
        counter[index] += 1
        notes.setdefault(index, []).append(note)

    for w in range(net.first, net.settle_through + 1):
        mine, theirs = published.get((victim, w), []), published.get((ref, w), [])
        if not mine:
            charge(w, lost, f"window {w} never published")
            continue
        if len(mine) > 1:
            charge(w, double, f"window {w} published {len(mine)} times")
        if theirs and mine[0] != theirs[0]:
            kind, why = _report_difference(net, w)
            charge(w, lost if kind == "lost" else double, f"window {w} differs from the reference: {why}")
    wpe = net.s.windows_per_epoch
    for epoch in range(net.first // wpe, net.settle_through // wpe + 1):
        last_window = (epoch + 1) * wpe - 1
        mine_w, theirs_w = submitted.get((victim, epoch), []), submitted.get((ref, epoch), [])
        if committed[(victim, epoch)] > 1:
            charge(last_window, double, f"epoch {epoch} weights committed {committed[(victim, epoch)]} times")
        if not mine_w:
            charge(last_window, lost, f"epoch {epoch} weights never revealed")
        elif len(mine_w) > 1:
            charge(last_window, double, f"epoch {epoch} weights revealed {len(mine_w)} times")
        elif theirs_w and mine_w[0] != theirs_w[0]:
            charge(last_window, lost, f"epoch {epoch} weights {mine_w[0].hex()} != reference {theirs_w[0].hex()}")
        if mine_w and not net.views.reports_revealed(net.run_id, net.address(VICTIM), epoch):
            charge(last_window, lost, f"epoch {epoch} weights revealed without its reports: its share is lost")
    if _ratings(net, VICTIM) != _ratings(net, REFERENCE):
        charge(net.settle_through, double, "final ratings differ from the reference (a window's update applied twice?)")
    found = consensus.charge_findings(consensus.audit(net), starts, wpe)
    outcomes = []
    for i, k in enumerate(kills):
        detail = f"killed at +{k.delay_s}s in {k.phase}; restarted in {k.restart_s}s"
        if notes.get(i) or found.notes.get(i):
            detail += "; " + "; ".join(notes.get(i, []) + found.notes.get(i, []))
        outcomes.append(FaultOutcome(SCENARIO, "SIGKILL validator",
                                     recovered=k.republished and not (lost[i] or found.forks[i] or found.stalled[i]),
                                     lost=lost[i], double_applied=double[i], detail=detail, forks=found.forks[i],
                                     stalled_epochs=found.stalled[i], unpaid_by_scoring=found.unpaid[i]))
    return outcomes


def _report_difference(net: KillNet, window: int) -> tuple[str, str]:
    """('lost' | 'double', why) for a window whose publication differs: contributions the reference scored and
    the victim did not are lost; the same contributions with different numbers mean a rating update twice."""
    reports = {}
    for name in (REFERENCE, VICTIM):
        rows = net.store_rows(name, "SELECT report_json FROM windows WHERE window=?", (window,))
        reports[name] = json.loads(rows[0]["report_json"]) if rows and rows[0]["report_json"] else {}
    ref_scored = {s["trainer"].lower() for s in reports[REFERENCE].get("scores", [])}
    victim_scored = {s["trainer"].lower() for s in reports[VICTIM].get("scores", [])}
    if ref_scored - victim_scored:
        return "lost", f"contributions of {sorted(ref_scored - victim_scored)} not scored"
    differing = [k for k in reports[REFERENCE] if reports[REFERENCE].get(k) != reports[VICTIM].get(k)]
    return "double", f"report fields {differing} differ"


def _ratings(net: KillNet, name: str) -> list[tuple[Any, ...]]:
    rows = net.store_rows(name, "SELECT trainer, mu, sigma, b_average, misses, last_window FROM ratings "
                                "ORDER BY trainer")
    return [tuple(row) for row in rows]


def scenario(faults: int, rng: random.Random, net: KillNet) -> list[FaultOutcome]:
    """Run the kills on a started network and judge them; a network that cannot go on is a failed fault."""
    kills: list[ValidatorKill] = []
    try:
        kills = drive(net, faults, rng)
        net.wait_settled()
    except FaultRunError as err:  # the kill in progress (or the settling) is charged with the failure
        done = [FaultOutcome(SCENARIO, "SIGKILL validator", recovered=k.republished, detail=k.phase)
                for k in kills[:-1]]
        return [*done, FaultOutcome(SCENARIO, "SIGKILL validator", recovered=False, lost=1, detail=str(err))]
    return judge(net, kills)
