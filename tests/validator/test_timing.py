"""The validator's stage clock times the strategy's evaluation and its marginal-value valuation separately, and
timing a strategy changes nothing it computes."""

from __future__ import annotations

from tests.validator.distributed_worker import model, scoring_window
from validator.loop import configure_determinism
from validator.strategy import ScoringStrategy, ValidatorState
from validator.timing import STAGES, StageClock, instrument, split_scoring


def test_instrumented_strategy_times_evaluation_and_valuation_and_scores_the_same() -> None:
    configure_determinism()
    params = {n: p.detach().clone() for n, p in model().named_parameters()}
    inputs = scoring_window(0, params)
    plain_report, plain_params, _ = ScoringStrategy(model(), device="cpu").score_window(inputs, ValidatorState())

    timed = ScoringStrategy(model(), device="cpu")
    clock = StageClock()
    instrument(timed, clock)
    report, new_params, _ = timed.score_window(inputs, ValidatorState())
    seconds = clock.take()

    assert report.to_json() == plain_report.to_json()
    assert all(new_params[n].equal(plain_params[n]) for n in plain_params)
    assert report.valuation == plain_report.valuation and report.accepted
    for stage in ("filter", "evaluation", "aggregation", "valuation"):
        assert stage in STAGES
        assert seconds[stage] > 0.0, (stage, seconds)
    split = split_scoring(seconds, sum(seconds.values()) + 0.5)
    assert split["rating"] == 0.5  # the rest of the strategy's call; valuation is not counted again as rating
    assert clock.take() == {}
