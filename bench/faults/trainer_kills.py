"""SIGKILL trainers at the risky points of a window and judge, from chain events, the trainers' journals and
the validator's records, that every committed contribution was revealed and scored or its miss recorded, and
that no (trainer, window) was ever committed twice.

Kill points (one per fault, victims in rotation, kinds in a shuffled cycle):
  during_training   — the window is open and the node is training or committing: restarted at once, it must
                      commit that window exactly once and reveal it;
  commit_to_reveal  — its commit is on chain, the reveal period not open: restarted at once, it must reveal;
  during_publish    — the reveal period just opened (IPFS add, pin, reveal tx): restarted at once, it must
                      reveal (or find its reveal already mined);
  late_restart      — killed after its commit and kept down until the reveal period is over: restarted (loading
                      slowly: frozen for two windows' worth of blocks), it must record the miss in its journal
                      (and the chain shows the reveal missed), then train on from the next window."""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass

from bench.faults import FaultOutcome, consensus
from bench.faults.killnet import FaultRunError, KillNet
from contracts.types import CommitStatus
from node.journal import TrainerJournal
from trainmarket.demo.network import Participant

SCENARIO = "trainer_sigkill"
KINDS = ("during_training", "commit_to_reveal", "during_publish", "late_restart")
VALIDATOR = "validator-0"


@dataclass
class TrainerKill:
    kind: str
    victim: str
    window: int
    phase: str = ""
    restart_s: float = 0.0


def _status(net: KillNet, p: Participant, window: int) -> CommitStatus:
    return net.views.commitment_of(net.run_id, window, p.address)[1]


def journal_phase(net: KillNet, p: Participant, window: int) -> str:
    """The victim's journal row for `window` at the kill, plus the chain's commit status."""
    path = net.homes[p.name] / "journal.db"
    row = None
    if path.exists():
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            row = conn.execute("SELECT commit_tx, committed, reveal_tx, revealed FROM windows WHERE window=?",
                               (window,)).fetchone()
        except sqlite3.OperationalError:
            row = None
        finally:
            conn.close()
    chain = _status(net, p, window).name.lower()
    if row is None:
        return f"window {window}: not journalled, chain {chain}"
    commit_tx, committed, reveal_tx, revealed = row
    steps = ["prepared"] + (["commit sent"] if commit_tx else []) + (["committed"] if committed else [])
    steps += (["reveal sent"] if reveal_tx else []) + (["revealed"] if revealed else [])
    return f"window {window}: journal {'/'.join(steps)}, chain {chain}"


def kill_once(net: KillNet, kill: TrainerKill, p: Participant, rng: random.Random) -> None:
    clock, w = net.clock, kill.window
    if kill.kind == "during_training":
        net.wait_block(clock.start(w) - 1)  # the node starts window w once block start(w) is the next one
        time.sleep(rng.uniform(0.0, 1.5))
    elif kill.kind == "during_publish":
        net.wait_until(lambda: _status(net, p, w) != CommitStatus.NONE, 300, f"{p.name} committing {w}")
        net.wait_block(clock.end(w) - 1)  # the reveal period is open for the next block
        time.sleep(rng.uniform(0.0, 1.5))
    else:  # commit_to_reveal, late_restart
        net.wait_until(lambda: _status(net, p, w) != CommitStatus.NONE, 300, f"{p.name} committing {w}")
        left = max(0, clock.end(w) - 2 - net.head()) * net.s.block_seconds
        time.sleep(rng.uniform(0.0, left) if kill.kind == "commit_to_reveal" else 0.0)
    if kill.kind == "late_restart":
        net.down.add(p.name)
    net.sigkill(p.name)
    kill.phase = journal_phase(net, p, w)
    frozen = 0.0
    if kill.kind == "late_restart":
        net.wait_block(clock.reveal_end(w))
        # Its restart loads slowly, for two windows' worth of blocks: the clock must wait for its next commit.
        frozen = 2 * net.s.window_blocks * net.s.block_seconds
    kill.restart_s = round(net.restart(p.name, frozen_s=frozen), 1)


def drive(net: KillNet, faults: int, rng: random.Random) -> list[TrainerKill]:
    kinds = list(KINDS)
    rng.shuffle(kinds)
    kills: list[TrainerKill] = []
    window = net.first
    for i in range(faults):
        p = net.people[i % len(net.people)]
        window = max(window + 1, net.clock.window_of(net.head() + 1) + 1)
        if window > net.last:
            break
        kill = TrainerKill(kinds[i % len(kinds)], p.name, window)
        kills.append(kill)
        kill_once(net, kill, p, rng)
    return kills


