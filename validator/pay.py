"""A window's pay stage: from the valuation's measurements (validator/valuation.py) and every trainer's record
(validator/scoring.Standing) to each scored contribution's `final` score. The formulas are in
validator/scoring.py; this module only applies them to a window, deterministically (trainers in sorted order)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from base.report import ValuationInfo
from validator.domain import Contribution
from validator.scoring import (
    Standing,
    effort_factor,
    maturity,
    norm_factor,
    pay_score,
    shorth_centre,
    value_factor,
    weighted_median,
    window_ratio,
)
from validator.valuation import Valuation


@dataclass(frozen=True)
class PayConfig:
    # The figures below replay this pay stage over the measurements of the three-seed bench.incentives run (30
    # windows, every strategy; the measurements do not depend on the pay rule). "Honest spread" is max/min of
    # the honest trainers' pay, each over its three seeds.
    # Records remember about 1 / (1 − decay) windows: 0.8 / 0.9 / 0.95 all kept every strategy within its
    # bound; the 3-identity spread split earned 0.83 / 0.70 / 0.65 of an honest trainer, honest spread 1.29 /
    # 1.30 / 1.33.
    decay: float = 0.9
    # Effort enters squared: specificity adds up over the parts of a split update, and a convex factor makes
    # the parts earn less than the whole. Power 1.5 / 2 / 3: the spread split earned 0.94 / 0.70 / 0.44 of an
    # honest trainer, honest spread 1.27 / 1.30 / 1.33.
    effort_power: float = 2.0
    # The value factor enters squared: marginal value grows faster than compute (H/2 steps at twice the inner
    # lr reached 0.55 of an honest update's value and an honest-level specificity). Replayed over the
    # three-seed tournament's measurements, power 1 / 1.5 / 2 / 2.5 paid that strategy 0.64 / 0.55 / 0.47 /
    # 0.42 of an honest trainer (bound 0.5); the honest pay spread (max/min per trainer over the seeds) grew
    # 1.19 / 1.25 / 1.30 / 1.35.
    value_power: float = 2.0
    # Evidence (Σ decayed squared t-statistics) worth half a full record, for the maturity factor and for
    # pulling a thin effort record towards the typical one before it is squared. An honest trainer's
    # specificity t-statistic is ~1 for the first 8 windows of the tiny model (generic learning swamps row
    # memorisation) and 3–4 from window 12 on. Prior ~0 / 10 / 30: a single step earned 0.19 / 0.11 / 0.11 of
    # an honest trainer (bound 0.17), H/2 steps at 2× lr 0.56 / 0.47 / 0.45 (bound 0.5), the spread split
    # 0.50 / 0.70 / 1.09 (bound 1); honest spread 1.52 / 1.30 / 1.25.
    evidence_prior: float = 10.0


@dataclass(frozen=True)
class WindowPay:
    rows: dict[str, dict[str, float]]  # trainer → the pay numbers of its ContributionScore
    standing: dict[str, Standing]  # the records after this window (scored trainers updated, others kept)
    info: ValuationInfo


def pay_window(scored: Sequence[Contribution], aggregated: Sequence[Contribution], valued: Valuation,
               norms: Mapping[str, float], median_norm: float, penalties: Mapping[str, float],
               standing: Mapping[str, Standing], config: PayConfig) -> WindowPay:
    in_aggregate = {c.trainer for c in aggregated}
    spec = valued.specificity
    value_ref = statistics.median([valued.value[t] for t in sorted(in_aggregate)]) if in_aggregate else 0.0
    spec_ref = valued.info.specificity_ref
    t_stats = [spec[t].delta / spec[t].se for t in sorted(in_aggregate) if spec[t].se > 0.0]
    evidence = max(0.0, statistics.median(t_stats)) ** 2 if t_stats else 0.0
    records = dict(standing)
    ratios: dict[str, tuple[float | None, float | None]] = {}
    for c in sorted(scored, key=lambda c: c.trainer):
        q = window_ratio(valued.value[c.trainer], value_ref)
        p = window_ratio(spec[c.trainer].delta, spec_ref)
        ratios[c.trainer] = (q, p)
        records[c.trainer] = records.get(c.trainer, Standing()).updated(q, p, evidence, config.decay)
    typical_effort = shorth_centre([records[t].effort for t in sorted(in_aggregate)])
    efforts = {t: effort_factor(shrunk_effort(records[t], typical_effort, config.evidence_prior), typical_effort,
                                config.effort_power) for t in sorted(records)}
    # The typical value record: the median of the aggregated trainers' records, each counted by its effort, so
    # that identities that did not train on their own rows (replays, partial work) do not drag the yardstick
    # below the honest trainers (who would then be folded down). Same replay: the spread-free shorth centre paid
    # the 2×-lr partial worker 0.55, this 0.47.
    typical_value = weighted_median([(records[t].value, efforts[t]) for t in sorted(in_aggregate)])
    shares = cluster_shares(scored, {t: s.delta for t, s in spec.items()})
    rows: dict[str, dict[str, float]] = {}
    for c in sorted(scored, key=lambda c: c.trainer):
        t, record = c.trainer, records[c.trainer]
        # Paid only for an update that entered the aggregate (a cluster enters through one member).
        counted = t in in_aggregate or any(m in in_aggregate for m in c.sybil_cluster)
        v_factor = value_factor(record.value, typical_value) ** config.value_power
        e_factor = efforts[t]
        mature = maturity(record.effort_weight, config.evidence_prior)
        nu = norm_factor(norms[t], median_norm)
        final = pay_score(float(counted), v_factor, e_factor, mature, nu, shares[t], penalty=penalties[t])
        potential = pay_score(float(counted), v_factor, e_factor, 1.0, nu, shares[t], penalty=penalties[t])
        q, p = ratios[t]
        rows[t] = dict(value_ratio=q or 0.0, effort_ratio=p or 0.0, value_standing=record.value,
                       effort_standing=record.effort, value_factor=v_factor, effort=e_factor, maturity=mature,
                       norm_factor=nu, share=shares[t], final=final, potential=potential)
    info = ValuationInfo(
        measured_gain=valued.info.measured_gain, attributed_gain=valued.info.attributed_gain, value_ref=value_ref,
        specificity_ref=spec_ref, evidence=evidence, typical_value=typical_value, typical_effort=typical_effort,
        median_norm=median_norm, public_vectors=valued.info.public_vectors,
        total_final=sum(r["final"] for r in rows.values()))
    return WindowPay(rows=rows, standing=records, info=info)


def shrunk_effort(record: Standing, typical: float, prior: float) -> float:
    """The effort record pulled towards the typical one by `prior` units of evidence: a thin record (a
    newcomer's, or anyone's in the first windows, whose specificity tests are noise) is not squared into a
    lottery; the maturity factor keeps such a record from earning much either way."""
    weight = record.effort_weight + prior
    return (record.effort_weight * record.effort + prior * typical) / weight if weight > 0.0 else 0.0


def cluster_shares(scored: Sequence[Contribution], specificity: Mapping[str, float]) -> dict[str, float]:
    """A Sybil cluster (near-identical updates in one window) is one contribution, and together its members earn
    1/|cluster| of it: sending one update from n identities earns less than sending it once (the old rule,
    validator/filters.SybilClusterFilter, kept). Within the cluster, members share in proportion to their
    positive specificity (equally when none has any): the identity that trained on its own rows keeps the
    cluster's pay and the copies, whose own rows were never trained on, get next to nothing.

    Known limit: the validator cannot tell a Sybil swarm (an operator's honest update sent again by its other
    identities) from griefing (an attacker trains on a victim's public assignment to make a near copy of the
    victim's update). Both are "one trained update plus copies"; the victim of griefing then earns 1/2 of its
    pay for the windows it is copied in, the attacker nothing for its full compute."""
    shares = {c.trainer: 1.0 for c in scored}
    for c in scored:
        members = [m for m in c.sybil_cluster if m in shares]
        if not members:
            continue
        positive = {m: max(0.0, specificity[m]) for m in members}
        total = sum(positive.values())
        within = positive[c.trainer] / total if total > 0.0 else 1.0 / len(members)
        shares[c.trainer] = within / len(c.sybil_cluster)
    return shares
