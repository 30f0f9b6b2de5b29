"""After the run: everyone claims, then the chain and the validators' APIs are read into a DemoOutcome.
Rewards come from the chain (what was actually paid), ratings and rejections from the validators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from contracts.client import MAX_WEIGHT, TrainingRunClient, unpack_weights
from contracts.tx import NONCES
from contracts.types import Publication, RunInfo
from trainmarket.demo.network import Participant
from trainmarket.demo.report import DemoOutcome, TrainerOutcome


def _get(port: int, path: str) -> Any:
    response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30)
    response.raise_for_status()
    return response.json()


def claim_all(views: TrainingRunClient, run_id: int, people: list[Participant]) -> dict[str, int]:
    """Every trainer claims what it is due (pull payment); returns wei paid per address."""
    paid: dict[str, int] = {}
    for p in people:
        client = views.with_account(p.account)
        NONCES.forget(client.web3, p.address)  # the trainer's own process sent its later transactions
        due = client.claimable(run_id, p.address)
        paid[p.address.lower()] = client.claim(run_id) if due else 0
    return paid


def rewards_by_epoch(views: TrainingRunClient, run_id: int, epochs: range) -> dict[str, list[int]]:
    """Per trainer address, the wei it earned in each epoch (consensus weight × reward per weight)."""
    trainers = views.trainers(run_id)
    out: dict[str, list[int]] = {t.lower(): [] for t in trainers}
    for epoch in epochs:
        info = views.epoch_info(run_id, epoch)
        for index, trainer in enumerate(trainers):
            out[trainer.lower()].append(views.consensus_weight(run_id, epoch, index) * info.reward_per_weight)
    return out


def payout_by_epoch(views: TrainingRunClient, run_id: int, epochs: range, paid: dict[str, list[int]]
                    ) -> dict[str, dict[str, Any]]:
    """Per epoch, the payouts its validators voted (the fraction of the trainers' reward their evidence supports;
    validator/scoring.epoch_payout) and the share of the trainers' reward actually credited."""
    run = views.get_run(run_id)
    trainer_reward = run.reward_per_epoch * (10_000 - run.validator_share_bps) // 10_000
    out: dict[str, dict[str, Any]] = {}
    for i, epoch in enumerate(epochs):
        voted = [unpack_weights(r.weights)[0] / MAX_WEIGHT for r in views.revealed_weights(run_id, epoch)]
        credited = sum(per_epoch[i] for per_epoch in paid.values())
        out[str(epoch)] = {"voted": voted, "credited_fraction": credited / trainer_reward if trainer_reward else 0.0}
    return out


