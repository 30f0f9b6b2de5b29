"""The window report's canonical JSON: deterministic bytes, exact round trip, refusal of tampered shapes."""

from __future__ import annotations

import json

import pytest
import torch

from base.report import (
    AggregateInfo,
    ContributionScore,
    Rejection,
    RejectReason,
    ReportFormatError,
    WindowReport,
    WindowReportInputs,
)
from validator.domain import Contribution


def _report(final: float = 0.25) -> WindowReport:
    score = ContributionScore(
        trainer="0xa", cid="bafka", loss_before_own=5.5, loss_after_own=5.0, loss_before_random=5.5,
        loss_after_random=5.4, s_i=0.1 / 5.5, own_gain=0.5 / 5.5, random_gain=0.1 / 5.5, b_i=1, binary_avg=0.05,
        mu=27.1, sigma=8.0, ordinal=3.1, sync=1.0, penalty=1.0, final=final, weight=1.0,
    )
    return WindowReport(
        window=3,
        inputs=WindowReportInputs(cids={"0xb": "bafkb", "0xa": "bafka"}, block_hash="0x" + "ab" * 32,
                                  base_model_cid="bafkmodel", eval_step_size=1.0, strategy={"filters": ["format"]}),
        scores=(score,),
        rejections=(Rejection("0xb", 3, RejectReason.STALE, "old base", "bafkb"),),
        accepted=("0xa",),
        aggregate=AggregateInfo(method="m", contributors=("0xa",), clip_norm=1.5, update_norm=0.5,
                                learning_rate=0.7, delta_norms={"0xa": 1.5}),
        model_cid="bafknew",
    )


def test_json_is_canonical_and_round_trips_exactly() -> None:
    report = _report()
    text = report.to_json()
    assert text == _report().to_json()
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert " " not in text.replace("old base", "")
    assert WindowReport.from_json(text) == report
    assert WindowReport.from_json(text.encode()).to_json() == text


def test_tampered_or_foreign_reports_are_refused() -> None:
    raw = json.loads(_report().to_json())
    raw["scores"][0]["bonus"] = 1.0
    with pytest.raises(ReportFormatError, match="unknown fields"):
        WindowReport.from_json(json.dumps(raw))
    raw = json.loads(_report().to_json())
    raw["version"] = 99
    with pytest.raises(ReportFormatError, match="version"):
        WindowReport.from_json(json.dumps(raw))
    raw = json.loads(_report().to_json())
    raw["rejections"][0]["reason"] = "because"
    with pytest.raises(ReportFormatError):
        WindowReport.from_json(json.dumps(raw))
    with pytest.raises(ReportFormatError):
        WindowReport.from_json("{not json")


def test_non_finite_numbers_cannot_enter_a_report() -> None:
    with pytest.raises(ReportFormatError, match="non-finite"):
        _report(final=float("nan")).to_json()


def test_support_uses_indices_and_falls_back_to_nonzeros() -> None:
    delta = {"a": torch.tensor([0.0, 2.0, 0.0, 3.0]), "b": torch.tensor([[0.0, 1.0]])}
    c = Contribution("0xa", 0, "bafk", "bafkm", delta, {"a": torch.tensor([3, 1, 3])})
    idx_a, val_a = c.support["a"]
    assert idx_a.tolist() == [1, 3] and val_a.tolist() == [2.0, 3.0]
    idx_b, val_b = c.support["b"]
    assert idx_b.tolist() == [1] and val_b.tolist() == [1.0]
