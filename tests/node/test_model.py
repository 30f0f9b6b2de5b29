"""The model: deterministic initial checkpoint, presets, spec, pure evaluation."""

from __future__ import annotations

import pytest
import torch

from base.model import (
    GPT,
    PRESETS,
    GPTConfig,
    ModelConfigError,
    autocast_context,
    config_digest,
    evaluate_loss,
    model_spec,
    preset_config,
    select_device,
)

TINY = PRESETS["tiny"]


def test_same_seed_gives_identical_checkpoint_and_other_seed_does_not() -> None:
    torch.manual_seed(123)  # global RNG state must not leak into the init
    a = GPT.from_seed(TINY, 7).state_dict()
    torch.manual_seed(456)
    b = GPT.from_seed(TINY, 7).state_dict()
    c = GPT.from_seed(TINY, 8).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["transformer.h.0.attn.c_attn.weight"], c["transformer.h.0.attn.c_attn.weight"])


def test_weights_are_tied_and_spec_lists_them_once() -> None:
    model = GPT.from_seed(TINY, 0)
    assert model.lm_head.weight is model.transformer.wte.weight
    spec = model_spec(model)
    assert "lm_head.weight" not in spec
    assert spec["transformer.wte.weight"] == ((256, 64), "float32")
    assert sum(torch.Size(shape).numel() for shape, _ in spec.values()) == model.num_params()


def test_presets_have_the_documented_sizes() -> None:
    sizes = {name: GPT(cfg).num_params() for name, cfg in PRESETS.items() if name != "base"}
    assert sizes["tiny"] < 1_000_000
    assert 5_000_000 <= sizes["small"] <= 10_000_000
    base = PRESETS["base"]
    approx_base = 12 * base.n_layer * base.n_embd**2 + (base.vocab_size + base.block_size) * base.n_embd
    assert 90_000_000 <= approx_base <= 120_000_000


def test_overrides_and_bad_configs() -> None:
    cfg = preset_config("tiny", {"n_layer": 3})
    assert cfg.n_layer == 3 and cfg.n_embd == TINY.n_embd
    with pytest.raises(ModelConfigError):
        preset_config("huge")
    with pytest.raises(ModelConfigError):
        preset_config("tiny", {"n_layers": 3})
    with pytest.raises(ModelConfigError):
        GPTConfig(n_embd=10, n_head=3)


def test_config_digest_is_canonical() -> None:
    assert config_digest(TINY) == config_digest(GPTConfig(**vars(TINY)))
    assert config_digest(TINY) != config_digest(preset_config("tiny", {"n_layer": 3}))
    assert config_digest(TINY).startswith("0x") and len(config_digest(TINY)) == 66


def test_untrained_loss_is_near_uniform_and_evaluation_is_pure() -> None:
    model = GPT.from_seed(TINY, 0)
    model.train()
    batches = torch.randint(0, 256, (10, TINY.block_size + 1), generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = evaluate_loss(model, batches, chunk=3)
    assert abs(loss - torch.log(torch.tensor(256.0)).item()) < 0.1
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # chunking does not change the mean
    assert evaluate_loss(model, batches, chunk=10) == pytest.approx(loss, rel=1e-6)


def test_evaluate_rejects_bad_shapes_and_long_sequences() -> None:
    model = GPT.from_seed(TINY, 0)
    with pytest.raises(ModelConfigError):
        evaluate_loss(model, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ModelConfigError):
        evaluate_loss(model, torch.zeros(2, TINY.block_size + 2, dtype=torch.long))


def test_device_selection() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelConfigError):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelConfigError):
            select_device("cuda")
    with autocast_context(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
