"""Batched evaluation equals the naive per-contribution computation, never touches the base weights and
is deterministic; a harmful update measures as harmful."""

from __future__ import annotations

import pytest
import torch

from base.model import evaluate_loss
from tests.validator.pipeline_fixtures import (
    corpus,
    make_model,
    noise_update,
    random_rows,
    rows,
    sparsify,
    train_delta,
)
from validator.domain import EvaluationError, ParamDict
from validator.evaluate import (
    base_params,
    evaluate_contributions,
    forward_equivalents,
    own_rows_for_budget,
)
from validator.scoring import gradient_score


def _naive_loss(params: ParamDict, batch: torch.Tensor) -> float:
    model = make_model()
    model.load_state_dict({**model.state_dict(), **params})
    return evaluate_loss(model, batch, chunk=batch.size(0))


@pytest.fixture(scope="module")
def setup() -> tuple[ParamDict, list[ParamDict], list[torch.Tensor], torch.Tensor]:
    tokens = corpus()
    model = make_model()
    params = {n: t.clone() for n, t in base_params(model).items()}
    own = [rows(tokens, 5_000 * (i + 1), 4) for i in range(3)]
    deltas = [sparsify(train_delta(model, params, b))[0] for b in own]
    return params, deltas, own, random_rows(tokens, 32, seed=7)


def test_batched_evaluation_equals_naive(setup: tuple[ParamDict, list[ParamDict], list[torch.Tensor], torch.Tensor]
                                         ) -> None:
    params, deltas, own, random_batch = setup
    results = evaluate_contributions(make_model(), deltas, own, random_batch, 1.0, "cpu", base=params)
    for delta, own_batch, r in zip(deltas, own, results, strict=True):
        after = {n: params[n] - delta[n] for n in params}
        assert r.loss_before_random == pytest.approx(_naive_loss(params, random_batch), rel=1e-5)
        assert r.loss_before_own == pytest.approx(_naive_loss(params, own_batch), rel=1e-5)
        assert r.loss_after_random == pytest.approx(_naive_loss(after, random_batch), rel=1e-5)
        assert r.loss_after_own == pytest.approx(_naive_loss(after, own_batch), rel=1e-5)
        # An honest update lowers the loss, and more on the data it trained on.
        assert r.loss_after_random < r.loss_before_random
        assert r.loss_after_own < r.loss_before_own


def test_evaluation_is_deterministic_and_leaves_base_untouched(
    setup: tuple[ParamDict, list[ParamDict], list[torch.Tensor], torch.Tensor],
) -> None:
    _, deltas, own, random_batch = setup
    model = make_model()
    snapshot = {n: t.clone() for n, t in base_params(model).items()}
    first = evaluate_contributions(model, deltas, own, random_batch, 0.5, "cpu")
    second = evaluate_contributions(model, deltas, own, random_batch, 0.5, "cpu")
    assert first == second
    for name, tensor in base_params(model).items():
        assert torch.equal(tensor, snapshot[name])


def test_sign_flipped_and_scaled_updates_score_negative(
    setup: tuple[ParamDict, list[ParamDict], list[torch.Tensor], torch.Tensor],
) -> None:
    params, deltas, own, random_batch = setup
    flipped = {n: -t for n, t in deltas[0].items()}
    blown_up = {n: 50.0 * t for n, t in deltas[0].items()}
    noise, _ = noise_update(params, 0.05, seed=3)
    results = evaluate_contributions(make_model(), [deltas[0], flipped, blown_up, noise], [own[0]] * 4,
                                     random_batch, 1.0, "cpu", base=params)
    s = [gradient_score(r.loss_before_random, r.loss_after_random) for r in results]
    assert s[0] > 0
    assert s[1] < 0 and s[2] < 0 and s[3] < 0


def test_mismatched_delta_is_refused(setup: tuple[ParamDict, list[ParamDict], list[torch.Tensor], torch.Tensor]
                                     ) -> None:
    params, _, own, random_batch = setup
    with pytest.raises(EvaluationError, match="unknown tensor"):
        evaluate_contributions(make_model(), [{"nope": torch.zeros(3)}], [own[0]], random_batch, 1.0, "cpu")
    name = next(iter(params))
    with pytest.raises(EvaluationError, match="shape"):
        evaluate_contributions(make_model(), [{name: torch.zeros(3)}], [own[0]], random_batch, 1.0, "cpu")
    with pytest.raises(EvaluationError, match="width"):
        evaluate_contributions(make_model(), [{}], [own[0][:, :5]], random_batch, 1.0, "cpu")


def test_own_rows_fit_the_cost_budget() -> None:
    assert own_rows_for_budget(32) == 4
    assert own_rows_for_budget(64, budget=1.25) == 8
    assert forward_equivalents(32, own_rows_for_budget(32), 32) <= 1.3 + 1 / 32
    assert own_rows_for_budget(2) == 1
