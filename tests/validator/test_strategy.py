"""The whole scoring chain on a tiny GPT over two windows: four honest trainers, a copier of an earlier
window, a noise sender, a zero sender, a missing reveal and a Sybil pair. Honest trainers get the weight."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from base.report import Rejection, RejectReason, WindowReport
from tests.validator.pipeline_fixtures import (
    contribution,
    corpus,
    make_model,
    noise_update,
    perturbed,
    random_rows,
    rows,
    sparsify,
    train_delta,
    zero_update,
)
from validator.aggregate import MeanAggregator
from validator.domain import ParamDict
from validator.evaluate import base_params
from validator.strategy import ScoringStrategy, ValidatorState, WindowInputs

HONEST = ["0xh0", "0xh1", "0xh2", "0xh3"]


@dataclass
class TwoWindows:
    inputs: list[WindowInputs]
    reports: list[WindowReport]
    params: list[ParamDict]
    states: list[ValidatorState]


def _own(tokens: torch.Tensor, trainer: str, window: int) -> torch.Tensor:
    slot = (["0xh0", "0xh1", "0xh2", "0xh3", "0xcopier", "0xnoise", "0xzero", "0xsyb0", "0xsyb1", "0xflip",
             "0xscaled", "0xflipscaled"].index(trainer))
    return rows(tokens, 3_000 + 17_000 * slot + 1_000 * window, 4)


def _window_inputs(window: int, params: ParamDict, earlier_honest: ParamDict | None,
                   earlier_idx: dict[str, torch.Tensor] | None) -> tuple[WindowInputs, dict[str, ParamDict]]:
    tokens = corpus()
    model = make_model()
    base = f"bafk-model-{window}"
    own = {t: _own(tokens, t, window) for t in HONEST}
    updates = {t: sparsify(train_delta(model, params, own[t])) for t in HONEST}
    contribs = [contribution(t, window, *updates[t], base=base) for t in HONEST]
    rejections: list[Rejection] = []
    if earlier_honest is not None and earlier_idx is not None:
        own.update({t: _own(tokens, t, window) for t in ["0xcopier", "0xnoise", "0xzero"]})
        contribs.append(contribution("0xcopier", window, perturbed(earlier_honest, earlier_idx, 0.1, 5),
                                     earlier_idx, base=base))
        contribs.append(contribution("0xnoise", window, *noise_update(params, 0.05, seed=window), base=base))
        contribs.append(contribution("0xzero", window, *zero_update(params), base=base))
        rejections.append(Rejection("0xlazy", window, RejectReason.MISSING_REVEAL, "no reveal"))
    inputs = WindowInputs(window=window, block_hash=f"0x{window:064x}", base_model_cid=base, params=params,
                          contributions=contribs, own_batches=own,
                          common_batch=random_rows(tokens, 32, seed=100 + window), prior_rejections=rejections)
    return inputs, {t: u[0] for t, u in updates.items()} | {f"idx:{t}": u[1] for t, u in updates.items()}


@pytest.fixture(scope="module")
def run() -> TwoWindows:
    strategy = ScoringStrategy(make_model(), device="cpu")
    params0 = {n: t.clone() for n, t in base_params(make_model()).items()}
    in0, updates0 = _window_inputs(0, params0, None, None)
    report0, params1, state1 = strategy.score_window(in0, ValidatorState())
    in1, _ = _window_inputs(1, params1, updates0["0xh0"], updates0["idx:0xh0"])
    report1, params2, state2 = strategy.score_window(in1, state1)
    return TwoWindows([in0, in1], [report0, report1], [params0, params1, params2], [state1, state2])


def test_honest_trainers_get_all_the_weight(run: TwoWindows) -> None:
    report = run.reports[1]
    weights = {s.trainer: s.weight for s in report.scores}
    assert sum(weights[t] for t in HONEST) == pytest.approx(1.0)
    assert sum(1 for t in HONEST if weights[t] > 0) >= 3
    assert weights["0xnoise"] == 0.0 and weights["0xzero"] == 0.0
    assert "0xcopier" not in weights


def test_adversaries_are_recorded_with_their_reasons(run: TwoWindows) -> None:
    report = run.reports[1]
    reasons = {r.trainer: r.reason for r in report.rejections}
    assert reasons == {"0xcopier": RejectReason.COPY_OF_EARLIER, "0xlazy": RejectReason.MISSING_REVEAL}
    noise, zero = report.score_of("0xnoise"), report.score_of("0xzero")
    assert noise is not None and noise.s_i < 0 and noise.final == 0.0
    assert zero is not None and zero.s_i == 0.0 and zero.b_i == -1 and zero.final == 0.0
    assert run.states[1].missed_windows == {"0xlazy": (1,)}


def test_only_improving_updates_are_aggregated(run: TwoWindows) -> None:
    report = run.reports[1]
    assert set(report.accepted) <= set(HONEST)
    assert all(s.s_i > 0 for s in report.scores if s.trainer in report.accepted)
    assert report.aggregate.contributors == report.accepted


def test_global_model_improves_over_the_windows(run: TwoWindows) -> None:
    from base.model import evaluate_loss

    held_out = random_rows(corpus(), 64, seed=999)
    losses = []
    for params in run.params:
        model = make_model()
        model.load_state_dict({**model.state_dict(), **params})
        losses.append(evaluate_loss(model, held_out))
    assert losses[2] < losses[1] < losses[0]


def test_report_round_trips_and_scoring_is_reproducible(run: TwoWindows) -> None:
    report = run.reports[1]
    assert WindowReport.from_json(report.to_json()) == report
    assert report.inputs.cids["0xcopier"] == "bafk-0xcopier-1"
    strategy = ScoringStrategy(make_model(), device="cpu")
    again, params, _ = strategy.score_window(run.inputs[1], run.states[0])
    assert again.to_json() == report.to_json()
    assert all(torch.equal(params[n], run.params[2][n]) for n in params)


def test_newcomers_start_low_and_earn_their_way_up(run: TwoWindows) -> None:
    first = {s.trainer: s.ordinal for s in run.reports[0].scores}
    second = {s.trainer: s.ordinal for s in run.reports[1].scores}
    best = max(HONEST, key=lambda t: second[t])
    assert second[best] > first[best] > 0.0
    assert second["0xnoise"] < 0.0


def test_sybil_pair_shares_half_a_contribution_and_enters_aggregate_once(run: TwoWindows) -> None:
    base_inputs = run.inputs[1]
    h = base_inputs.contributions[0]
    pair = [contribution(t, 1, perturbed(h.delta, h.indices, 0.02, seed=i), h.indices, base=h.base_model_cid)
            for i, t in enumerate(["0xsyb0", "0xsyb1"])]
    tokens = corpus()
    inputs = WindowInputs(
        window=1, block_hash=base_inputs.block_hash, base_model_cid=base_inputs.base_model_cid,
        params=base_inputs.params, contributions=[*base_inputs.contributions[1:4], *pair],
        own_batches={**base_inputs.own_batches, **{t: _own(tokens, t, 1) for t in ["0xsyb0", "0xsyb1"]}},
        common_batch=base_inputs.common_batch,
    )
    report, _, _ = ScoringStrategy(make_model(), device="cpu").score_window(inputs, run.states[0])
    syb = [report.score_of(t) for t in ["0xsyb0", "0xsyb1"]]
    assert all(s is not None and s.sync == 0.25 for s in syb)
    assert sum(1 for t in report.accepted if t.startswith("0xsyb")) == 1


def test_aggregator_swap_changes_the_aggregate_and_the_values_not_the_evaluation(run: TwoWindows) -> None:
    """Marginal values are shares of the applied step, so they follow the aggregator; the measurements of each
    update alone (losses, s_i, the rating) do not."""
    strategy = ScoringStrategy(make_model(), aggregator=MeanAggregator(lr=1.0), device="cpu")
    report, _, _ = strategy.score_window(run.inputs[1], run.states[0])
    assert report.aggregate.method == "mean"
    measured = ("loss_before_own", "loss_after_own", "loss_before_random", "loss_after_random", "s_i", "mu", "sigma")
    for mine, theirs in zip(report.scores, run.reports[1].scores, strict=True):
        assert [getattr(mine, f) for f in measured] == [getattr(theirs, f) for f in measured]
    assert [s.value for s in report.scores] != [s.value for s in run.reports[1].scores]


def test_state_survives_a_json_and_safetensors_round_trip(run: TwoWindows) -> None:
    import json

    from safetensors.torch import load, save

    state = run.states[1]
    plain, tensors = state.to_parts()
    restored = ValidatorState.from_parts(json.loads(json.dumps(plain)), load(save(tensors)))
    assert restored.ratings == state.ratings and restored.binary_avg == state.binary_avg
    assert restored.missed_windows == state.missed_windows and restored.last_window == state.last_window
    assert all(torch.equal(restored.momentum[n], state.momentum[n]) for n in state.momentum)
    assert [(f.trainer, f.window, f.cid) for f in restored.recent_accepted] == \
        [(f.trainer, f.window, f.cid) for f in state.recent_accepted]
    assert all(torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
               for a, b in zip(restored.recent_accepted, state.recent_accepted, strict=True))


def test_sign_flipped_and_scaled_up_updates_get_no_weight(run: TwoWindows) -> None:
    """Trained on their own data like an honest node, then published negated, negated ×50 (the demo's
    poisoner) or merely ×50. Scores are taken on the median-norm clipped update, as it would be applied:
    a flipped update scores below zero and earns nothing; scaling up buys no more than honest work."""
    base_inputs = run.inputs[1]
    tokens = corpus()
    model = make_model()
    bad = {}
    for trainer, factor in (("0xflip", -1.0), ("0xflipscaled", -50.0), ("0xscaled", 50.0)):
        delta, idx = sparsify(train_delta(model, base_inputs.params, _own(tokens, trainer, 1)))
        bad[trainer] = contribution(trainer, 1, {n: factor * t for n, t in delta.items()}, idx,
                                    base=base_inputs.base_model_cid)
    inputs = WindowInputs(
        window=1, block_hash=base_inputs.block_hash, base_model_cid=base_inputs.base_model_cid,
        params=base_inputs.params, contributions=[*base_inputs.contributions[:4], *bad.values()],
        own_batches={**base_inputs.own_batches, **{t: _own(tokens, t, 1) for t in bad}},
        common_batch=base_inputs.common_batch,
    )
    report, _, _ = ScoringStrategy(make_model(), device="cpu").score_window(inputs, run.states[0])
    for trainer in ("0xflip", "0xflipscaled"):
        score = report.score_of(trainer)
        assert score is not None and score.s_i < 0 and score.weight == 0.0
        assert trainer not in report.accepted
    scaled = report.score_of("0xscaled")
    honest = [s for s in report.scores if s.trainer in HONEST]
    assert scaled is not None and scaled.s_i <= max(s.s_i for s in honest) + 1e-9
    assert scaled.weight <= max(s.weight for s in honest)
