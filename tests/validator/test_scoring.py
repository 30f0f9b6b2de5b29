"""Every scoring formula on tiny hand-made inputs, including Templar's known exploits."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from validator.domain import ScoringError
from validator.scoring import (
    MAX_GAIN_T,
    U16_MAX,
    Standing,
    apply_penalty,
    effort_factor,
    gain_t,
    gradient_score,
    maturity,
    norm_factor,
    pay_score,
    power_normalise,
    relative_gain,
    shorth_centre,
    to_u16_weights,
    update_binary_average,
    value_factor,
    weighted_median,
    window_ratio,
)


def test_gradient_score_is_relative_loss_reduction() -> None:
    assert gradient_score(4.0, 3.0) == pytest.approx(0.25)
    assert gradient_score(4.0, 5.0) == pytest.approx(-0.25)
    assert gradient_score(4.0, 4.0) == 0.0


def test_relative_gain_of_zero_loss_is_zero_not_a_division_error() -> None:
    assert relative_gain(0.0, 1.0) == 0.0


def test_nan_loss_is_refused() -> None:
    with pytest.raises(ScoringError):
        gradient_score(math.nan, 1.0)


def test_binary_moving_average() -> None:
    assert update_binary_average(0.0, 1) == pytest.approx(0.05)
    assert update_binary_average(0.5, -1) == pytest.approx(0.95 * 0.5 - 0.05)
    with pytest.raises(ScoringError):
        update_binary_average(0.0, 0)


def test_pay_score_multiplies_unit_factors_and_only_the_penalty_shrinks_it() -> None:
    assert pay_score(1.0, 0.5, 0.5) == pytest.approx(0.25)
    assert pay_score(1.0, 0.5, penalty=0.5) == pytest.approx(0.25)
    assert pay_score(0.0, 1.0) == 0.0
    with pytest.raises(ScoringError):
        pay_score(1.0, 1.5)
    with pytest.raises(ScoringError):
        pay_score(-0.1, 1.0)


def test_exploit_penalty_never_improves_a_negative_score() -> None:
    assert apply_penalty(-5.0, 0.5) == -5.0
    assert apply_penalty(-5.0, 0.0) == -5.0
    assert apply_penalty(4.0, 0.5) == 2.0
    with pytest.raises(ScoringError):
        apply_penalty(1.0, 2.0)


@given(factors=st.lists(st.floats(0, 1), min_size=1, max_size=6), penalty=st.floats(0, 1))
def test_pay_score_stays_in_the_unit_interval(factors: list[float], penalty: float) -> None:
    unpenalised = pay_score(*factors)
    assert 0.0 <= pay_score(*factors, penalty=penalty) <= unpenalised <= 1.0


def test_value_factor_peaks_at_the_typical_record() -> None:
    """Less than typical is paid in proportion; more than typical (merged or extra work, or luck) is paid less,
    so no deviation from a typical honest contribution raises pay."""
    assert value_factor(1.0, 1.0) == 1.0
    assert value_factor(0.5, 1.0) == pytest.approx(0.5)
    assert value_factor(2.0, 1.0) == pytest.approx(0.5)
    assert value_factor(-0.3, 1.0) == 0.0 and value_factor(1.0, 0.0) == 0.0


def test_effort_factor_is_convex_below_the_typical_record_and_capped_at_one() -> None:
    assert effort_factor(0.5, 1.0, 2.0) == pytest.approx(0.25)
    assert effort_factor(3.0, 1.0, 2.0) == 1.0
    assert effort_factor(0.0, 1.0, 2.0) == 0.0
    # Splitting: specificity adds up over the parts, a convex factor makes the parts earn less than the whole.
    parts = [effort_factor(x, 1.0, 2.0) for x in (0.5, 0.3, 0.2)]
    assert sum(parts) < effort_factor(1.0, 1.0, 2.0)


def test_norm_factor_pays_an_oversized_update_in_inverse_proportion() -> None:
    assert norm_factor(0.5, 1.0) == 1.0 and norm_factor(1.0, 1.0) == 1.0
    assert norm_factor(4.0, 1.0) == pytest.approx(0.25)


def test_window_ratio_is_clipped_and_needs_a_positive_reference() -> None:
    assert window_ratio(2.0, 4.0) == pytest.approx(0.5)
    assert window_ratio(100.0, 1.0) == 3.0 and window_ratio(-100.0, 1.0) == -1.0
    assert window_ratio(1.0, 0.0) is None and window_ratio(1.0, -1.0) is None


def test_standing_is_a_decayed_weighted_record() -> None:
    record = Standing().updated(1.0, 0.5, evidence=4.0, decay=0.5)
    assert record.value == pytest.approx(1.0) and record.effort == pytest.approx(0.5)
    record = record.updated(0.0, None, evidence=9.0, decay=0.5)  # no effort yardstick this window
    assert record.value == pytest.approx(0.5 / 1.5)
    assert record.effort == pytest.approx(0.5) and record.effort_weight == 4.0
    later = record.updated(None, 1.0, evidence=0.0, decay=0.5)  # an uninformative window changes nothing
    assert later.effort == pytest.approx(0.5)
    assert Standing().value == 0.0 and Standing().effort == 0.0
    with pytest.raises(ScoringError):
        Standing().updated(1.0, 1.0, evidence=1.0, decay=1.0)


def test_maturity_grows_with_evidence() -> None:
    assert maturity(0.0, 10.0) == 0.0
    assert maturity(10.0, 10.0) == pytest.approx(0.5)
    assert maturity(90.0, 10.0) == pytest.approx(0.9)


def test_weighted_median_ignores_what_carries_no_weight() -> None:
    """Replays and partial workers (little effort) must not drag the typical value record down."""
    assert weighted_median([(0.1, 0.0), (0.2, 0.0), (1.0, 1.0), (1.2, 1.0), (1.4, 1.0)]) == 1.2
    assert weighted_median([(0.5, 0.2), (1.0, 1.0), (1.1, 1.0)]) == 1.0
    assert weighted_median([(3.0, 0.0), (1.0, 0.0)]) == 2.0 and weighted_median([]) == 0.0
    with pytest.raises(ScoringError):
        weighted_median([(1.0, -1.0)])


def test_shorth_centre_finds_the_majority_not_the_median() -> None:
    """Three weak identities below five honest ones pull the median down to the weakest honest trainer; the
    densest half stays on the honest ones."""
    values = [0.3, 0.35, 0.4, 0.95, 1.0, 1.02, 1.05, 1.1]
    assert shorth_centre(values) == pytest.approx((0.95 + 1.1) / 2)
    assert shorth_centre([2.0]) == 2.0 and shorth_centre([1.0, 3.0]) == 2.0 and shorth_centre([]) == 0.0


def test_power_normalisation() -> None:
    assert power_normalise([1.0, 1.0, 2.0], power=2) == pytest.approx([1 / 6, 1 / 6, 4 / 6])
    assert power_normalise([1.0, 3.0], power=1) == pytest.approx([0.25, 0.75])
    assert power_normalise([-2.0, 2.0], power=2) == pytest.approx([0.0, 1.0])


def test_power_normalisation_of_all_zero_is_all_zero() -> None:
    assert power_normalise([0.0, 0.0, -1.0]) == [0.0, 0.0, 0.0]
    assert power_normalise([]) == []


def test_to_u16_weights_sums_to_max_for_a_full_vector() -> None:
    packed = to_u16_weights([1 / 3, 1 / 3, 1 / 3])
    assert sum(packed) == U16_MAX
    assert packed == [21845, 21845, 21845]
    assert to_u16_weights([0.5, 0.5]) == [32768, 32767]  # leftover unit to the lower index on a tie


def test_to_u16_weights_edge_cases() -> None:
    assert to_u16_weights([0.0, 0.0]) == [0, 0]
    assert to_u16_weights([1.0]) == [U16_MAX]
    with pytest.raises(ScoringError):
        to_u16_weights([0.7, 0.7])
    with pytest.raises(ScoringError):
        to_u16_weights([-0.1, 0.5])


@given(st.lists(st.floats(0, 100), min_size=1, max_size=40))
def test_to_u16_weights_never_exceeds_the_contract_budget(scores: list[float]) -> None:
    packed = to_u16_weights(power_normalise(scores))
    assert sum(packed) <= U16_MAX
    assert all(0 <= x <= U16_MAX for x in packed)


def test_the_aggregation_bar_keeps_out_what_helps_far_less_than_the_typical_update() -> None:
    from validator.scoring import aggregation_bar

    honest = [0.074, 0.078, 0.083, 0.083, 0.086, 0.080]
    bar = aggregation_bar([*honest, 0.011, 0.0, -0.05], floor=0.0, relative=0.25)
    assert 0.011 < bar < min(honest)  # the clipped poisoner and the noise stay out, every honest update is in
    assert aggregation_bar([-0.1, 0.0], floor=0.0, relative=0.25) == 0.0  # nothing helps: the floor
    assert aggregation_bar(honest, floor=0.05, relative=0.0) == 0.05  # the relative bar switched off
    assert aggregation_bar([0.02, 0.04, 0.06], floor=0.0, relative=0.5) == 0.02  # half the median 0.04


def test_gain_t_separates_a_consistent_gain_from_a_chance_one() -> None:
    rng = random.Random(3)
    before = [3.0 + rng.random() for _ in range(48)]
    helps = [b - 0.05 - rng.gauss(0.0, 0.02) for b in before]  # lower on nearly every row
    noise = [b + rng.gauss(0.0, 0.02) for b in before]  # moves rows either way
    noise_mean_gain = sum(b - a for b, a in zip(before, noise, strict=True)) / 48
    assert gain_t(before, helps) > 10.0
    assert abs(gain_t(before, noise)) < 3.0
    # a chance gain can have the larger mean than a small real one, but never its significance
    small = [b - abs(noise_mean_gain) / 2 - rng.gauss(0.0, 0.001) for b in before]
    assert gain_t(before, small) > gain_t(before, noise)


def test_gain_t_edge_cases_stay_finite() -> None:
    assert gain_t([1.0, 2.0], [0.5, 1.5]) == MAX_GAIN_T  # the same gain on every row: no spread
    assert gain_t([1.0], [1.5]) == -MAX_GAIN_T
    assert gain_t([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert gain_t([], []) == 0.0
    with pytest.raises(ScoringError):
        gain_t([1.0], [1.0, 2.0])
