"""The inner loop and the error feedback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from node.model import GPT, PRESETS, evaluate_loss
from node.train import ErrorFeedback, InnerLoopConfig, InnerLoopError, snapshot_parameters, train_inner

TINY = PRESETS["tiny"]
CPU = torch.device("cpu")


def fixed_batch(n: int = 4) -> torch.Tensor:
    # Repetitive text, so a few steps can measurably learn it.
    text = (b"def add(a, b):\n    return a + b\n\n" * 40)[: n * (TINY.block_size + 1)]
    return torch.tensor(list(text), dtype=torch.long).view(n, TINY.block_size + 1)


def test_loss_goes_down_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = GPT.from_seed(TINY, 0)
    batch = fixed_batch()
    before = evaluate_loss(model, batch)
    cfg = InnerLoopConfig(steps=15, lr=3e-3, micro_batch_size=4)
    result = train_inner(model, batch.repeat(cfg.steps, 1), cfg, CPU)
    after = evaluate_loss(model, batch)
    assert len(result.losses) == 15
    assert result.losses[-1] < result.losses[0] - 0.5
    assert after < before - 0.5
    assert result.tokens == 15 * 4 * TINY.block_size
    assert result.seconds > 0


def test_pseudo_gradient_is_exactly_start_minus_end() -> None:
    model = GPT.from_seed(TINY, 1)
    start = snapshot_parameters(model)
    cfg = InnerLoopConfig(steps=3, micro_batch_size=2)
    result = train_inner(model, fixed_batch().repeat(3, 1), cfg, CPU)
    end = snapshot_parameters(model)
    assert result.pseudo_gradient.keys() == start.keys()
    for name, delta in result.pseudo_gradient.items():
        assert delta.dtype == torch.float32 and delta.device.type == "cpu"
        assert torch.equal(delta, start[name] - end[name]), name
    assert any(delta.abs().max() > 0 for delta in result.pseudo_gradient.values())


def test_micro_batching_does_not_change_the_result_beyond_rounding() -> None:
    batches = fixed_batch(8).repeat(2, 1)
    results = []
    for micro in (8, 3):
        model = GPT.from_seed(TINY, 2)
        results.append(train_inner(model, batches, InnerLoopConfig(steps=2, micro_batch_size=micro), CPU))
    for name in results[0].pseudo_gradient:
        torch.testing.assert_close(
            results[0].pseudo_gradient[name], results[1].pseudo_gradient[name], rtol=1e-3, atol=1e-6
        )


def test_progress_callback_sees_every_step() -> None:
    seen: list[tuple[int, float]] = []
    model = GPT.from_seed(TINY, 0)
    result = train_inner(
        model, fixed_batch().repeat(4, 1), InnerLoopConfig(steps=4), CPU, progress=lambda s, x: seen.append((s, x))
    )
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    assert [x for _, x in seen] == pytest.approx(result.losses)


def test_rejects_batches_that_do_not_split_into_steps() -> None:
    model = GPT.from_seed(TINY, 0)
    with pytest.raises(InnerLoopError):
        train_inner(model, fixed_batch(5), InnerLoopConfig(steps=2), CPU)
    with pytest.raises(InnerLoopError):
        InnerLoopConfig(steps=0)


def fake_estimate(acc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A stand-in codec for bookkeeping: keeps the largest half of each tensor."""
    out = {}
    for name, t in acc.items():
        flat = t.flatten()
        keep = flat.abs() >= flat.abs().median()
        out[name] = (flat * keep).view_as(t)
    return out


def test_error_feedback_residual_bookkeeping(tmp_path: Path) -> None:
    ef = ErrorFeedback(decay=0.5)
    d1 = {"w": torch.tensor([1.0, -4.0, 0.5, 2.0])}
    acc1 = ef.accumulate(d1)
    assert torch.equal(acc1["w"], d1["w"])  # empty residual counts as zero
    est1 = fake_estimate(acc1)
    ef.record(acc1, est1)
    assert torch.equal(ef.residual["w"], acc1["w"] - est1["w"])
    # what was sent plus what remains is what was accumulated
    assert torch.equal(est1["w"] + ef.residual["w"], acc1["w"])

    d2 = {"w": torch.tensor([0.0, 1.0, 1.0, 0.0])}
    acc2 = ef.accumulate(d2)
    assert torch.equal(acc2["w"], 0.5 * ef.residual["w"] + d2["w"])

    path = tmp_path / "ef.safetensors"
    ef.save(path)
    restored = ErrorFeedback.load(path, decay=0.5)
    assert restored.residual.keys() == ef.residual.keys()
    assert torch.equal(restored.residual["w"], ef.residual["w"])
    assert torch.equal(restored.accumulate(d2)["w"], acc2["w"])


def test_error_feedback_rejects_mismatches() -> None:
    ef = ErrorFeedback(decay=0.9)
    acc = ef.accumulate({"w": torch.ones(3)})
    with pytest.raises(InnerLoopError):
        ef.record(acc, {"v": torch.ones(3)})
    ef.record(acc, {"w": torch.zeros(3)})
    with pytest.raises(InnerLoopError):
        ef.accumulate({"w": torch.ones(4)})
    with pytest.raises(InnerLoopError):
        ErrorFeedback(decay=1.5)
