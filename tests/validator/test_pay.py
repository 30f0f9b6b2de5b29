"""Identity games against the pay stage, on synthetic measurements over many windows: splitting one trainer's
work over several identities, merging several identities' work into one, and near copies (a Sybil swarm, or an
attacker who trains on a victim's public assignment) never raise total pay above what the work earns alone."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable

import pytest
import torch

from base.report import ValuationInfo
from validator.domain import Contribution
from validator.filters import UpdateFingerprint
from validator.marginal import Specificity
from validator.pay import PayConfig, cluster_shares, pay_window
from validator.scoring import Standing
from validator.valuation import Valuation

HONEST = [f"0xh{i}" for i in range(5)]
# trainer → (value, specificity) drawn for one window; honest work is (1, 1) plus measurement noise.
Draw = Callable[[random.Random], dict[str, tuple[float, float]]]


def _contribution(trainer: str, cluster: tuple[str, ...] = ()) -> Contribution:
    return Contribution(trainer=trainer, window=0, cid=f"bafk{trainer}", base_model_cid="m", delta={}, indices={},
                        sybil_cluster=cluster)


def play(draw: Draw, windows: int = 60, seed: int = 0, norms: dict[str, float] | None = None,
         clusters: dict[str, tuple[str, ...]] | None = None) -> dict[str, float]:
    """Σ final per trainer over `windows` windows (the epoch weight before normalisation)."""
    rng = random.Random(seed)
    standing: dict[str, Standing] = {}
    pay: dict[str, float] = {}
    for w in range(windows):
        numbers = {t: (v * (1 + 0.35 * rng.gauss(0, 1)), s + 0.35 * max(abs(s), 1.0) * rng.gauss(0, 1))
                   for t, (v, s) in draw(rng).items()}
        scored = [_contribution(t, (clusters or {}).get(t, ())) for t in sorted(numbers)]
        # A cluster enters the aggregate through one member, the others do not.
        aggregated = [c for c in scored if not c.sybil_cluster or c.trainer == c.sybil_cluster[0]]
        specs = {t: Specificity(delta=s, se=0.3, slope=0.0) for t, (_, s) in numbers.items()}  # honest t ≈ 3
        value = {t: v for t, (v, _) in numbers.items()}
        for c in scored:
            if c.sybil_cluster:
                value[c.trainer] = value[c.sybil_cluster[0]]
        ref = statistics.median(specs[c.trainer].delta for c in aggregated)
        valued = Valuation(value=value, value_full=value, novelty={t: 1.0 for t in value}, specificity=specs,
                           info=ValuationInfo(specificity_ref=ref),
                           step=UpdateFingerprint("aggregate", w, "", torch.empty(0, dtype=torch.long),
                                                  torch.empty(0, dtype=torch.float64)))
        norm = norms or {}
        paid = pay_window(scored, aggregated, valued, {t: norm.get(t, 1.0) for t in value}, 1.0,
                          {t: 1.0 for t in value}, standing, PayConfig())
        standing = paid.standing
        for t, row in paid.rows.items():
            pay[t] = pay.get(t, 0.0) + row["final"]
    return pay


def honest_mean(pay: dict[str, float]) -> float:
    return statistics.fmean(pay[t] for t in HONEST)


def honest_only(rng: random.Random) -> dict[str, tuple[float, float]]:
    return {t: (1.0, 1.0) for t in HONEST}


def test_honest_trainers_doing_the_same_work_are_paid_alike() -> None:
    pay = play(honest_only)
    assert max(pay.values()) / min(pay.values()) < 1.3


@pytest.mark.parametrize("parts", [2, 3])
def test_splitting_one_update_over_identities_earns_less_than_sending_it_once(parts: int) -> None:
    """Each part carries a share of the value (the parts together even send more coefficients than one identity
    may: 1.3× the value) and of the specificity, which adds up over the parts."""
    split = [f"0xs{i}" for i in range(parts)]

    def draw(rng: random.Random) -> dict[str, tuple[float, float]]:
        return {**honest_only(rng), **{t: (1.3 / parts, 1.0 / parts) for t in split}}

    pay = play(draw)
    assert sum(pay[t] for t in split) < 0.75 * honest_mean(pay)


def test_merging_two_identities_work_into_one_earns_no_more_than_one_honest_trainer() -> None:
    """Two trainers' updates averaged (more value per norm, half the specificity) or summed (twice the norm)."""
    def draw(rng: random.Random) -> dict[str, tuple[float, float]]:
        return {**honest_only(rng), "0xmean": (1.5, 0.6), "0xsum": (1.6, 1.0)}

    pay = play(draw, norms={"0xsum": 2.0})
    assert pay["0xmean"] < honest_mean(pay) and pay["0xsum"] < honest_mean(pay)


def test_a_near_copy_cluster_earns_a_fraction_of_one_contribution_and_the_copies_next_to_nothing() -> None:
    """A swarm sending one trainer's update from three identities earns 1/3 of what that trainer would alone;
    within it, the identity that trained on its own rows keeps the share, the copies get next to nothing."""
    cluster = ("0xs0", "0xs1", "0xs2")

    def draw(rng: random.Random) -> dict[str, tuple[float, float]]:
        return {**honest_only(rng), "0xs0": (1.0, 1.0), "0xs1": (1.0, 0.0), "0xs2": (1.0, 0.0)}

    pay = play(draw, clusters={t: cluster for t in cluster})
    swarm = sum(pay[t] for t in cluster)
    assert swarm <= honest_mean(pay) / len(cluster) + 1e-9
    assert pay["0xs1"] + pay["0xs2"] < 0.1 * pay["0xs0"]


def test_cluster_shares_follow_positive_specificity() -> None:
    members = ("0xa", "0xb")
    scored = [_contribution("0xa", members), _contribution("0xb", members), _contribution("0xc")]
    assert cluster_shares(scored, {"0xa": 3.0, "0xb": 1.0, "0xc": 5.0}) == {"0xa": 0.375, "0xb": 0.125, "0xc": 1.0}
    assert cluster_shares(scored, {"0xa": -1.0, "0xb": 0.0, "0xc": 5.0})["0xa"] == 0.25


def test_potential_is_the_final_at_full_maturity() -> None:
    """The epoch's payout is Σ final / Σ potential (validator/scoring.epoch_payout): the potential must be the
    same product with maturity 1, so that an immature epoch pays its maturity's share and no more."""
    scored = [_contribution(t) for t in HONEST]
    specs = {t: Specificity(delta=1.0 + 0.1 * i, se=0.3, slope=0.0) for i, t in enumerate(HONEST)}
    valued = Valuation(value={t: 1.0 for t in HONEST}, value_full={t: 1.0 for t in HONEST},
                       novelty={t: 1.0 for t in HONEST}, specificity=specs, info=ValuationInfo(specificity_ref=1.2),
                       step=UpdateFingerprint("aggregate", 0, "", torch.empty(0, dtype=torch.long),
                                              torch.empty(0, dtype=torch.float64)))
    paid = pay_window(scored, scored, valued, {t: 1.0 for t in HONEST}, 1.0, {t: 1.0 for t in HONEST}, {},
                      PayConfig())
    for row in paid.rows.values():
        assert 0.0 < row["maturity"] < 1.0 and row["final"] > 0.0
        assert row["potential"] == pytest.approx(row["final"] / row["maturity"])
