"""The marginal-value measurements on a tiny GPT: public directions carry no new information, the integrated
gradient splits the aggregate's gain additively (and sums to it), and training on one's own rows shows as
specificity while a generic update does not."""

from __future__ import annotations

import pytest
import torch

from tests.validator.pipeline_fixtures import (
    contribution,
    corpus,
    make_model,
    random_rows,
    rows,
    sparsify,
    train_delta,
)
from validator.aggregate import MedianNormClipMean
from validator.domain import ParamDict
from validator.evaluate import base_params, evaluate_rows, per_row_losses
from validator.filters import fingerprint, layout_offsets
from validator.marginal import attribute, midpoint_row_losses, public_residual, specificity

CPU = torch.device("cpu")
Setup = tuple[ParamDict, list[tuple[ParamDict, dict[str, torch.Tensor]]], list[torch.Tensor]]


@pytest.fixture(scope="module")
def setup() -> Setup:
    tokens = corpus()
    model = make_model()
    params = {n: t.clone() for n, t in base_params(model).items()}
    own = [rows(tokens, 4_000 + 9_000 * i, 6) for i in range(4)]
    updates = [sparsify(train_delta(model, params, batch, steps=10)) for batch in own]
    return params, updates, own


def _shapes(params: ParamDict) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in params.items()}


def test_public_directions_and_their_transformations_are_not_new(setup: Setup) -> None:
    params, updates, _ = setup
    shapes = _shapes(params)
    offsets = layout_offsets(shapes)
    public = [fingerprint(contribution(f"0xp{i}", 1, *u), shapes) for i, u in enumerate(updates[:2])]
    replay = contribution("0xr", 2, *updates[0])
    assert public_residual(replay.support, offsets, public).novelty < 1e-9
    mixed = {n: 3.0 * updates[0][0][n] - 0.5 * updates[1][0][n] for n in params}  # a rescaled average
    mix_idx = {n: torch.unique(torch.cat([updates[0][1][n], updates[1][1][n]])) for n in params}
    assert public_residual(contribution("0xm", 2, mixed, mix_idx).support, offsets, public).novelty < 1e-9
    half = {n: i[: max(1, i.numel() // 2)] for n, i in updates[0][1].items()}  # re-sparsified: a subset
    resparse = {n: torch.zeros_like(t).view(-1).index_put_((half[n],), t.view(-1)[half[n]]).view_as(t)
                for n, t in updates[0][0].items()}
    assert public_residual(contribution("0xs", 2, resparse, half).support, offsets, public).novelty < 1e-9
    g = torch.Generator().manual_seed(3)
    noisy = {n: t + 0.3 * t.std() * torch.randn(t.shape, generator=g) * (t != 0) for n, t in updates[0][0].items()}
    novelty = public_residual(contribution("0xn", 2, noisy, updates[0][1]).support, offsets, public).novelty
    assert 0.02 < novelty < 0.2  # only the noise is new
    fresh = public_residual(contribution("0xf", 2, *updates[3]).support, offsets, public).novelty
    assert fresh > 0.5  # another trainer's own work is mostly new


def test_integrated_gradients_split_the_aggregate_gain_additively(setup: Setup) -> None:
    params, updates, own = setup
    model = make_model()
    contribs = [contribution(f"0x{i}", 1, *u) for i, u in enumerate(updates)]
    aggregator = MedianNormClipMean(lr=1.0, momentum=0.0)
    result = aggregator.aggregate(params, contribs, {})
    step = {n: params[n] - result.params[n] for n in params}
    shares = aggregator.shares(params, contribs)
    values = {c.trainer: {n: (idx, coeff * c.support[n][1][c.support[n][1].ne(0)].double())
                          for n, (idx, coeff) in shares[c.trainer].items()} for c in contribs}
    common = torch.cat(own)
    owners = [f"0x{i}" for i in range(4) for _ in range(6)]
    with torch.inference_mode():
        common_before = per_row_losses(model, {**params, **dict(model.named_buffers())}, common)
    # The same step split in two: trainer 0x0's share halved over two "identities".
    split = dict(values)
    split["0x0"] = {n: (idx, v / 2) for n, (idx, v) in values["0x0"].items()}
    split["0x0b"] = split["0x0"]
    whole = attribute(model, params, step, values, values, common, ["" for _ in owners], common_before, CPU)
    parts = attribute(model, params, step, split, split, common, ["" for _ in owners], common_before, CPU)
    assert parts.full["0x0"] + parts.full["0x0b"] == pytest.approx(whole.full["0x0"], rel=1e-9)
    assert whole.attributed_gain == pytest.approx(whole.measured_gain, rel=0.1)
    assert whole.measured_gain > 0
    # Valued on the rows it does not own, a trainer's own rows do not count for it.
    grouped = attribute(model, params, step, values, values, common, owners, common_before, CPU)
    assert grouped.full["0x0"] != pytest.approx(whole.full["0x0"], rel=1e-6)
    assert sum(grouped.full.values()) < sum(whole.full.values())  # each update helps its own rows most


def test_training_on_ones_own_rows_shows_as_specificity(setup: Setup) -> None:
    params, updates, own = setup
    model = make_model()
    tokens = corpus()
    common = random_rows(tokens, 48, seed=11)
    mean_step = {n: torch.stack([u[0][n] for u in updates]).mean(0) for n in params}
    evaluated = evaluate_rows(model, [u[0] for u in updates], own, common, 1.0, CPU, base=params)
    mid = midpoint_row_losses(model, params, mean_step, [*own, common], 48, CPU)
    ref_common = evaluated[0].common_before - mid[-1]
    own_spec = [specificity(r.own_before - r.own_after, r.own_before - m, r.common_before - r.common_after,
                            ref_common).delta for r, m in zip(evaluated, mid, strict=False)]
    # The same updates judged on rows they were not trained on (someone else's): generic.
    swapped = evaluate_rows(model, [u[0] for u in updates], own[1:] + own[:1], common, 1.0, CPU, base=params)
    generic = [specificity(r.own_before - r.own_after, r.own_before - m, r.common_before - r.common_after,
                           ref_common).delta for r, m in zip(swapped, mid[1:4] + mid[:1], strict=True)]
    assert all(x > 0 for x in own_spec)
    assert sum(own_spec) > 3 * abs(sum(generic))
    spec = specificity(torch.ones(4), torch.zeros(4), torch.zeros(8), torch.zeros(8))
    assert spec.delta == pytest.approx(1.0) and spec.slope == 0.0
