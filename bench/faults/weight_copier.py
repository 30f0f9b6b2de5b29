"""A validator that copies instead of evaluating (bench/faults/copier.py, its own process) beside two honest
validators of the same stake: it republishes their windows so the contract lets it vote, and every epoch tries
to have their revealed median counted as its own ballot (`wait`: commit once the median is visible; `guess`:
commit a placeholder early, reveal the median), or their reports (`report`: rebuild their vector from their
evaluation reports). Weights are committed before any is revealed and a reveal must match its commitment, and
reports stay sealed until the weight commits close, so each try must fail and the copier must earn no validator
share, while the honest validators and trainers are paid as usual. `lagged` (commit the previous epoch's
public consensus without evaluating, reveal junk reports) gets its ballot counted and is credited at the epoch's
settlement; the honest validators then audit its ballot against its own reports, find that it does not follow,
and dispute it (validator/disputes.py): their stake majority must forfeit the credit before it is claimable.
One fault per epoch; judged from the chain (ValidatorCredited, ValidatorCreditForfeited, EpochFinalized, the
copier's claimable balance) and the copier's own log of what it tried."""

from __future__ import annotations

import json
from collections import Counter

from bench.faults import FaultOutcome, consensus
from bench.faults.killnet import FaultRunError, KillNet

SCENARIO = "weight_copier"
COPIER = "copier-0"


def attempts(net: KillNet) -> dict[int, list[dict[str, object]]]:
    path = net.homes[COPIER] / "attempts.jsonl"
    out: dict[int, list[dict[str, object]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            out.setdefault(int(entry["epoch"]), []).append(entry)
    return out


def judge(net: KillNet, modes: tuple[str, ...]) -> list[FaultOutcome]:
    wpe = net.s.windows_per_epoch
    copier = net.address(COPIER).lower()
    honest = {net.address(f"validator-{i}").lower() for i in range(len(net.validator_clients))}
    credited: Counter[tuple[int, str]] = Counter()
    agreement: dict[tuple[int, str], float] = {}
    for g in consensus.events(net, "ValidatorCredited"):
        key = (int(g["args"]["epoch"]), str(g["args"]["validator"]).lower())
        credited[key] += int(g["args"]["amount"])
        agreement[key] = int(g["args"]["agreement"]) / 1e12  # Σ min(w, c) over normalised vectors (SCALE)
    forfeited: Counter[tuple[int, str]] = Counter()
    for g in consensus.events(net, "ValidatorCreditForfeited"):
        forfeited[(int(g["args"]["epoch"]), str(g["args"]["validator"]).lower())] += int(g["args"]["amount"])
    finalized = {int(g["args"]["epoch"]): g["args"] for g in consensus.events(net, "EpochFinalized")}
    tried = attempts(net)
    first_epoch = net.first // wpe
    epochs = range(first_epoch, net.settle_through // wpe + 1)
    found = consensus.charge_findings(consensus.audit(net), [e * wpe for e in epochs], wpe)
    outcomes: list[FaultOutcome] = []
    for epoch in epochs:
        mode = modes[(epoch - first_epoch) % len(modes)]
        notes: list[str] = []
        lost = 0
        windows = range(epoch * wpe, (epoch + 1) * wpe)
        eligible = all(any(v.lower() == copier for v in net.views.publications(net.run_id, w)) for w in windows)
        if not eligible:
            notes.append("the copier did not publish every window: the contract would refuse its ballot anyway")
        log = tried.get(epoch, [])
        copy_tries = [e for e in log if e["action"] != "gave up"]
        if not copy_tries and mode != "report":  # `report`: the epoch may settle before any report is readable
            notes.append(f"no copy attempt logged ({log or 'nothing'})")
        kept = credited[(epoch, copier)] - forfeited[(epoch, copier)]
        if mode == "lagged":
            paid = [credited[(epoch, v)] for v in sorted(honest)]
            notes.append(f"lagged copier agreement {agreement.get((epoch, copier), 0.0):.3f} (honest "
                         f"{[round(agreement.get((epoch, v), 0.0), 3) for v in sorted(honest)]}), credited "
                         f"{credited[(epoch, copier)]} wei vs honest {paid}, forfeited by dispute "
                         f"{forfeited[(epoch, copier)]}")
        if kept:
            lost += 1
            notes.append(f"the copier kept {kept} wei of its credit")
        elif credited[(epoch, copier)] and mode != "lagged":
            lost += 1
            notes.append(f"the copier was credited {credited[(epoch, copier)]} wei")
        index = epoch - first_epoch
        disputed = sorted(v for v in honest if forfeited[(epoch, v)])
        if disputed:
            lost += len(disputed)
            notes.append(f"honest validators {disputed} lost their credit to a dispute")
        uncredited = sorted(v for v in honest if not credited[(epoch, v)])
        if uncredited and not found.unpaid[index]:  # (an epoch the scoring rule paid nothing pays no agreement)
            lost += len(uncredited)
            notes.append(f"honest validators {uncredited} were not credited")
        args = finalized.get(epoch)
        forks, stalled, unpaid = found.forks[index], found.stalled[index], found.unpaid[index]
        notes += found.notes.get(index, [])
        summary = (f"epoch {epoch}, {mode}: " + "; ".join(f"{e['action']} → {e['result']}" for e in log)
                   + (f"; trainers paid {args['trainerReward']}, validators {args['validatorReward']} "
                      f"({args['submissions']} ballots)" if args else "; not finalised"))
        ok = eligible and (bool(copy_tries) or mode == "report") and not (lost or forks or stalled)
        copied = {"report": "the honest reports", "lagged": "the previous consensus"}.get(mode, "the revealed median")
        outcomes.append(FaultOutcome(SCENARIO, f"copy {copied} ({mode})", recovered=ok, lost=lost,
                                     forks=forks, stalled_epochs=stalled, unpaid_by_scoring=unpaid,
                                     detail="; ".join([summary, *notes])))
    claimable = net.views.claimable(net.run_id, net.address(COPIER))
    if claimable and outcomes:
        last = outcomes[-1]
        outcomes[-1] = FaultOutcome(last.scenario, last.fault, recovered=False, lost=last.lost + 1,
                                    double_applied=last.double_applied, forks=last.forks,
                                    stalled_epochs=last.stalled_epochs, unpaid_by_scoring=last.unpaid_by_scoring,
                                    detail=f"{last.detail}; the copier can claim {claimable} wei")
    return outcomes


def wait_disputed(net: KillNet, timeout: float = 180) -> None:
    """Until the copier's credit of the last settled epoch is forfeited, or nothing of it is held in dispute (the
    honest validators dispute a failing ballot right after the epoch's settlement)."""
    copier = net.address(COPIER)

    def decided() -> bool:
        held = net.views.held_credit(net.run_id, copier)
        return held.forfeited or held.amount == 0 or not held.disputable

    net.wait_until(decided, timeout, "the copier's held credit forfeited by a dispute (or released)", 0.5)


def scenario(net: KillNet) -> list[FaultOutcome]:
    try:
        net.wait_settled()
        if "lagged" in net.s.copier_modes:
            wait_disputed(net)
    except FaultRunError as err:
        return [FaultOutcome(SCENARIO, "copy the revealed median", recovered=False, lost=1, detail=str(err))]
    return judge(net, net.s.copier_modes)
