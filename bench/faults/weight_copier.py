"""A validator that copies instead of evaluating (bench/faults/copier.py, its own process) beside two honest
validators of the same stake: it republishes their windows so the contract lets it vote, and every epoch tries
to have their revealed median counted as its own ballot (`wait`: commit once the median is visible; `guess`:
commit a placeholder early, reveal the median), or their reports (`report`: rebuild their vector from their
evaluation reports). Weights are committed before any is revealed and a reveal must match its commitment, and
reports stay sealed until the weight commits close, so each try must fail and the copier must earn no validator
share, while the honest validators and trainers are paid as usual. `lagged` (commit the previous epoch's
public consensus without evaluating) is a measurement, not a fault: its agreement and pay go to the detail.
One fault per epoch; judged from the chain (ValidatorCredited, EpochFinalized, the copier's claimable balance)
and the copier's own log of what it tried."""

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
        if mode == "lagged":
            paid = [credited[(epoch, v)] for v in sorted(honest)]
            notes.append(f"lagged copier agreement {agreement.get((epoch, copier), 0.0):.3f} (honest "
                         f"{[round(agreement.get((epoch, v), 0.0), 3) for v in sorted(honest)]}), paid "
                         f"{credited[(epoch, copier)]} wei vs honest {paid}")
        elif credited[(epoch, copier)]:
            lost += 1
            notes.append(f"the copier was credited {credited[(epoch, copier)]} wei")
        index = epoch - first_epoch
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
        copied = "the honest reports" if mode == "report" else "the revealed median"
        outcomes.append(FaultOutcome(SCENARIO, f"copy {copied} ({mode})", recovered=ok, lost=lost,
                                     forks=forks, stalled_epochs=stalled, unpaid_by_scoring=unpaid,
                                     detail="; ".join([summary, *notes])))
    claimable = net.views.claimable(net.run_id, net.address(COPIER))
    if claimable and outcomes and "lagged" not in modes:
        last = outcomes[-1]
        outcomes[-1] = FaultOutcome(last.scenario, last.fault, recovered=False, lost=last.lost + 1,
                                    double_applied=last.double_applied, forks=last.forks,
                                    stalled_epochs=last.stalled_epochs, unpaid_by_scoring=last.unpaid_by_scoring,
                                    detail=f"{last.detail}; the copier can claim {claimable} wei")
    return outcomes


def scenario(net: KillNet) -> list[FaultOutcome]:
    try:
        net.wait_settled()
    except FaultRunError as err:
        return [FaultOutcome(SCENARIO, "copy the revealed median", recovered=False, lost=1, detail=str(err))]
    return judge(net, net.s.copier_modes)
