"""The fused ops of tinyllm.nn.fused (and the fused cross-entropy) against finite differences and their unfused twins.

For every fused op there are two properties, each drawn over small random shapes:

- ``gradcheck``: the hand-derived backward agrees with central differences in float64;
- "equals its plain version": the same computation written from primitive autograd ops
  (matmul, exp, sum, masked_fill, mean, rsqrt, sigmoid, ...) in ``tinyllm.nn.reference``
  gives the same output AND the same gradients after backward through both.

Attention shapes: B batch, H query heads, Hkv key/value heads dividing H (Hkv = 1 is
MQA, Hkv = H is MHA), D head_dim, T queries, S >= T keys (S > T is the causal case
with a KV cache: the queries are the last T positions).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from conftest import to_numpy
from hypothesis import example, given
from hypothesis import strategies as st

import tinyllm as tl
from tinyllm.autograd import gradcheck
from tinyllm.autograd.ops import cross_entropy
from tinyllm.nn.fused import apply_rope, layer_norm, linear, rms_norm, scaled_dot_product_attention, swiglu
from tinyllm.nn.reference import attention as attention_simple
from tinyllm.nn.reference import cross_entropy as cross_entropy_simple
from tinyllm.nn.reference import layer_norm as layer_norm_simple
from tinyllm.nn.reference import linear as linear_simple
from tinyllm.nn.reference import rms_norm as rms_norm_simple
from tinyllm.nn.reference import rope as rope_simple
from tinyllm.nn.reference import swiglu as swiglu_simple
from tinyllm.nn.rotary import rope_frequencies

# float64 forward/backward of the fused op and its twin differ only by rounding.
TWIN_ATOL = 1e-10
TWIN_RTOL = 1e-8

seeds = st.integers(0, 2**16)


def on_backend(array: np.ndarray):  # noqa: ANN201 - a backend array
    """A host array as an array of the backend under test (the RoPE tables are raw arrays, not Tensors)."""
    return tl.get_backend().asarray(array)


def leaves(arrays: Sequence[np.ndarray | None]) -> list[tl.Tensor | None]:
    """Fresh float64 leaf tensors that require grad (None stays None)."""
    return [None if a is None else tl.tensor(a, requires_grad=True) for a in arrays]


def assert_matches_simple(
    fused: Callable[..., tl.Tensor], simple: Callable[..., tl.Tensor], arrays: Sequence[np.ndarray | None], seed: int
) -> None:
    """fused(*inputs) == simple(*inputs) in value, and in every input's gradient of sum(out * r) for a random r."""
    a, b = leaves(arrays), leaves(arrays)
    out_fused, out_simple = fused(*a), simple(*b)
    assert out_fused.shape == out_simple.shape
    np.testing.assert_allclose(to_numpy(out_fused), to_numpy(out_simple), atol=TWIN_ATOL, rtol=TWIN_RTOL)
    upstream = tl.tensor(np.random.default_rng(seed).standard_normal(out_fused.shape))
    (out_fused * upstream).sum().backward()
    (out_simple * upstream).sum().backward()
    for index, (x, y) in enumerate(zip(a, b)):
        if x is None:
            continue
        assert x.grad is not None and y.grad is not None, f"input {index} got no gradient"
        np.testing.assert_allclose(
            to_numpy(x.grad), to_numpy(y.grad), atol=TWIN_ATOL, rtol=TWIN_RTOL, err_msg=f"gradient of input {index}"
        )


# -- attention -----------------------------------------------------------------------------------


@st.composite
def attention_shapes(draw: st.DrawFn, causal: bool = True) -> tuple[int, int, int, int, int, int, int]:
    """(B, H, Hkv, D, T, S, seed) with Hkv dividing H; S >= T when causal."""
    batch = draw(st.integers(1, 2))
    n_kv_heads = draw(st.integers(1, 2))
    n_heads = n_kv_heads * draw(st.integers(1, 3))
    head_dim = draw(st.sampled_from([2, 4]))
    T = draw(st.integers(1, 4))
    S = T + draw(st.integers(0, 2)) if causal else draw(st.integers(1, 4))
    return batch, n_heads, n_kv_heads, head_dim, T, S, draw(seeds)


def attention_inputs(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    B, H, Hkv, D, T, S, seed = shape
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, H, T, D)), rng.standard_normal((B, Hkv, S, D)), rng.standard_normal((B, Hkv, S, D))


@given(attention_shapes())
@example((1, 4, 1, 2, 3, 4, 0))  # MQA
@example((2, 4, 2, 4, 3, 3, 1))  # GQA
@example((1, 3, 3, 2, 4, 4, 2))  # MHA
def test_attention_gradcheck_causal(shape: tuple[int, ...]) -> None:
    q, k, v = leaves(attention_inputs(shape))
    assert gradcheck(scaled_dot_product_attention, [q, k, v])


