"""Aggregation: median-norm clipping, coordinate-wise mean over contributors, Nesterov outer step,
determinism, and that the rule can be swapped."""

from __future__ import annotations

import pytest
import torch

from tests.validator.pipeline_fixtures import contribution
from validator.aggregate import MeanAggregator, MedianNormClipMean, delta_norm
from validator.domain import Contribution, ParamDict


def _c(trainer: str, values: list[float]) -> Contribution:
    delta = {"w": torch.tensor(values, dtype=torch.float32)}
    idx = {"w": torch.tensor(values).nonzero().flatten()}
    return contribution(trainer, 0, delta, idx)


PARAMS: ParamDict = {"w": torch.zeros(4), "b": torch.ones(2)}


def test_coordinate_mean_counts_only_contributors() -> None:
    contribs = [_c("0xa", [2.0, 0.0, 0.0, 0.0]), _c("0xb", [0.0, 2.0, 0.0, 0.0]), _c("0xc", [2.0, 0.0, 0.0, 0.0])]
    result = MedianNormClipMean(lr=1.0, momentum=0.0, nesterov=False).aggregate(PARAMS, contribs, {})
    # Each coordinate averaged over the updates that chose it: 2 (two of them), 2 (one), and no change elsewhere.
    assert result.params["w"].tolist() == [-2.0, -2.0, 0.0, 0.0]
    assert torch.equal(result.params["b"], PARAMS["b"])
    assert result.info.contributors == ("0xa", "0xb", "0xc")
    assert result.info.clip_norm == 2.0


def test_scaled_up_update_is_clipped_to_the_median_norm() -> None:
    honest = [_c("0xa", [1.0, 0.0, 0.0, 0.0]), _c("0xb", [1.0, 0.0, 0.0, 0.0])]
    attacker = _c("0xevil", [1000.0, 0.0, 0.0, 0.0])
    result = MedianNormClipMean(lr=1.0, momentum=0.0, nesterov=False).aggregate(PARAMS, [*honest, attacker], {})
    assert result.info.clip_norm == 1.0
    assert result.info.delta_norms["0xevil"] == 1000.0
    assert result.params["w"][0].item() == pytest.approx(-1.0)


def test_median_of_an_even_set_is_the_mean_of_the_middle_two() -> None:
    contribs = [_c(f"0x{i}", [float(v), 0.0, 0.0, 0.0]) for i, v in enumerate([1, 2, 4, 100])]
    assert MedianNormClipMean().aggregate(PARAMS, contribs, {}).info.clip_norm == 3.0


def test_nesterov_momentum_state_is_carried() -> None:
    agg = MedianNormClipMean(lr=0.5, momentum=0.9, nesterov=True)
    first = agg.aggregate(PARAMS, [_c("0xa", [1.0, 0.0, 0.0, 0.0])], {})
    # buf = g = 1; step = g + 0.9·buf = 1.9; θ = 0 − 0.5·1.9
    assert first.params["w"][0].item() == pytest.approx(-0.95)
    assert first.momentum["w"][0].item() == pytest.approx(1.0)
    second = agg.aggregate(first.params, [_c("0xa", [1.0, 0.0, 0.0, 0.0])], first.momentum)
    # buf = 0.9·1 + 1 = 1.9; step = 1 + 0.9·1.9 = 2.71
    assert second.momentum["w"][0].item() == pytest.approx(1.9)
    assert second.params["w"][0].item() == pytest.approx(-0.95 - 0.5 * 2.71)


def test_aggregate_is_deterministic_and_order_free_and_does_not_mutate() -> None:
    g = torch.Generator().manual_seed(0)
    contribs = [_c(f"0x{i}", torch.randn(4, generator=g).tolist()) for i in range(5)]
    params = {n: t.clone() for n, t in PARAMS.items()}
    one = MedianNormClipMean().aggregate(params, contribs, {})
    two = MedianNormClipMean().aggregate(params, list(reversed(contribs)), {})
    assert all(torch.equal(one.params[n], two.params[n]) for n in params)
    assert one.info == two.info
    assert all(torch.equal(params[n], PARAMS[n]) for n in params)


def test_no_contribution_leaves_model_and_momentum_unchanged() -> None:
    momentum = {"w": torch.ones(4), "b": torch.zeros(2)}
    result = MedianNormClipMean().aggregate(PARAMS, [], momentum)
    assert all(torch.equal(result.params[n], PARAMS[n]) for n in PARAMS)
    assert torch.equal(result.momentum["w"], momentum["w"])
    assert result.info.contributors == ()


def test_mean_aggregator_swaps_in() -> None:
    contribs = [_c("0xa", [2.0, 0.0, 0.0, 0.0]), _c("0xb", [0.0, 2.0, 0.0, 0.0])]
    result = MeanAggregator(lr=1.0).aggregate(PARAMS, contribs, {})
    assert result.params["w"].tolist() == [-1.0, -1.0, 0.0, 0.0]
    assert result.info.method == "mean"


def test_delta_norm() -> None:
    assert delta_norm({"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}) == 5.0
