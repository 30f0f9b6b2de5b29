"""The inner loop and the error feedback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from base.model import GPT, PRESETS, evaluate_loss
from node.carry import CarriedState
from node.train import (
    ErrorFeedback,
    InnerLoopConfig,
    InnerLoopError,
    InnerOptimizerState,
    snapshot_parameters,
    train_inner,
)

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

    path = tmp_path / "carried.safetensors"
    CarriedState(ef, window=3).save(path)
    restored = CarriedState.load(path, decay=0.5)
    assert restored.window == 3 and restored.optimizer.empty
    assert restored.feedback.residual.keys() == ef.residual.keys()
    assert torch.equal(restored.feedback.residual["w"], ef.residual["w"])
    assert torch.equal(restored.feedback.accumulate(d2)["w"], acc2["w"])


def test_carried_moments_continue_adamw_across_windows(tmp_path: Path) -> None:
    """Two windows of H steps with the moments carried (and saved/loaded in between) are exactly one run of 2H
    steps; a fresh optimiser in the second window is not (its first steps move every coordinate by ~lr)."""
    cfg = InnerLoopConfig(steps=3, lr=1e-2, micro_batch_size=4)
    batches = torch.randint(0, 256, (24, 17), generator=torch.Generator().manual_seed(3))
    whole = GPT.from_seed(TINY, 0)
    train_inner(whole, batches, InnerLoopConfig(steps=6, lr=1e-2, micro_batch_size=4), CPU)

    split = GPT.from_seed(TINY, 0)
    first = train_inner(split, batches[:12], cfg, CPU)
    path = tmp_path / "carried.safetensors"
    CarriedState(ErrorFeedback(0.5), first.optimizer, window=0).save(path)
    loaded = CarriedState.load(path, decay=0.5)
    assert loaded.optimizer.steps == 3
    second = train_inner(split, batches[12:], cfg, CPU, optimizer_state=loaded.optimizer)
    assert second.optimizer.steps == 6
    for (name, a), b in zip(whole.named_parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)

    fresh = GPT.from_seed(TINY, 0)
    train_inner(fresh, batches[:12], cfg, CPU)
    train_inner(fresh, batches[12:], cfg, CPU)
    assert any(not torch.allclose(a, b, atol=1e-5) for a, b in zip(whole.parameters(), fresh.parameters(),
                                                                      strict=True))


def test_carried_state_resets_only_after_falling_behind(tmp_path: Path) -> None:
    state = CarriedState(ErrorFeedback(0.5, residual={"w": torch.ones(2)}), window=4)
    assert not state.reset_if_behind(6, max_gap=2) and state.feedback.residual
    assert state.reset_if_behind(7, max_gap=2)
    assert state.window is None and not state.feedback.residual and state.optimizer.empty
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(InnerLoopError, match="unreadable"):
        CarriedState.load(bad, decay=0.5)
    assert CarriedState.load(tmp_path / "absent.safetensors", decay=0.5).window is None


def test_optimizer_state_of_another_model_is_refused() -> None:
    model = GPT.from_seed(TINY, 0)
    wrong = InnerOptimizerState(steps=1, exp_avg={"nope": torch.zeros(1)}, exp_avg_sq={"nope": torch.zeros(1)})
    with pytest.raises(InnerLoopError, match="differ"):
        train_inner(model, fixed_batch().repeat(2, 1), InnerLoopConfig(steps=2), CPU, optimizer_state=wrong)


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