@given(attention_shapes())
@example((1, 4, 1, 2, 3, 4, 0))
@example((2, 4, 2, 4, 3, 3, 1))
@example((1, 3, 3, 2, 4, 4, 2))
def test_attention_equals_simple_causal(shape: tuple[int, ...]) -> None:
    assert_matches_simple(scaled_dot_product_attention, attention_simple, attention_inputs(shape), shape[-1])


@given(attention_shapes(causal=False))
@example((1, 2, 1, 2, 3, 1, 0))  # fewer keys than queries is fine without a mask
def test_attention_non_causal(shape: tuple[int, ...]) -> None:
    """Every query sees every key (an encoder, or cross-attention)."""
    q, k, v = leaves(attention_inputs(shape))
    assert gradcheck(lambda *x: scaled_dot_product_attention(*x, is_causal=False), [q, k, v])
    assert_matches_simple(
        lambda *x: scaled_dot_product_attention(*x, is_causal=False),
        lambda *x: attention_simple(*x, is_causal=False),
        attention_inputs(shape),
        shape[-1],
    )


@given(attention_shapes(), st.sampled_from([0.25, 0.5]))
def test_attention_dropout_gradcheck(shape: tuple[int, ...], p: float) -> None:
    """With the backend re-seeded before every evaluation, each one draws the same dropout mask."""
    q, k, v = leaves(attention_inputs(shape))

    def attend(q: tl.Tensor, k: tl.Tensor, v: tl.Tensor) -> tl.Tensor:
        tl.get_backend().seed(1234)
        return scaled_dot_product_attention(q, k, v, dropout_p=p)

    assert gradcheck(attend, [q, k, v])


@given(attention_shapes(), st.sampled_from([0.25, 0.5]))
def test_attention_dropout_equals_simple_with_the_same_mask(shape: tuple[int, ...], p: float) -> None:
    """The fused op drops entries of P with the mask rng.random(P's shape) >= p and rescales the rest."""
    B, H, Hkv, D, T, S, seed = shape
    tl.get_backend().seed(7)
    mask_shape, dtype = (B, Hkv, H // Hkv * T, S), np.float64  # P as the fused op lays it out (float64 inputs)
    keep = to_numpy(tl.get_backend().rng.random(mask_shape, dtype=dtype)) >= p
    keep = keep.reshape(B, H, T, S)  # (B, Hkv, G*T, S) -> (B, H, T, S): query head h = kv_head * G + g

    def fused(*x: tl.Tensor) -> tl.Tensor:
        tl.get_backend().seed(7)
        return scaled_dot_product_attention(*x, dropout_p=p)

    assert_matches_simple(fused, lambda *x: attention_simple(*x, keep=keep, dropout_p=p), attention_inputs(shape), seed)


@given(attention_shapes(), st.sampled_from([0.3, 2.0]))
def test_attention_with_an_explicit_scale(shape: tuple[int, ...], scale: float) -> None:
    assert_matches_simple(
        lambda *x: scaled_dot_product_attention(*x, scale=scale),
        lambda *x: attention_simple(*x, scale=scale),
        attention_inputs(shape),
        shape[-1],
    )


def test_attention_dropout_draws_a_new_mask_each_call() -> None:
    q, k, v = (tl.tensor(a) for a in attention_inputs((1, 2, 1, 4, 4, 4, 0)))
    first = to_numpy(scaled_dot_product_attention(q, k, v, dropout_p=0.5))
    second = to_numpy(scaled_dot_product_attention(q, k, v, dropout_p=0.5))
    plain = to_numpy(scaled_dot_product_attention(q, k, v))
    assert not np.allclose(first, second)
    assert not np.allclose(first, plain)


def test_attention_rejects_bad_shapes() -> None:
    q = tl.tensor(np.zeros((1, 3, 2, 4)))
    kv = tl.tensor(np.zeros((1, 2, 2, 4)))
    with pytest.raises(ValueError, match="n_heads=3 must be a multiple of n_kv_heads=2"):
        scaled_dot_product_attention(q, kv, kv)
    few = tl.tensor(np.zeros((1, 1, 1, 4)))
    with pytest.raises(ValueError, match="T=2 queries, S=1 keys"):
        scaled_dot_product_attention(tl.tensor(np.zeros((1, 1, 2, 4))), few, few)
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\)"):
        scaled_dot_product_attention(q, q, q, dropout_p=1.0)


# -- normalisation -------------------------------------------------------------------------------

