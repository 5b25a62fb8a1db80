"""LoRA: gradients, merging, a fresh adapter is a no-op, the frozen base stays frozen, quantized bases train."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import on_device

import tinyllm as tl
from tinyllm.autograd import gradcheck
from tinyllm.finetune import LoRALinear, apply_lora, count_trainable, lora_layers, lora_parameters, merge_lora
from tinyllm.models import ModelConfig, Transformer
from tinyllm.nn import Linear
from tinyllm.optim import AdamW
from tinyllm.quant import QuantizedLinear, quantize

CONFIG = ModelConfig(vocab_size=64, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)
IDS = np.random.default_rng(0).integers(0, 64, size=(2, 12))
TARGETS = np.roll(IDS, -1, axis=1)


def model_with_lora(seed: int = 0, **kwargs) -> Transformer:
    tl.set_backend("numpy", seed=seed)
    return apply_lora(Transformer(CONFIG), **kwargs)


def randomize_b(model: Transformer, seed: int = 1, std: float = 0.05) -> None:
    rng = np.random.default_rng(seed)
    for layer in lora_layers(model).values():
        layer.lora_B.data[...] = on_device(rng.normal(0, std, layer.lora_B.shape))


def test_lora_linear_gradcheck_float64():
    rng = np.random.default_rng(0)
    base = Linear(6, 5, bias=True)
    base.to(np.float64)
    layer = LoRALinear(base, r=3, alpha=6.0)
    layer.lora_B.data[...] = on_device(rng.standard_normal((5, 3)))  # B = 0 would hide A's gradient
    x = tl.tensor(rng.standard_normal((2, 4, 6)), requires_grad=True)

    def fn(x, a, b):  # noqa: ANN001, ANN202
        layer.lora_A, layer.lora_B = a, b
        return layer(x)

    assert gradcheck(fn, [x, layer.lora_A, layer.lora_B])
    assert base.weight.grad is None and base.bias.grad is None  # frozen


@pytest.mark.parametrize("scheme", ["int8", "q4"])
def test_lora_on_a_quantized_base_gradcheck(scheme):
    rng = np.random.default_rng(1)
    base = QuantizedLinear.from_linear(Linear(64, 8), scheme)
    layer = LoRALinear(base, r=2, alpha=4.0)
    layer.lora_A.data = layer.lora_A.data.astype(np.float64)
    layer.lora_B.data = on_device(rng.standard_normal((8, 2)))
    x = tl.tensor(rng.standard_normal((3, 64)), requires_grad=True)

    def fn(x, a, b):  # noqa: ANN001, ANN202
        layer.lora_A, layer.lora_B = a, b
        return layer(x)

    assert gradcheck(fn, [x, layer.lora_A, layer.lora_B])


def test_apply_lora_freezes_everything_but_the_adapters():
    model = model_with_lora(r=4, target_modules=("wq", "v_proj", "w_down"))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == [f"layers.{i}.{m}.lora_{ab}" for i in range(2)
                         for m in ("attention.wq", "attention.wv", "feed_forward.w_down") for ab in "AB"]
    assert [p for p in model.parameters() if p.requires_grad] == lora_parameters(model)
    # r (in + out) per layer: wq 4(64+64), wv 4(64+32), w_down 4(ffn+64)
    ffn = CONFIG.ffn_hidden_dim
    assert count_trainable(model)[0] == 2 * (4 * 128 + 4 * 96 + 4 * (ffn + 64))
    assert model.lora_config.target_modules == ["wq", "wv", "w_down"]


def test_smollm2_parameter_count_in_the_docstring():
    config = ModelConfig(vocab_size=8, dim=576, n_layers=1, n_heads=9, n_kv_heads=3, ffn_hidden_dim=1536)
    trainable, _ = count_trainable(apply_lora(Transformer(config), r=8))
    assert trainable == 81_408 and 30 * trainable == 2_442_240


def test_fresh_adapter_changes_nothing():
    tl.set_backend("numpy", seed=0)
    model = Transformer(CONFIG)
    with tl.no_grad():
        before, _ = model(IDS)
    apply_lora(model)
    with tl.no_grad():
        after, _ = model(IDS)
    np.testing.assert_array_equal(after.data, before.data)  # B = 0: exactly nothing added


def test_merge_gives_the_same_logits():
    model = model_with_lora()
    randomize_b(model)
    with tl.no_grad():
        unmerged, _ = model(IDS)
    merge_lora(model)
    assert not lora_layers(model) and isinstance(model.layers[0].attention.wq, Linear)
    assert "layers.0.attention.wq.weight" in model.state_dict()  # the original names again
    with tl.no_grad():
        merged, _ = model(IDS)
    np.testing.assert_allclose(merged.data, unmerged.data, atol=1e-5, rtol=0)
    assert np.abs(unmerged.data - Transformer(CONFIG)(IDS)[0].data).max() > 1e-3  # the adapter did something


def test_merge_on_a_q4_base_dequantizes():
    tl.set_backend("numpy", seed=0)
    model = apply_lora(quantize(Transformer(CONFIG), "q4"))
    randomize_b(model)
    with tl.no_grad():
        unmerged, _ = model(IDS)
        merged, _ = merge_lora(model)(IDS)
    np.testing.assert_allclose(merged.data, unmerged.data, atol=1e-5, rtol=0)


def train_steps(model: Transformer, steps: int, lr: float = 1e-2) -> list[float]:
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        _, loss = model(IDS, TARGETS)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_frozen_base_is_bit_identical_after_training():
    model = model_with_lora()
    frozen = {name: p.data.copy() for name, p in model.named_parameters() if not p.requires_grad}
    adapters = {name: p.data.copy() for name, p in model.named_parameters() if p.requires_grad}
    losses = train_steps(model, 5)
    assert losses[-1] < losses[0]
    for name, p in model.named_parameters():
        if name in frozen:
            np.testing.assert_array_equal(p.data, frozen[name], err_msg=name)
            assert p.grad is None, name
        else:
            assert not np.array_equal(p.data, adapters[name]), name


def test_lora_trains_on_a_q4_base():
    """A small text, a q4 base with its embeddings quantized too: the loss falls, the quantized weights never move."""
    tl.set_backend("numpy", seed=0)
    model = quantize(Transformer(CONFIG), "q4", include_embeddings=True)
    weights_before = copy.deepcopy(model.layers[0].attention.wq.weight.arrays())
    apply_lora(model, r=8, alpha=16)
    losses = train_steps(model, 40, lr=1e-2)
    assert losses[-1] < 0.75 * losses[0], losses  # measured: 4.26 -> 2.94
    for name, array in model.layers[0].attention.wq.base_layer.weight.arrays().items():
        np.testing.assert_array_equal(array, weights_before[name])


def test_bad_input():
    with pytest.raises(ValueError, match="r must be a positive integer"):
        model_with_lora(r=0)
    with pytest.raises(ValueError, match=r"not found in the model; valid: wq \(q_proj\), wk"):
        model_with_lora(target_modules=("wq", "qkv"))
    model = model_with_lora()
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        merge_lora(Transformer(CONFIG))