def collect_outcome(
    views: TrainingRunClient, run_id: int, people: list[Participant], validators: list[TrainingRunClient],
    ports: list[int], first: int, last: int, windows_per_epoch: int, pool_deposited: int,
    stop_validators: Callable[[], None], stake: int,
) -> DemoOutcome:
    board = {row["trainer"].lower(): row for row in _get(ports[0], "/leaderboard")}
    losses = {int(p["window"]): float(p["loss"]) for p in _get(ports[0], "/loss")}
    rejections = [
        {"trainer": r["trainer"].lower(), "window": int(r["window"]), "reason": r["reason"], "detail": r["detail"]}
        for r in _get(ports[0], "/rejections?limit=10000")
    ]
    names = {p.address.lower(): p.name for p in people}
    verdicts = [window_verdicts(port, first, last, names) for port in ports]
    # Nobody else may send from these accounts while the orchestrator claims for them.
    stop_validators()
    paid = claim_all(views, run_id, people)
    validators_paid = 0
    for v in validators:
        NONCES.forget(v.web3, v.address_of_account)
        if v.claimable(run_id, v.address_of_account):
            validators_paid += v.claim(run_id)
    epochs = range(first // windows_per_epoch, last // windows_per_epoch + 1)
    per_epoch = rewards_by_epoch(views, run_id, epochs)
    for r in rejections:
        r["name"] = names.get(r["trainer"], r["trainer"])
    publications = [views.publications(run_id, w) for w in range(first, last + 1)]
    agree = all(len({(pub.model_cid, pub.report_cid) for pub in pubs.values()}) == 1 for pubs in publications)
    accounts = [p.address for p in people] + [v.address_of_account for v in validators]
    unclaimed = sum(views.claimable(run_id, a) for a in accounts)
    # The last settled epoch's validator credit is held while its ballots can still be disputed: neither claimable
    # nor in the pool yet.
    held = [views.held_credit(run_id, v.address_of_account) for v in validators]
    in_dispute = sum(h.amount for h in held if h.disputable)
    trainers = []
    for p in people:
        info = views.trainer_info(run_id, p.address)
        row = board.get(p.address.lower())
        trainers.append(TrainerOutcome(
            name=p.name, role=p.role, address=p.address, honest=p.honest, claimed_wei=paid[p.address.lower()],
            stake_left_wei=info.stake, stake_at_start_wei=stake,
            rating_ordinal=None if row is None else float(row["ordinal"]),
            last_weight=None if row is None else float(row["total_weight"]), slashed=info.slashed,
        ))
    return DemoOutcome(
        trainers=trainers,
        loss_by_window={w: losses[w] for w in sorted(losses) if first <= w <= last},
        rejections=sorted(rejections, key=lambda r: (r["window"], r["name"])),
        rewards_by_epoch={names[a]: v for a, v in per_epoch.items() if a in names},
        pool_deposited_wei=pool_deposited,
        pool_left_wei=views.get_run(run_id).pool,
        validators_claimed_wei=validators_paid,
        validators_agree=agree,
        windows=last - first + 1,
        epochs=len(epochs),
        extra={
            "windows_published_by_every_validator": sum(len(p) == len(validators) for p in publications),
            "slashed_wei": sum(t.stake_at_start_wei - t.stake_left_wei for t in trainers),
            "unclaimed_after_claims_wei": unclaimed,
            "validators_held_in_dispute_wei": in_dispute,
            "verdicts_by_validator": verdicts,
            "payout_by_epoch": payout_by_epoch(views, run_id, epochs, per_epoch),
            **sync_phase(views.get_run(run_id), publications, first),
        },
    )


def window_verdicts(port: int, first: int, last: int, names: dict[str, str]) -> dict[str, dict[str, str]]:
    """What one validator decided about each trainer in each window, from its `/windows/{w}`: the rejection
    reason, `aggregated` (in the model it published) or `scored` (paid by its value, left out of the model)."""
    out: dict[str, dict[str, str]] = {}
    for window in range(first, last + 1):
        report = _get(port, f"/windows/{window}")["report"] or {}
        accepted = {a.lower() for a in report.get("accepted", [])}
        for score in report.get("scores", []):
            trainer = score["trainer"].lower()
            verdict = "aggregated" if trainer in accepted else "scored"
            out.setdefault(names.get(trainer, trainer), {})[str(window)] = verdict
        for rejection in report.get("rejections", []):
            trainer = rejection["trainer"].lower()
            out.setdefault(names.get(trainer, trainer), {})[str(window)] = rejection["reason"]
    return out


def sync_phase(run: RunInfo, publications: list[dict[str, Publication]], first: int) -> dict[str, Any]:
    """How long each window waited for the model of the window before it: blocks from the window's first block
    until every validator had published that model (node/runner.py's sync phase), and that as a fraction of
    the window, i.e. the compute a trainer that waits for the fresh model leaves idle."""
    waits: dict[str, int] = {}
    for offset, pubs in enumerate(publications[:-1]):
        window = first + offset + 1
        if pubs:
            start = run.start_block + window * run.window_blocks
            waits[str(window)] = max(0, max(p.block for p in pubs.values()) - start)
    mean = sum(waits.values()) / len(waits) if waits else 0.0
    return {"sync_blocks_by_window": waits, "sync_fraction": mean / run.window_blocks}