row_shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), seeds)  # (B, T, D, seed)


def norm_inputs(shape: tuple[int, ...], with_bias: bool) -> list[np.ndarray]:
    B, T, D, seed = shape
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((B, T, D)), rng.standard_normal(D)]
    return arrays + [rng.standard_normal(D)] if with_bias else arrays


@given(row_shapes, st.sampled_from([1e-6, 1e-2]))
def test_rms_norm_gradcheck(shape: tuple[int, ...], eps: float) -> None:
    x, w = leaves(norm_inputs(shape, with_bias=False))
    assert gradcheck(lambda x, w: rms_norm(x, w, eps), [x, w])


@given(row_shapes, st.sampled_from([1e-6, 1e-2]))
def test_rms_norm_equals_simple(shape: tuple[int, ...], eps: float) -> None:
    assert_matches_simple(
        lambda x, w: rms_norm(x, w, eps), lambda x, w: rms_norm_simple(x, w, eps), norm_inputs(shape, False), shape[-1]
    )


@given(row_shapes, st.sampled_from([1e-5, 1e-2]))
def test_layer_norm_gradcheck(shape: tuple[int, ...], eps: float) -> None:
    x, w, b = leaves(norm_inputs(shape, with_bias=True))
    assert gradcheck(lambda x, w, b: layer_norm(x, w, b, eps), [x, w, b])


@given(row_shapes, st.sampled_from([1e-5, 1e-2]))
def test_layer_norm_equals_simple(shape: tuple[int, ...], eps: float) -> None:
    assert_matches_simple(
        lambda *a: layer_norm(*a, eps), lambda *a: layer_norm_simple(*a, eps), norm_inputs(shape, True), shape[-1]
    )


def test_rms_norm_known_answer() -> None:
    y = rms_norm(tl.tensor(np.array([[3.0, 4.0]])), tl.tensor(np.array([1.0, 2.0])), eps=0.0)
    rms = math.sqrt((9 + 16) / 2)
    np.testing.assert_allclose(to_numpy(y), [[3 / rms, 8 / rms]], rtol=1e-12)


def test_layer_norm_output_has_zero_mean_unit_variance() -> None:
    x = tl.tensor(np.random.default_rng(0).normal(3.0, 5.0, size=(4, 16)))
    y = to_numpy(layer_norm(x, tl.tensor(np.ones(16)), tl.tensor(np.zeros(16)), eps=0.0))
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=-1), 1.0, rtol=1e-10)


# -- RoPE --------------------------------------------------------------------------------------------

rope_shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.sampled_from([2, 4, 6]), seeds)


def rope_inputs(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (B, H, T, D) and float64 tables for positions start .. start+T-1."""
    B, H, T, D, seed = shape
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, 5))
    angles = np.outer(np.arange(start, start + T), rope_frequencies(D))  # (T, D/2)
    return rng.standard_normal((B, H, T, D)), np.cos(angles), np.sin(angles)


@given(rope_shapes)
def test_rope_gradcheck(shape: tuple[int, ...]) -> None:
    x, cos, sin = rope_inputs(shape)
    (x,) = leaves([x])
    assert gradcheck(lambda x: apply_rope(x, on_backend(cos), on_backend(sin)), [x])


@given(rope_shapes)
def test_rope_equals_simple(shape: tuple[int, ...]) -> None:
    x, cos, sin = rope_inputs(shape)
    assert_matches_simple(
        lambda x: apply_rope(x, on_backend(cos), on_backend(sin)), lambda x: rope_simple(x, cos, sin), [x], shape[-1]
    )


def test_rope_keeps_norms_and_relative_positions() -> None:
    """A rotation keeps each pair's length, and q.k after RoPE depends only on the distance between positions."""
    D = 8
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal(D), rng.standard_normal(D)

    def rotated(x: np.ndarray, position: int) -> np.ndarray:
        angles = position * rope_frequencies(D)[None]  # (1, D/2)
        y = apply_rope(tl.tensor(x.reshape(1, 1, 1, D)), on_backend(np.cos(angles)), on_backend(np.sin(angles)))
        return to_numpy(y).reshape(D)

    np.testing.assert_allclose(np.linalg.norm(rotated(q, 7)), np.linalg.norm(q), rtol=1e-12)
    np.testing.assert_allclose(rotated(q, 5) @ rotated(k, 2), rotated(q, 13) @ rotated(k, 10), rtol=1e-10)
    assert not np.isclose(rotated(q, 5) @ rotated(k, 2), rotated(q, 5) @ rotated(k, 4))


# -- SwiGLU and linear -----------------------------------------------------------------------------

elementwise_shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), seeds)


