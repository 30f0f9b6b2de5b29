"""bench.load's figures, read back after a run: windows on time (from the chain and the trainers' sync logs),
validator seconds per stage and scored fraction (from the validators' stores), gas per window (from the chain's
receipts). Definitions in bench/load.py's docstring."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from eth_utils import keccak

from contracts.client import TrainingRunClient
from validator.store import ValidatorStore
from validator.timing import STAGES


def spread(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "mean": None, "median": None, "max": None}
    return {"min": round(min(values), 3), "mean": round(statistics.fmean(values), 3),
            "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def sync_deadlines(out: Path) -> dict[int, int]:
    """window → the earliest sync deadline any trainer had for it (the trainers' sync.jsonl files): the block
    from which trainers stop waiting for the model of the window before and train from an older one."""
    deadlines: dict[int, int] = {}
    for path in out.rglob("sync.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "deadline" in record:
                w = int(record["window"])
                deadlines[w] = min(deadlines.get(w, record["deadline"]), int(record["deadline"]))
    return deadlines


def deadline_for(deadlines: dict[int, int], window: int, window_blocks: int) -> int | None:
    """The sync deadline of `window`; for a window nobody trained (the run's last + 1), the one before it
    shifted by a window (the trainers' estimate of their training time does not change in between)."""
    if window in deadlines:
        return deadlines[window]
    if window - 1 in deadlines:
        return deadlines[window - 1] + window_blocks
    return None


def measure_windows(views: TrainingRunClient, run_id: int, first: int, last: int, trainers: int, validators: int,
                    window_blocks: int, out: Path) -> dict[str, Any]:
    """Per-window facts from the chain's events and the trainers' sync logs, folded into the load figures."""
    deadlines = sync_deadlines(out)
    on_time = trainer_ok = validator_ok = commits = reveals = 0
    per_window: list[dict[str, Any]] = []
    lag_blocks: list[float] = []
    lag_seconds: list[float] = []
    margin_blocks: list[float] = []
    reveal_spans: list[float] = []
    commit_margins: list[float] = []
    stamps: dict[int, int] = {}
    head = views.block_number()

    def stamp(block: int) -> int:
        if block not in stamps:
            stamps[block] = int(views.web3.eth.get_block(block)["timestamp"])
        return stamps[block]

    for window in range(first, last + 1):
        bounds = views.window_bounds(run_id, window)
        commit_events = views.commits(run_id, window)
        reveal_events = [r for r in views.reveals(run_id, window) if r.block < bounds.reveal_end]
        committed = {c.trainer for c in commit_events}
        revealed = {r.trainer for r in reveal_events}
        # Blocks the reveal period needed (1: every reveal in its first block), and how many blocks before the
        # window's end the last commit landed: the two margins a population's load eats first.
        reveal_span = max((r.block - bounds.end + 1 for r in reveal_events), default=None)
        commit_margin = min((bounds.end - c.block for c in commit_events), default=None)
        if reveal_span is not None:
            reveal_spans.append(reveal_span)
        if commit_margin is not None:
            commit_margins.append(commit_margin)
        pubs = list(views.publications(run_id, window).values())
        commits += len(committed)
        reveals += len(revealed)
        deadline = deadline_for(deadlines, window + 1, window_blocks)
        in_time = [p for p in pubs if deadline is not None and p.block < deadline]
        for p in pubs:
            lag_blocks.append(p.block - bounds.reveal_end)
            if deadline is not None:
                margin_blocks.append(deadline - p.block)
            if p.block <= head and bounds.reveal_end <= head:
                lag_seconds.append(stamp(p.block) - stamp(bounds.reveal_end))
        t_ok = len(revealed) >= trainers
        v_ok = len(in_time) >= validators
        trainer_ok += t_ok
        validator_ok += v_ok
        on_time += t_ok and v_ok
        per_window.append({"window": window, "commits": len(committed), "reveals": len(revealed),
                           "reveal_span_blocks": reveal_span, "last_commit_margin_blocks": commit_margin,
                           "publish_lag_blocks": sorted(p.block - bounds.reveal_end for p in pubs),
                           "next_sync_deadline": deadline, "on_time": t_ok and v_ok})
    windows = last - first + 1
    warm = per_window[1:]  # the first window also pays every process's cold start (first forward, data load)
    return {
        "on_time_fraction": round(on_time / windows, 4),
        "on_time_fraction_after_first_window": round(sum(w["on_time"] for w in warm) / len(warm), 4) if warm else None,
        "trainer_on_time_fraction": round(trainer_ok / windows, 4),
        "validator_on_time_fraction": round(validator_ok / windows, 4),
        "commit_success_fraction": round(commits / (trainers * windows), 4),
        "reveal_success_fraction": round(reveals / (trainers * windows), 4),
        "validator_lag_blocks": spread(lag_blocks),
        "validator_lag_seconds": spread(lag_seconds),
        "publish_margin_blocks": spread(margin_blocks),  # blocks between a publication and the next sync deadline
        "reveal_span_blocks": spread(reveal_spans),  # of the reveal period, blocks up to the window's last reveal
        "last_commit_margin_blocks": spread(commit_margins),  # blocks from the window's last commit to its end
        "publications": len(lag_blocks),
        "publications_expected": validators * windows,
        "per_window": per_window,
    }


def validator_figures(stores: Iterable[Path], first: int, last: int) -> dict[str, Any]:
    """Seconds per stage per window and the scored fraction, over every validator's store."""
    stages: dict[str, list[float]] = {}
    scored = revealed = 0
    unscored: dict[str, int] = {}
    per_validator: list[dict[str, Any]] = []
    weights: list[float] = []
    for path in stores:
        store = ValidatorStore(path)
        try:
            mine_scored = mine_revealed = 0
            for window in range(first, last + 1):
                seconds = json.loads(store.get_value(f"window:{window}:seconds") or "{}")
                for name, value in seconds.items():
                    stages.setdefault(name, []).append(float(value))
                stats = json.loads(store.get_value(f"window:{window}:stats") or "{}")
                mine_scored += int(stats.get("scored", 0))
                mine_revealed += int(stats.get("revealed", 0))
                for reason, count in stats.get("unscored", {}).items():
                    unscored[reason] = unscored.get(reason, 0) + int(count)
            weights += json.loads(store.get_value("weights_seconds") or "[]")
        finally:
            store.close()
        scored += mine_scored
        revealed += mine_revealed
        per_validator.append({"scored": mine_scored, "revealed": mine_revealed,
                              "scored_fraction": round(mine_scored / mine_revealed, 4) if mine_revealed else None})
    order = [*STAGES, "total"]
    return {
        "validator_seconds_per_window": {name: spread(stages[name]) for name in order if name in stages},
        "weights_seconds_per_settlement_step": spread(weights),
        "scored_fraction": round(scored / revealed, 4) if revealed else None,
        "contributions_scored": scored, "contributions_revealed": revealed,
        # Revealed but not scored, by the reason the validator's report gives; `unaccounted` is what no reason
        # covers (must be 0: every revealed contribution is scored or rejected with a reason).
        "unscored_by_reason": dict(sorted(unscored.items())),
        "unscored_unaccounted": revealed - scored - sum(unscored.values()),
        "scored_by_validator": per_validator,
    }


def gas_figures(views: TrainingRunClient, first_block: int, end_block: int, windows: int) -> dict[str, Any]:
    """Gas used by every transaction mined in [first_block, end_block), in total and per function, per window."""
    abi: list[dict[str, Any]] = list(views.contract.abi)  # type: ignore[arg-type]
    names = {keccak(text=f"{item['name']}({','.join(_type(i) for i in item['inputs'])})")[:4]: item["name"]
             for item in abi if item.get("type") == "function"}
    by_function: dict[str, int] = {}
    total = 0
    web3 = views.web3
    for number in range(first_block, min(end_block, views.block_number() + 1)):
        block = web3.eth.get_block(number, full_transactions=True)
        if not block["transactions"]:
            continue
        # One call per block for every receipt in it (Anvil and Geth answer eth_getBlockReceipts).
        answer = web3.provider.make_request("eth_getBlockReceipts", [hex(number)])  # type: ignore[arg-type]
        used = {str(r["transactionHash"]).lower(): int(r["gasUsed"], 16) for r in answer["result"]}
        txs: list[Any] = list(block["transactions"])
        for tx in txs:
            gas = used["0x" + bytes(tx["hash"]).hex()]
            name = names.get(bytes(tx["input"])[:4], "other")
            by_function[name] = by_function.get(name, 0) + gas
            total += gas
    return {"gas_per_window": round(total / windows), "gas_total": total,
            "gas_per_window_by_function": {k: round(v / windows) for k, v in sorted(by_function.items())}}


def _type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        return f"({','.join(_type(c) for c in item['components'])}){item['type'][5:]}"
    return str(item["type"])