def judge(net: KillNet, kills: list[TrainerKill]) -> list[FaultOutcome]:
    """Every (trainer, window) of the run, not only the victims': committed at most once; committed and
    revealed, with the validator holding the revealed CID; or, for a late restart, the miss in the journal.
    A problem is charged to the kill of that trainer in that window or the one before, else to the latest kill."""
    commits: Counter[tuple[str, int]] = Counter()
    for g in net.views.contract.events.Committed.get_logs(argument_filters={"runId": net.run_id},
                                                          from_block=net.views.from_block, to_block="latest"):
        commits[(str(g["args"]["trainer"]).lower(), int(g["args"]["window"]))] += 1
    lost: Counter[int] = Counter()
    double: Counter[int] = Counter()
    notes: dict[int, list[str]] = {i: [k.phase, f"restarted in {k.restart_s}s"] for i, k in enumerate(kills)}
    victims = {(next(p.address.lower() for p in net.people if p.name == k.victim), k.window): (i, k)
               for i, k in enumerate(kills)}

    def charge(trainer: str, window: int, counter: Counter[int] | None, note: str) -> None:
        hit = victims.get((trainer, window)) or victims.get((trainer, window - 1))
        index = hit[0] if hit else max([i for i, k in enumerate(kills) if k.window <= window] or [0])
        if counter is not None:
            counter[index] += 1
        notes.setdefault(index, []).append(note)

    for p in net.people:
        me = p.address.lower()
        journal = TrainerJournal(net.homes[p.name], net.run_id, p.address)
        try:
            entries = {e.window: e for e in journal.entries()}
        finally:
            journal.close()
        for w in range(net.first, net.last + 1):
            kill = victims.get((me, w), (0, None))[1]
            late = kill is not None and kill.kind == "late_restart"
            n = commits[(me, w)]
            revealed = [r for r in net.views.reveals(net.run_id, w) if r.trainer.lower() == me]
            entry = entries.get(w)
            if n > 1 or len(revealed) > 1:
                charge(me, w, double, f"{p.name} window {w}: {n} commits, {len(revealed)} reveals")
            if revealed:
                row = net.store_rows(VALIDATOR, "SELECT status, reason, cid FROM contributions WHERE window=? "
                                                "AND trainer=?", (w, me))
                if not row or row[0]["cid"] != revealed[0].cid or entry is None or entry.cid != revealed[0].cid:
                    charge(me, w, lost, f"{p.name} window {w}: revealed {revealed[0].cid} but the validator holds "
                                        f"{dict(row[0]) if row else 'nothing'}")
                elif kill is not None:
                    charge(me, w, None, f"window {w} revealed and {row[0]['status']} {row[0]['reason'] or ''}".strip())
            elif n:
                recorded = entry is not None and entry.missed
                what = f"journal: {entry.note}" if recorded and entry else "journal silent"
                charge(me, w, None if late and recorded else lost,
                       f"{p.name} window {w} committed, not revealed ({what}; "
                       f"chain {_status(net, p, w).name.lower()})")
            else:  # a late restart too: it is restarted within the next window's commits, which the clock holds for it
                charge(me, w, lost, f"{p.name} window {w}: never committed")
    found = consensus.charge_findings(consensus.audit(net), [k.window for k in kills], net.s.windows_per_epoch)
    outcomes = []
    for i, k in enumerate(kills):
        outcomes.append(FaultOutcome(SCENARIO, f"SIGKILL trainer {k.kind}",
                                     recovered=not (lost[i] or found.forks[i] or found.stalled[i]), lost=lost[i],
                                     double_applied=double[i], detail="; ".join(notes[i] + found.notes.get(i, [])),
                                     forks=found.forks[i], stalled_epochs=found.stalled[i],
                                     unpaid_by_scoring=found.unpaid[i]))
    return outcomes


def scenario(faults: int, rng: random.Random, net: KillNet) -> list[FaultOutcome]:
    kills: list[TrainerKill] = []
    try:
        kills = drive(net, faults, rng)
        net.wait_settled()
    except FaultRunError as err:  # the kill in progress is charged with the failure
        done = [FaultOutcome(SCENARIO, f"SIGKILL trainer {k.kind}", recovered=False, detail=k.phase)
                for k in kills[:-1]]
        kind = kills[-1].kind if kills else "(before the first kill)"
        return [*done, FaultOutcome(SCENARIO, f"SIGKILL trainer {kind}", recovered=False, lost=1, detail=str(err))]
    return judge(net, kills)