def swiglu_inputs(shape: tuple[int, ...]) -> list[np.ndarray]:
    B, T, D, seed = shape
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((B, T, D)) * 3, rng.standard_normal((B, T, D))]


@given(elementwise_shapes)
def test_swiglu_gradcheck(shape: tuple[int, ...]) -> None:
    assert gradcheck(swiglu, leaves(swiglu_inputs(shape)))


@given(elementwise_shapes)
def test_swiglu_equals_simple(shape: tuple[int, ...]) -> None:
    assert_matches_simple(swiglu, swiglu_simple, swiglu_inputs(shape), shape[-1])


def test_swiglu_does_not_overflow_for_large_gates() -> None:
    """silu(a) -> 0 for a -> -inf and -> a for a -> +inf, in float32, without overflow warnings (as the Silu op)."""
    a = tl.tensor(np.array([-1000.0, -100.0, -30.0, 0.0, 30.0, 100.0], dtype=np.float32), requires_grad=True)
    b = tl.tensor(np.full(6, 2.0, dtype=np.float32), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an "overflow encountered in exp" RuntimeWarning fails the test
        y = swiglu(a, b)
        y.sum().backward()
    np.testing.assert_allclose(to_numpy(y), [0, 0, 0, 0, 60, 200], atol=1e-10)
    np.testing.assert_allclose(to_numpy(a.grad), [0, 0, 0, 1, 2, 2], atol=1e-10)
    np.testing.assert_allclose(to_numpy(b.grad), [0, 0, 0, 0, 30, 100], atol=1e-10)
    assert np.isfinite(to_numpy(y)).all() and np.isfinite(to_numpy(a.grad)).all()


linear_shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.booleans(), seeds)


def linear_inputs(shape: tuple[int, ...]) -> list[np.ndarray | None]:
    B, T, n_in, n_out, bias, seed = shape
    rng = np.random.default_rng(seed)
    x, weight = rng.standard_normal((B, T, n_in)), rng.standard_normal((n_out, n_in))
    return [x, weight, rng.standard_normal(n_out) if bias else None]


@given(linear_shapes)
@example((2, 3, 4, 2, False, 0))
@example((2, 3, 4, 2, True, 0))
def test_linear_gradcheck(shape: tuple[int, ...]) -> None:
    x, w, b = leaves(linear_inputs(shape))
    assert gradcheck(lambda *args: linear(*args), [t for t in (x, w, b) if t is not None])


@given(linear_shapes)
@example((2, 3, 4, 2, False, 0))
@example((2, 3, 4, 2, True, 0))
def test_linear_equals_simple(shape: tuple[int, ...]) -> None:
    assert_matches_simple(linear, linear_simple, linear_inputs(shape), shape[-1])


def test_linear_on_a_single_vector_and_bad_width() -> None:
    w = tl.tensor(np.arange(6.0).reshape(3, 2))
    np.testing.assert_allclose(to_numpy(linear(tl.tensor(np.array([1.0, 1.0])), w, tl.tensor(np.ones(3)))), [2, 6, 10])
    with pytest.raises(ValueError, match="has 3 features but the weight"):
        linear(tl.tensor(np.ones((2, 3))), w)


# -- cross-entropy -------------------------------------------------------------------------------

ce_shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 6), seeds)  # (B, T, V, seed)


def ce_inputs(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Logits (B, T, V) and targets (B, T), about a quarter of them ignore_index = -100 (never all)."""
    B, T, V, seed = shape
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, V, size=(B, T))
    targets[rng.random((B, T)) < 0.25] = -100
    targets[0, 0] = rng.integers(0, V)
    return rng.standard_normal((B, T, V)) * 2, targets


@given(ce_shapes, st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_gradcheck(shape: tuple[int, ...], reduction: str) -> None:
    logits, targets = ce_inputs(shape)
    (logits,) = leaves([logits])
    assert gradcheck(lambda x: cross_entropy(x, tl.tensor(targets), reduction=reduction), [logits])


@given(ce_shapes)
def test_cross_entropy_equals_simple(shape: tuple[int, ...]) -> None:
    logits, targets = ce_inputs(shape)
    assert_matches_simple(
        lambda x: cross_entropy(x, tl.tensor(targets)), lambda x: cross_entropy_simple(x, targets), [logits], shape[-1]
    )


def test_cross_entropy_known_answer_and_bad_target() -> None:
    logits = tl.tensor(np.array([[2.0, 0.0], [0.0, 2.0]]))
    assert cross_entropy(logits, tl.tensor([0, 1])).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-12)
    with pytest.raises(IndexError, match="target id 2 is out of range for 2 classes"):
        cross_entropy(logits, tl.tensor([0, 2]))
