"""Fault-injection campaign: scenarios that break real processes (validator, trainers, IPFS, chain) and
check afterwards, from persisted state and the chain, that nothing was lost or applied twice.

A scenario is a function `(faults, rng, workdir) -> list[FaultOutcome]`: it injects about `faults` faults of
its kind into a real local network it starts under `workdir`, and returns one outcome per injected fault.
Each scenario module exposes `SCENARIOS: dict[str, ScenarioFn]`; `python -m bench.faults` runs them all."""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCENARIO_MODULES = ("bench.faults.processes", "bench.faults.agreement", "bench.faults.ipfs", "bench.faults.chain")


@dataclass(frozen=True)
class FaultOutcome:
    """What one injected fault did. `lost` counts contributions, scores, rewards or reports that an
    uninterrupted run has and this one does not; `double_applied` counts anything scored, submitted or
    paid twice; `forks` counts windows in which validators scored against different bases, or against another
    base than the canonical model before it, after its deadline; `stalled_epochs` counts epochs settled without
    trainer rewards while honest trainers worked and the validators' ballots would pay them (bench/faults/
    consensus.py); `unpaid_by_scoring` counts epochs that paid trainers nothing because every ballot gave their
    served work 0 (the scoring rule, not the agreement; reported, not a failure)."""

    scenario: str
    fault: str
    recovered: bool
    lost: int = 0
    double_applied: int = 0
    detail: str = ""
    forks: int = 0
    stalled_epochs: int = 0
    unpaid_by_scoring: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ScenarioFn = Callable[[int, random.Random, Path], list[FaultOutcome]]


def all_scenarios() -> dict[str, ScenarioFn]:
    """Every scenario of every module in SCENARIO_MODULES that exists (modules are added one by one)."""
    scenarios: dict[str, ScenarioFn] = {}
    for name in SCENARIO_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        scenarios.update(module.SCENARIOS)
    return scenarios


def summarise(outcomes: list[FaultOutcome]) -> dict[str, Any]:
    """The campaign's top-level figures (what bench/results/faults.json leads with)."""
    return {
        "faults_injected": len(outcomes),
        "recovered": sum(o.recovered for o in outcomes),
        "lost": sum(o.lost for o in outcomes),
        "double_applied": sum(o.double_applied for o in outcomes),
        "forks": sum(o.forks for o in outcomes),
        "stalled_epochs": sum(o.stalled_epochs for o in outcomes),
        "unpaid_by_scoring": sum(o.unpaid_by_scoring for o in outcomes),
    }
