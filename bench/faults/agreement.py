"""Validator-agreement fault scenarios (issue 14) on the real fault network (bench/faults/killnet.py): a
trainer that withholds its payload from some validators, a validator that sleeps through whole windows, and a
validator that copies the others' weights. Each also reports `forks` and `stalled_epochs`
(bench/faults/consensus.py)."""

from __future__ import annotations

import random
from pathlib import Path

from bench.faults import FaultOutcome, ScenarioFn, lag, weight_copier, withhold
from bench.faults.killnet import KillNet, KillNetSettings
from bench.faults.processes import sigterm_unwinds, whole_epochs

# Validator-agreement networks have three voting validators: the smallest count that survives one fault
# (contracts/README.md, "How many validators a run needs").
VALIDATORS = 3


def withhold_payload(faults: int, rng: random.Random, workdir: Path) -> list[FaultOutcome]:
    """Three validators of equal stake, three honest trainers; one withheld window per fault, then one clean
    window so the last withholding's adoption shows."""
    settings = KillNetSettings(trainers=3, validators=VALIDATORS, proxied=withhold.PROXIED,
                               windows=whole_epochs(faults + 1, 2), run_seed=rng.randrange(1, 2**31))
    net = KillNet(settings, workdir)
    with sigterm_unwinds():
        try:
            return withhold.scenario(faults, net.start())
        finally:
            net.close()


def validator_lag(faults: int, rng: random.Random, workdir: Path) -> list[FaultOutcome]:
    """Three validators (one frozen again and again), two honest trainers; about three windows per fault."""
    settings = KillNetSettings(trainers=2, validators=VALIDATORS,
                               windows=whole_epochs(lag.WINDOWS_PER_LAG * faults + 2, 2),
                               run_seed=rng.randrange(1, 2**31))
    net = KillNet(settings, workdir)
    with sigterm_unwinds():
        try:
            return lag.scenario(faults, rng, net.start())
        finally:
            net.close()


def copy_weights(faults: int, rng: random.Random, workdir: Path) -> list[FaultOutcome]:
    """Two honest validators and a copier of equal stake, two honest trainers; one epoch (two windows) per
    fault, the copier's strategy cycling through `report` (rebuild a ballot from the honest reports), `wait` and
    `guess` (copy the revealed median), and `lagged` (commit the previous epoch's consensus, reveal junk reports:
    its credit must be forfeited by the honest validators' dispute)."""
    settings = KillNetSettings(trainers=2, validators=2, copiers=1,
                               copier_modes=("report", "wait", "guess", "lagged"),
                               windows=2 * faults, run_seed=rng.randrange(1, 2**31))
    net = KillNet(settings, workdir)
    with sigterm_unwinds():
        try:
            net.start()
            return weight_copier.scenario(net)
        finally:
            net.close()


SCENARIOS: dict[str, ScenarioFn] = {
    "withhold": withhold_payload,
    "validator_lag": validator_lag,
    "weight_copier": copy_weights,
}
