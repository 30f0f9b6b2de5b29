"""Every scoring formula on tiny hand-made inputs, including Templar's known exploits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from validator.domain import ScoringError
from validator.scoring import (
    U16_MAX,
    apply_penalty,
    final_score,
    gradient_score,
    own_vs_random_indicator,
    power_normalise,
    relative_gain,
    to_u16_weights,
    update_binary_average,
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


def test_indicator_needs_strictly_more_gain_on_own_data() -> None:
    assert own_vs_random_indicator(0.3, 0.1) == 1
    assert own_vs_random_indicator(0.1, 0.3) == -1
    # A zero update gains nothing anywhere: the tie must not earn +1.
    assert own_vs_random_indicator(0.0, 0.0) == -1


def test_binary_moving_average() -> None:
    assert update_binary_average(0.0, 1) == pytest.approx(0.05)
    assert update_binary_average(0.5, -1) == pytest.approx(0.95 * 0.5 - 0.05)
    with pytest.raises(ScoringError):
        update_binary_average(0.0, 0)


def test_final_score_multiplies_clamped_factors() -> None:
    assert final_score(10.0, 0.5, 1.0) == pytest.approx(5.0)
    assert final_score(10.0, 0.5, 0.5, penalty=0.5) == pytest.approx(1.25)


def test_exploit_negative_times_negative_is_not_positive() -> None:
    # Templar: a newcomer with a negative ordinal and a negative moving average (e.g. zero gradients every
    # window) must not get a positive product.
    assert final_score(-3.0, -0.4, 1.0) == 0.0
    assert final_score(-3.0, 0.4, 1.0) == 0.0
    assert final_score(3.0, -0.4, 1.0) == 0.0


def test_exploit_penalty_never_improves_a_negative_score() -> None:
    assert apply_penalty(-5.0, 0.5) == -5.0
    assert apply_penalty(-5.0, 0.0) == -5.0
    assert apply_penalty(4.0, 0.5) == 2.0


@given(
    ordinal=st.floats(-50, 50),
    avg=st.floats(-1, 1),
    sync=st.floats(0, 1),
    penalty=st.floats(0, 1),
)
def test_final_score_is_never_negative_and_penalty_only_shrinks(
    ordinal: float, avg: float, sync: float, penalty: float
) -> None:
    unpenalised = final_score(ordinal, avg, sync)
    penalised = final_score(ordinal, avg, sync, penalty)
    assert unpenalised >= 0.0
    assert 0.0 <= penalised <= unpenalised


def test_sync_outside_unit_interval_is_refused() -> None:
    with pytest.raises(ScoringError):
        final_score(1.0, 1.0, 1.5)
    with pytest.raises(ScoringError):
        apply_penalty(1.0, 2.0)


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
