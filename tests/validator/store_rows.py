"""Typed records for store tests: a ContributionScore with only the numbers a test cares about, a Rejection
from a reason's string, a rating."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from base.report import ContributionScore, Rejection, RejectReason
from validator.store import RatingRecord, WindowRecord


def score(trainer: str, s: float, **overrides: Any) -> ContributionScore:
    fields: dict[str, Any] = {
        "trainer": trainer, "cid": f"bafk{trainer[2:10]}", "loss_before_own": 3.0, "loss_after_own": 2.9,
        "loss_before_random": 3.0, "loss_after_random": 3.0 - s, "s_i": s, "own_gain": s, "random_gain": s,
        "b_i": 1, "binary_avg": 0.05, "mu": 25.0 + s, "sigma": 8.0, "ordinal": 1.0 + s, "sync": 1.0,
        "penalty": 1.0, "final": max(0.0, s), "weight": 0.5,
    }
    fields.update(overrides)
    return ContributionScore(**fields)


def rejection(trainer: str, reason: str, window: int = 0, cid: str = "", detail: str = "") -> Rejection:
    return Rejection(trainer=trainer, window=window, reason=RejectReason(reason), detail=detail, cid=cid)


def rating(trainer: str, mu: float, **overrides: Any) -> RatingRecord:
    return RatingRecord(**{"trainer": trainer, "mu": mu, "sigma": 8.0, "binary_avg": 0.05, "misses": 0,
                           **overrides})


def window_record(window: int, report_json: str, scores: Sequence[ContributionScore] = (),
                  rejections: Sequence[Rejection] = (), ratings: Sequence[RatingRecord] = (),
                  global_loss: float = 1.0) -> WindowRecord:
    return WindowRecord(window, report_json, tuple(scores), tuple(rejections), tuple(ratings), global_loss)
