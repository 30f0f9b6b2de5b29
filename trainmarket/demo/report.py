"""The demo's outcome as numbers a reader can check: JSON (machine), Markdown (person), PNG (plot).

`summarize` is pure so the end-to-end test and the demo share one definition of every figure."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from base.units import ETH


@dataclass(frozen=True)
class TrainerOutcome:
    """What one trainer identity ended the run with."""

    name: str
    role: str
    address: str
    honest: bool
    claimed_wei: int
    stake_left_wei: int
    stake_at_start_wei: int
    rating_ordinal: float | None = None
    last_weight: float | None = None
    slashed: bool = False


@dataclass(frozen=True)
class DemoOutcome:
    """Everything the demo measured; the input of `summarize`."""

    trainers: list[TrainerOutcome]
    loss_by_window: dict[int, float]
    rejections: list[dict[str, Any]]
    rewards_by_epoch: dict[str, list[int]] = field(default_factory=dict)
    pool_deposited_wei: int = 0
    pool_left_wei: int = 0
    validators_claimed_wei: int = 0
    validators_agree: bool = True
    windows: int = 0
    epochs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def summarize(outcome: DemoOutcome) -> dict[str, Any]:
    """The report's top-level figures: reward shares, loss trend, rejections, balances."""
    paid = sum(t.claimed_wei for t in outcome.trainers)
    honest = sum(t.claimed_wei for t in outcome.trainers if t.honest)
    adversaries = [t for t in outcome.trainers if not t.honest]
    by_role: dict[str, int] = {}
    for t in outcome.trainers:
        by_role[t.role] = by_role.get(t.role, 0) + t.claimed_wei
    losses = [outcome.loss_by_window[w] for w in sorted(outcome.loss_by_window)]
    return {
        "honest_reward_share": honest / paid if paid else 0.0,
        "honest_pay_min_over_mean": honest_pay_min_over_mean(outcome.trainers),
        "max_adversary_share": max((t.claimed_wei / paid for t in adversaries), default=0.0) if paid else 0.0,
        "reward_share_by_role": {role: (v / paid if paid else 0.0) for role, v in sorted(by_role.items())},
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_by_window": {str(w): outcome.loss_by_window[w] for w in sorted(outcome.loss_by_window)},
        "rejections": outcome.rejections,
        "trainers_paid_wei": paid,
        "validators_paid_wei": outcome.validators_claimed_wei,
        "pool_deposited_wei": outcome.pool_deposited_wei,
        "pool_left_wei": outcome.pool_left_wei,
        "validators_agree": outcome.validators_agree,
        "windows": outcome.windows,
        "epochs": outcome.epochs,
        "trainers": [asdict(t) for t in outcome.trainers],
        **outcome.extra,
    }


def honest_pay_min_over_mean(trainers: list[TrainerOutcome]) -> float:
    """The lowest honest trainer's claimed pay over the honest mean: 1 when identical honest work is paid
    identically, near 0 when pay is a lottery (0 when no honest trainer was paid)."""
    claimed = [t.claimed_wei for t in trainers if t.honest]
    mean = sum(claimed) / len(claimed) if claimed else 0.0
    return min(claimed) / mean if mean > 0 else 0.0


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# trainmarket demo report",
        "",
        f"- windows: {summary['windows']}, epochs: {summary['epochs']}",
        f"- honest reward share: {summary['honest_reward_share']:.1%}",
        f"- lowest honest pay over the honest mean: {summary['honest_pay_min_over_mean']:.2f}",
        f"- largest single adversary share: {summary['max_adversary_share']:.1%}",
        f"- global model held-out loss: {summary['loss_first']} → {summary['loss_last']}",
        *([("- trainers' reward credited per epoch (the rest stays in the pool while the records' evidence is thin): "
            + ", ".join(f"epoch {e} {p['credited_fraction']:.0%}" for e, p in summary["payout_by_epoch"].items()))]
          if summary.get("payout_by_epoch") else []),
        f"- validators agree: {summary['validators_agree']}",
        f"- sync phase (waiting for the previous window's model): {summary.get('sync_fraction', 0.0):.0%} of a window",
        *(["- audit: " + ", ".join(f"{name} {'PASS' if a['ok'] else 'FAIL'}" for name, a in summary["audit"].items())]
          if "audit" in summary else []),
        "",
        "| trainer | role | rating (ordinal) | last weight | claimed (ETH) | vs honest mean | stake left (ETH) "
        "| slashed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    honest = [t["claimed_wei"] for t in summary["trainers"] if t["honest"]]
    honest_mean = sum(honest) / len(honest) if honest else 0.0
    for t in summary["trainers"]:
        rating = "—" if t["rating_ordinal"] is None else f"{t['rating_ordinal']:.2f}"
        weight = "—" if t["last_weight"] is None else f"{t['last_weight']:.3f}"
        relative = f"{t['claimed_wei'] / honest_mean:.2f}" if honest_mean else "—"
        lines.append(
            f"| {t['name']} | {t['role']} | {rating} | {weight} | {t['claimed_wei'] / ETH:.4f} | {relative} "
            f"| {t['stake_left_wei'] / ETH:.2f} | {'yes' if t['slashed'] else 'no'} |"
        )
    lines += ["", "## Rejections", "", "| window | trainer | reason |", "|---|---|---|"]
    lines += [f"| {r['window']} | {r['trainer']} | {r['reason']} |" for r in summary["rejections"]]
    return "\n".join(lines) + "\n"


def plot(outcome: DemoOutcome, path: Path) -> None:
    """Loss per window and cumulative rewards per trainer, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_reward) = plt.subplots(1, 2, figsize=(12, 4.5))
    windows = sorted(outcome.loss_by_window)
    ax_loss.plot(windows, [outcome.loss_by_window[w] for w in windows], marker="o")
    ax_loss.set(title="global model held-out loss", xlabel="window", ylabel="loss (nats/byte)")
    by_name = {t.name: t for t in outcome.trainers}
    for name, per_epoch in sorted(outcome.rewards_by_epoch.items()):
        cumulative = [sum(per_epoch[: i + 1]) / ETH for i in range(len(per_epoch))]
        honest = by_name[name].honest if name in by_name else True
        ax_reward.plot(range(len(cumulative)), cumulative, ls="-" if honest else "--", label=name)
    ax_reward.set(title="cumulative trainer rewards", xlabel="epoch", ylabel="ETH")
    ax_reward.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(outcome: DemoOutcome, folder: Path) -> Path:
    """Write report.json, report.md and report.png into `folder`; return the JSON path."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarize(outcome)
    json_path = folder / "report.json"
    json_path.write_text(json.dumps(summary, indent=2, sort_keys=True))
    (folder / "report.md").write_text(markdown(summary))
    plot(outcome, folder / "report.png")
    return json_path
