"""One validator of three misses a whole window, many times over one run: frozen with SIGSTOP at a random point
of its work on a window, kept frozen until that window's canonical model is final (its publication deadline has
passed, so the frozen validator's publication cannot count), then let go with SIGCONT. It must catch up on its
own: publish every window (the missed one late), score the next one against the canonical model (adopting it
where its own aggregate differs), vote on the epochs whose commit phase it did not sleep through, and leave no
fork and no stalled epoch behind. Judged from the chain and the reports published on IPFS."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial

from base.report import RejectReason
from bench.faults import FaultOutcome, consensus
from bench.faults.killnet import FaultRunError, KillNet

SCENARIO = "validator_lag"
REFERENCE, VICTIM = "validator-0", "validator-2"
WINDOWS_PER_LAG = 3  # the frozen window, the one it catches up with, one to spare


@dataclass
class Lag:
    window: int  # the lowest window the victim had not published when it was frozen
    delay_s: float  # after the window's reveal period ended
    phase: str
    frozen_s: float = 0.0
    caught_up: bool = False


def published(net: KillNet, name: str, window: int) -> bool:
    me = net.address(name).lower()
    return any(v.lower() == me for v in net.views.publications(net.run_id, window))


def unpublished_window(net: KillNet, name: str) -> int:
    window = net.first
    while published(net, name, window):
        window += 1
    return window


def phase_of(net: KillNet, window: int) -> str:
    rows = net.store_rows(VICTIM, "SELECT status FROM windows WHERE window=?", (window,))
    return f"window {window} {rows[0]['status'] if rows else 'not begun'}"


def drive(net: KillNet, faults: int, rng: random.Random) -> list[Lag]:
    """Freeze the victim `faults` times, each at a uniform moment over ~1.3× a window's processing time after
    the window it is working on became due, so freezes land in fetching, scoring, publishing and idle polls."""
    net.wait_block(net.clock.reveal_end(net.first))
    t0 = time.monotonic()
    net.wait_until(partial(published, net, REFERENCE, net.first), 300, f"{REFERENCE} publishing {net.first}")
    processing_s = max(2.0, time.monotonic() - t0)
    lags: list[Lag] = []
    for _ in range(faults):
        window = unpublished_window(net, VICTIM)
        if window + WINDOWS_PER_LAG - 1 > net.last:
            break
        net.wait_block(net.clock.reveal_end(window))
        delay = rng.uniform(0.0, 1.3 * processing_s)
        time.sleep(delay)
        net.sigstop(VICTIM)
        t_frozen = time.monotonic()
        net.wait_block(net.head() + 1)  # a publication it had sent before the freeze lands now, not later
        lag = Lag(unpublished_window(net, VICTIM), round(delay, 2), "")
        lag.phase = phase_of(net, lag.window)
        lags.append(lag)
        deadline = net.views.canonical_model(net.run_id, lag.window).deadline
        net.wait_block(deadline + rng.randrange(0, net.s.window_blocks))
        net.sigcont(VICTIM)
        lag.frozen_s = round(time.monotonic() - t_frozen, 1)
        net.wait_until(partial(published, net, VICTIM, lag.window + 1), 600, f"{VICTIM} catching up")
        lag.caught_up = True
    return lags


def judge(net: KillNet, lags: list[Lag]) -> list[FaultOutcome]:
    victim = net.address(VICTIM).lower()
    starts = [lag.window for lag in lags]
    lost: Counter[int] = Counter()
    double: Counter[int] = Counter()
    notes: dict[int, list[str]] = {}

    def note(window: int, text: str, counter: Counter[int] | None = None) -> None:
        index = consensus.charge(starts, window)
        notes.setdefault(index, []).append(text)
        if counter is not None:
            counter[index] += 1

    wpe = net.s.windows_per_epoch
    for window in range(net.first, net.settle_through + 1):
        pubs = net.views.publications(net.run_id, window)
        mine = next((p for v, p in pubs.items() if v.lower() == victim), None)
        if mine is None:
            note(window, f"window {window} never published", lost)
            continue
        deadline = net.views.canonical_model(net.run_id, window).deadline
        if window in starts:
            note(window, f"published window {window} {'late' if mine.block >= deadline else 'on time'} "
                         f"(block {mine.block}, deadline {deadline})")
        report = consensus.revealed_report(net, mine)
        if report is None:
            note(window, f"window {window}'s report is not revealed")
            continue
        unavailable = sorted(r.trainer for r in report.rejections if r.reason == RejectReason.UNAVAILABLE)
        if unavailable:  # the freeze outlasted its fetch deadline: its own loss, not the run's
            note(window, f"judged {unavailable} unavailable in window {window} (frozen while fetching)")
    commits = Counter(int(g["args"]["epoch"]) for g in consensus.events(net, "WeightsCommitted")
                      if str(g["args"]["validator"]).lower() == victim)
    reveals = Counter(int(g["args"]["epoch"]) for g in consensus.events(net, "WeightsRevealed")
                      if str(g["args"]["validator"]).lower() == victim)
    for epoch in range(net.first // wpe, net.settle_through // wpe + 1):
        if commits[epoch] > 1 or reveals[epoch] > 1:
            note(epoch * wpe, f"epoch {epoch} weights committed {commits[epoch]}, revealed {reveals[epoch]} times",
                 double)
        elif not reveals[epoch]:
            note(epoch * wpe, f"did not vote on epoch {epoch} (asleep through its commit phase)")
    agreement = consensus.audit(net)
    found = consensus.charge_findings(agreement, starts, wpe)
    forks, stalled = found.forks, found.stalled
    for index, whys in found.notes.items():
        notes.setdefault(index, []).extend(whys)
    adopted = set(agreement.adopted.get(VICTIM, []))
    outcomes = []
    for i, lag in enumerate(lags):
        detail = (f"frozen at +{lag.delay_s}s in {lag.phase} for {lag.frozen_s}s; "
                  f"{'adopted the canonical model' if lag.window + 1 in adopted else 'its own model was canonical'}"
                  f" for window {lag.window + 1}")
        outcomes.append(FaultOutcome(
            SCENARIO, "SIGSTOP validator past a window", recovered=lag.caught_up and not (lost[i] or double[i]
                                                                                        or forks[i] or stalled[i]),
            lost=lost[i], double_applied=double[i], forks=forks[i], stalled_epochs=stalled[i],
            unpaid_by_scoring=found.unpaid[i],
            detail="; ".join([detail, *notes.get(i, [])])))
    return outcomes


def scenario(faults: int, rng: random.Random, net: KillNet) -> list[FaultOutcome]:
    lags: list[Lag] = []
    try:
        lags = drive(net, faults, rng)
        net.wait_settled()
    except FaultRunError as err:
        if VICTIM in net.down:
            net.sigcont(VICTIM)
        done = [FaultOutcome(SCENARIO, "SIGSTOP validator past a window", recovered=lag.caught_up, detail=lag.phase)
                for lag in lags[:-1]]
        return [*done, FaultOutcome(SCENARIO, "SIGSTOP validator past a window", recovered=False, lost=1,
                                    detail=str(err))]
    return judge(net, lags)
