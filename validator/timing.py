"""Where a validator's seconds go, per window: fetch, decode, filter, evaluation, aggregation, valuation, publish,
weights.

The loop times its own phases with `StageClock.stage`; the strategy's parts are timed from outside, by wrapping
the filters, the evaluation and valuation functions and the aggregator it was built with (`instrument`), so the
pure strategy carries no timing code. Seconds are wall-clock; a stage that runs in several threads (fetch)
counts its wall time once. The loop stores each window's figures in its SQLite store (`window:<w>:seconds`),
where bench.load reads them."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from base.report import Rejection
from validator.aggregate import AggregateResult, Aggregator, Shares
from validator.domain import Contribution, ParamDict
from validator.evaluate import evaluate_rows
from validator.filters import Filter, FilterContext
from validator.valuation import value_window

STAGES = ("fetch", "decode", "filter", "evaluation", "aggregation", "valuation", "rating", "publish", "weights",
          "other")
SCORING_STAGES = ("filter", "evaluation", "aggregation", "valuation")  # the strategy's timed parts


class StageClock:
    """Accumulates wall seconds per stage until `take()`; safe to use from several threads."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - began)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def take(self) -> dict[str, float]:
        """The seconds so far, rounded to the millisecond, and a fresh start."""
        with self._lock:
            out = {name: round(s, 3) for name, s in self._seconds.items()}
            self._seconds = {}
        return out


class TimedFilter:
    def __init__(self, inner: Filter, clock: StageClock) -> None:
        self.inner = inner
        self.name = inner.name
        self.clock = clock

    def apply(self, contribs: list[Contribution], ctx: FilterContext) -> tuple[list[Contribution], list[Rejection]]:
        with self.clock.stage("filter"):
            return self.inner.apply(contribs, ctx)


class TimedAggregator:
    def __init__(self, inner: Aggregator, clock: StageClock) -> None:
        self.inner = inner
        self.name = inner.name
        self.clock = clock

    def aggregate(self, params: ParamDict, contributions: Sequence[Contribution], momentum: ParamDict
                  ) -> AggregateResult:
        with self.clock.stage("aggregation"):
            return self.inner.aggregate(params, contributions, momentum)

    def shares(self, params: ParamDict, contributions: Sequence[Contribution]) -> Shares:
        with self.clock.stage("aggregation"):
            return self.inner.shares(params, contributions)


def timed(fn: Callable[..., Any], clock: StageClock, stage: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        with clock.stage(stage):
            return fn(*args, **kwargs)

    return call


def instrument(strategy: Any, clock: StageClock) -> None:
    """Time the strategy's filters, evaluation, aggregation and valuation into `clock` (the results are
    unchanged)."""
    strategy.filters = [f if isinstance(f, TimedFilter) else TimedFilter(f, clock) for f in strategy.filters]
    if not isinstance(strategy.aggregator, TimedAggregator):
        strategy.aggregator = TimedAggregator(strategy.aggregator, clock)
    strategy.evaluate = timed(strategy.evaluate or evaluate_rows, clock, "evaluation")
    strategy.valuate = timed(strategy.valuate or value_window, clock, "valuation")


def split_scoring(seconds: dict[str, float], scoring: float) -> dict[str, float]:
    """`seconds` with the part of `scoring` (the strategy's whole call) that no inner stage took counted as
    rating (OpenSkill update, aggregation bar, pay, indicator, weights)."""
    inner = sum(seconds.get(name, 0.0) for name in SCORING_STAGES)
    return {**seconds, "rating": round(max(0.0, scoring - inner), 3)}
