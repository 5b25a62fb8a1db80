"""Frozen parameters: no gradient, no backward work, and ``Function.needs_input_grad``."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import on_device, to_numpy

import tinyllm as tl
from tinyllm.autograd import gradcheck
from tinyllm.autograd.function import Function
from tinyllm.models import ModelConfig, Transformer
from tinyllm.nn import Linear
from tinyllm.nn.fused import LinearFunction, layer_norm, linear, rms_norm, swiglu


class Probe(Function):
    """Records what ``needs_input_grad`` said at forward time."""

    seen: tuple[bool, ...] = ()

    def forward(self, a, b):  # noqa: ANN001, ANN201
        Probe.seen = self.needs_input_grad
        return a + b

    def backward(self, gy):  # noqa: ANN001, ANN201
        return gy, gy


def test_needs_input_grad_is_set_before_forward():
    a = tl.tensor([1.0], requires_grad=True)
    b = tl.tensor([2.0])
    Probe()(a, b)
    assert Probe.seen == (True, False)
    Probe()(b, b)
    assert Probe.seen == (False, False)
    with tl.no_grad():
        Probe()(a, a)
    assert Probe.seen == (False, False)


def test_linear_skips_the_weight_gradient_of_a_frozen_weight():
    rng = np.random.default_rng(0)
    x = tl.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = tl.tensor(rng.standard_normal((5, 4)))  # frozen
    f = LinearFunction()
    y = f(x, w)
    assert f.saved[0] is None  # x is not kept: no dW will be computed
    assert f.backward(on_device(np.ones((3, 5))))[1] is None
    y = linear(x, w)
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), np.ones((3, 5)) @ to_numpy(w.data))
    assert w.grad is None


def test_frozen_input_gets_no_gradient_work():
    rng = np.random.default_rng(1)
    x = tl.tensor(rng.standard_normal((3, 4)))  # a constant input
    w = tl.tensor(rng.standard_normal((5, 4)), requires_grad=True)
    f = LinearFunction()
    f(x, w)
    assert f.saved[1] is None  # W is not kept: no dx will be computed
    gx, gw = f.backward(on_device(np.ones((3, 5))))
    assert gx is None and gw.shape == (5, 4)


@pytest.mark.parametrize("frozen", [0, 1])
def test_fused_ops_gradcheck_with_a_frozen_input(frozen):
    rng = np.random.default_rng(2)
    cases = [
        (lambda x, w: linear(x, w), [(3, 4), (5, 4)]),
        (lambda x, w: rms_norm(x, w), [(3, 4), (4,)]),
        (lambda a, b: swiglu(a, b), [(3, 4), (3, 4)]),
    ]
    for fn, shapes in cases:
        inputs = [tl.tensor(rng.standard_normal(s), requires_grad=(i != frozen)) for i, s in enumerate(shapes)]
        assert gradcheck(fn, inputs)
        assert inputs[frozen].grad is None
    x, w, b = (tl.tensor(rng.standard_normal(s), requires_grad=(i != frozen)) for i, s in enumerate([(3, 4), (4,), (4,)]))
    assert gradcheck(lambda x, w, b: layer_norm(x, w, b), [x, w, b])


def test_module_requires_grad_():
    layer = Linear(4, 3, bias=True)
    assert layer.requires_grad_(False) is layer
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    layer.bias.requires_grad_()
    assert layer.bias.requires_grad and not layer.weight.requires_grad


def test_partly_frozen_model_gives_the_same_gradients_to_what_still_trains():
    config = ModelConfig(vocab_size=32, dim=16, n_layers=2, n_heads=2, n_kv_heads=1, max_seq_len=16)
    ids = np.random.default_rng(3).integers(0, 32, size=(2, 8))
    targets = np.roll(ids, -1, axis=1)
    tl.set_backend("numpy", seed=0)
    full = Transformer(config)
    tl.set_backend("numpy", seed=0)
    frozen = Transformer(config)
    _, loss = full(ids, targets)
    loss.backward()
    frozen.requires_grad_(False)
    trainable = ["layers.1.ffn_norm.weight", "layers.0.attention.wv.weight"]
    params = dict(frozen.named_parameters())
    for name in trainable:
        params[name].requires_grad_(True)
    _, loss2 = frozen(ids, targets)
    loss2.backward()
    full_params = dict(full.named_parameters())
    for name, p in params.items():
        if name in trainable:
            np.testing.assert_allclose(p.grad, full_params[name].grad, rtol=1e-5, atol=1e-7)
        else:
            assert p.grad is None, name


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_norms_with_a_frozen_weight_give_only_the_input_gradient_in_its_dtype(dtype):
    # A frozen norm weight (LoRA's base) returns no weight gradient, in float32 and in half precision alike.
    x = tl.tensor(np.linspace(-1, 1, 8, dtype=dtype).reshape(2, 4), requires_grad=True)
    weight, bias = tl.tensor(np.ones(4, dtype=dtype)), tl.tensor(np.zeros(4, dtype=dtype))
    for out in (rms_norm(x, weight, 1e-5), layer_norm(x, weight, bias, 1e-5)):
        x.grad = None
        out.sum().backward()
        assert x.grad.dtype == dtype and weight.grad is None and bias.grad is None
