"""float32 in, float32 out: no float64 leaks anywhere on the training or generation path.

NumPy 2 promotes by the arrays' dtypes (a Python float takes the array's dtype, a float64 *array*
wins), so one stray float64 constant or mask turns a whole graph into float64: half the speed on a
CPU and far worse on most GPUs. ``test_autograd_ops.py`` checks every primitive op; this file checks
the fused ops, the whole model (forward, backward, with a KV cache, quantized) and AdamW.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinyllm as tl
from tinyllm.models import ModelConfig, Transformer
from tinyllm.nn.fused import apply_rope, layer_norm, linear, rms_norm, scaled_dot_product_attention, swiglu
from tinyllm.train import TrainConfig, configure_optimizer


def f32(*shape: int, seed: int = 0) -> tl.Tensor:
    return tl.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), requires_grad=True)


def angles() -> tuple:
    """Raw (T, D/2) cos and sin tables on the backend, as ``RotaryEmbedding.tables`` gives them."""
    theta = np.outer(np.arange(3), [1.0, 0.1]).astype(np.float32)
    return tl.tensor(np.cos(theta)).data, tl.tensor(np.sin(theta)).data


FUSED = {
    "rms_norm": lambda: rms_norm(f32(2, 3, 4), f32(4, seed=1), eps=1e-6),
    "layer_norm": lambda: layer_norm(f32(2, 3, 4), f32(4, seed=1), f32(4, seed=2), eps=1e-5),
    "linear": lambda: linear(f32(2, 3, 4), f32(5, 4, seed=1), f32(5, seed=2)),
    "swiglu": lambda: swiglu(f32(2, 3, 4), f32(2, 3, 4, seed=1)),
    "rope": lambda: apply_rope(f32(1, 2, 3, 4), *angles()),
    "attention": lambda: scaled_dot_product_attention(f32(1, 4, 3, 4), f32(1, 2, 3, 4, seed=1), f32(1, 2, 3, 4, seed=2)),
    "attention_dropout": lambda: scaled_dot_product_attention(
        f32(1, 4, 3, 4), f32(1, 2, 5, 4, seed=1), f32(1, 2, 5, 4, seed=2), dropout_p=0.5
    ),
}


@pytest.mark.parametrize("name", list(FUSED))
def test_fused_ops_keep_float32_forward_and_backward(name):
    y = FUSED[name]()
    assert y.dtype == np.float32
    grads = y.creator.backward(tl.get_backend().xp.ones(y.shape, dtype=np.float32))
    for g in grads if isinstance(grads, tuple) else (grads,):
        if g is not None:
            assert g.dtype == np.float32, f"{y.creator.name}.backward returned {g.dtype}"


def small_model(dropout: float = 0.1) -> Transformer:
    return Transformer(ModelConfig(vocab_size=50, dim=16, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=8,
                                   dropout=dropout))


def ids(batch: int, length: int) -> tl.Tensor:
    return tl.tensor(np.random.default_rng(0).integers(0, 50, (batch, length)))


def test_a_training_step_keeps_every_array_float32():
    model = small_model()
    optimizer = configure_optimizer(model, TrainConfig())
    logits, loss = model(ids(2, 8), ids(2, 8))
    assert logits.dtype == np.float32 and loss.dtype == np.float32
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad.dtype == np.float32, name
    tl.optim.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    for name, p in model.named_parameters():
        assert p.data.dtype == np.float32, name
    for state in optimizer.state:
        for key, value in state.items():
            if hasattr(value, "dtype"):
                assert value.dtype == np.float32, key


@pytest.mark.parametrize("scheme", [None, "int8", "q4"])
def test_generation_with_the_kv_cache_keeps_float32(scheme):
    model = small_model(dropout=0.0)
    if scheme:
        tl.quantize(model, scheme, group_size=8, include_embeddings=True)
    model.eval()
    cache = model.new_cache(batch_size=1)
    with tl.no_grad():
        prefill, _ = model(ids(1, 5), cache=cache, last_only=True)
        step, _ = model(ids(1, 1), cache=cache, last_only=True)
    assert prefill.dtype == step.dtype == np.float32
    assert prefill.shape == step.shape == (1, 1, 50)
