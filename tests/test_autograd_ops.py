"""Every autograd op: forward against plain NumPy, backward against finite differences (float64).

Each op gets a hypothesis test that draws shapes (size-1 and size-0 dimensions
included where the op allows them, broadcastable pairs for binary ops) and
values, then

1. compares the forward value with a NumPy reference written independently;
2. runs :func:`tinyllm.autograd.gradcheck`, which compares the gradient from
   ``backward`` with central differences.

Ops with kinks (relu, abs, clamp, max, maximum) draw values away from them, so
the finite differences never straddle a point where the derivative jumps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import to_numpy
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinyllm as tl
from tinyllm.autograd import gradcheck, ops

# -- strategies ---------------------------------------------------------------


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 0, max_side: int = 4) -> st.SearchStrategy:
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def values(shape: tuple[int, ...], lo: float = -2.0, hi: float = 2.0) -> st.SearchStrategy:
    """float64 arrays with entries in [lo, hi]."""
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_subnormal=False))


def away_from_zero(shape: tuple[int, ...], margin: float = 1e-3, hi: float = 2.0) -> st.SearchStrategy:
    """float64 arrays with margin <= |x| <= hi: no kink of relu/abs within reach of the finite differences."""
    elements = st.one_of(st.floats(-hi, -margin), st.floats(margin, hi))
    return hnp.arrays(np.float64, shape, elements=elements)


def grid(shape: tuple[int, ...], parity: int | None = None, unique: bool = False) -> st.SearchStrategy:
    """float64 arrays on the grid k/8 (|k| <= 60): values that tie exactly or differ by >= 1/8.

    parity=0 draws even k, parity=1 odd k, so two grids with different parity never meet.
    """
    ks = st.integers(-60, 60) if parity is None else st.integers(-30, 29).map(lambda k: 2 * k + parity)
    return hnp.arrays(np.int64, shape, elements=ks, unique=unique).map(lambda a: a / 8.0)


def axes_for(ndim: int) -> st.SearchStrategy:
    """An ``axis=`` argument: None, one int (negative allowed) or a tuple of axes."""
    choices = [st.none(), hnp.valid_tuple_axes(ndim)]
    if ndim > 0:
        choices.append(st.integers(-ndim, ndim - 1))
    return st.one_of(*choices)


def reduced_axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))


def reduced_count(shape: tuple[int, ...], axis) -> int:
    return math.prod(shape[a] for a in reduced_axes(axis, len(shape)))


# -- helpers -------------------------------------------------------------------


def leaf(array: np.ndarray) -> tl.Tensor:
    return tl.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def assert_forward(y: tl.Tensor, expected: np.ndarray, rtol: float = 1e-12, atol: float = 1e-12) -> None:
    expected = np.asarray(expected)
    assert y.shape == expected.shape, f"shape {y.shape}, expected {expected.shape}"
    assert y.dtype == np.float64
    np.testing.assert_allclose(to_numpy(y), expected, rtol=rtol, atol=atol)


def check(fn, arrays: list[np.ndarray], expected: np.ndarray | None, **gradcheck_kwargs) -> None:
    """Forward value against ``expected`` (if given), then gradcheck of every input."""
    xs = [leaf(a) for a in arrays]
    y = fn(*xs)
    if expected is not None:
        assert_forward(y, expected)
    assert all(out.requires_grad for out in (y if isinstance(y, tuple) else (y,)))
    assert gradcheck(fn, xs, **gradcheck_kwargs)


def erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def np_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


# -- binary arithmetic -----------------------------------------------------------

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "ops.add": (ops.add, np.add),
    "ops.sub": (ops.sub, np.subtract),
    "ops.mul": (ops.mul, np.multiply),
    "ops.div": (ops.div, np.divide),
}


@pytest.mark.parametrize("name", list(BINARY))
@given(data=st.data())
def test_binary_broadcasting(name, data):
    fn, reference = BINARY[name]
    (a_shape, b_shape), _ = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=4)
    )
    a = data.draw(values(a_shape))
    # Keep divisors away from 0, where a / b blows up.
    b = data.draw(away_from_zero(b_shape, margin=0.5) if "div" in name else values(b_shape))
    check(fn, [a, b], reference(a, b))


@given(x=shapes().flatmap(values), c=st.floats(0.5, 3.0))
def test_binary_with_python_scalars(x, c):
    check(lambda t: (c + t) * (t - c) - (c - t) / c + t / c, [x], (c + x) * (x - c) - (c - x) / c + x / c)
    if np.all(np.abs(x) > 0.2):
        check(lambda t: c / t, [x], c / x)


@given(x=shapes().flatmap(values))
def test_neg(x):
    check(lambda t: -t, [x], -x)
    check(ops.neg, [x], -x)


@given(data=st.data(), exponent=st.sampled_from([0, 1, 2, 3, -1, -2, 0.5, 1.5, -0.5, 2.5]))
def test_pow(data, exponent):
    shape = data.draw(shapes())
    if float(exponent).is_integer():
        x = data.draw(away_from_zero(shape, margin=0.2))  # negative bases are fine for integer exponents
    else:
        x = data.draw(values(shape, 0.2, 2.0))
    check(lambda t: t**exponent, [x], np.power(x, exponent))
    check(lambda t: ops.pow(t, exponent), [x], np.power(x, exponent))


def test_pow_zero_exponent_has_zero_gradient_at_zero():
    x = leaf([0.0, 2.0])
    (x**0).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [0.0, 0.0])


@pytest.mark.parametrize("op", ["maximum", "minimum"])
@given(data=st.data())
def test_maximum_minimum(op, data):
    (a_shape, b_shape), _ = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=4)
    )
    # Different parities on a grid: a and b never tie, and differ by >= 1/8.
    a, b = data.draw(grid(a_shape, parity=0)), data.draw(grid(b_shape, parity=1))
    fn = getattr(ops, op)
    check(fn, [a, b], getattr(np, op)(a, b))
    check(lambda s, t: getattr(s, op)(t), [a, b], getattr(np, op)(a, b))


def test_maximum_splits_ties_evenly():
    a, b = leaf([1.0, 2.0, 3.0]), leaf([1.0, 5.0, 0.0])
    ops.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(to_numpy(a.grad), [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(to_numpy(b.grad), [0.5, 1.0, 0.0])


# -- matmul ----------------------------------------------------------------------


@given(data=st.data())
def test_matmul(data):
    (a_batch, b_batch), _ = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, min_side=0, max_side=3)
    )
    m, k, n = data.draw(st.tuples(*[st.integers(0, 3)] * 3))
    a_vector, b_vector = data.draw(st.booleans()), data.draw(st.booleans())
    a_shape = (k,) if a_vector else a_batch + (m, k)
    b_shape = (k,) if b_vector else b_batch + (k, n)
    a, b = data.draw(values(a_shape)), data.draw(values(b_shape))
    expected = np.matmul(a, b)
    check(lambda s, t: s @ t, [a, b], expected)
    check(ops.matmul, [a, b], expected)


def test_matmul_vector_cases_known_answer():
    a, b = leaf([1.0, 2.0]), leaf([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    y = a @ b  # (2,) @ (2, 3) -> (3,)
    np.testing.assert_array_equal(to_numpy(y), [9.0, 12.0, 15.0])
    y.sum().backward()
    np.testing.assert_array_equal(to_numpy(a.grad), [6.0, 15.0])
    np.testing.assert_array_equal(to_numpy(b.grad), [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])


# -- elementwise functions -----------------------------------------------------------

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)

UNARY = {
    # name: (tinyllm fn, NumPy reference, value strategy for a shape)
    "exp": (lambda t: t.exp(), np.exp, values),
    "log": (lambda t: t.log(), np.log, lambda s: values(s, 0.1, 3.0)),
    "sqrt": (lambda t: t.sqrt(), np.sqrt, lambda s: values(s, 0.1, 3.0)),
    "rsqrt": (lambda t: t.rsqrt(), lambda x: 1 / np.sqrt(x), lambda s: values(s, 0.1, 3.0)),
    "tanh": (lambda t: t.tanh(), np.tanh, lambda s: values(s, -3.0, 3.0)),
    "sigmoid": (lambda t: t.sigmoid(), lambda x: 1 / (1 + np.exp(-x)), lambda s: values(s, -6.0, 6.0)),
    "relu": (lambda t: t.relu(), lambda x: np.where(x > 0, x, 0.0), away_from_zero),
    "silu": (lambda t: t.silu(), lambda x: x / (1 + np.exp(-x)), lambda s: values(s, -6.0, 6.0)),
    "gelu_tanh": (
        lambda t: t.gelu(approximate="tanh"),
        lambda x: 0.5 * x * (1 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x**3))),
        lambda s: values(s, -4.0, 4.0),
    ),
    "gelu_exact": (
        lambda t: t.gelu(approximate="none"),
        lambda x: x * 0.5 * (1 + erf(x / math.sqrt(2))),
        lambda s: values(s, -4.0, 4.0),
    ),
    "abs": (lambda t: t.abs(), np.abs, away_from_zero),
}


@pytest.mark.parametrize("name", list(UNARY))
@given(data=st.data())
def test_unary(name, data):
    fn, reference, draw_values = UNARY[name]
    x = data.draw(shapes().flatmap(draw_values))
    check(fn, [x], reference(x))


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_function_matches_method(name):
    fn, _, _ = UNARY[name]
    x = tl.tensor(np.linspace(0.1, 2.0, 7))
    gelus = {"gelu_tanh": lambda t: ops.gelu(t, "tanh"), "gelu_exact": lambda t: ops.gelu(t, "none")}
    function = gelus[name] if name in gelus else getattr(ops, name)
    np.testing.assert_array_equal(to_numpy(function(x)), to_numpy(fn(x)))


def test_gelu_known_values():
    x = tl.tensor(np.array([-1.0, 0.0, 1.0]))
    # x * Phi(x) with Phi(1) = 0.8413447460685429; the tanh form is close but not equal.
    np.testing.assert_allclose(to_numpy(x.gelu("none")), [-0.15865525393145707, 0.0, 0.8413447460685429], rtol=1e-14)
    np.testing.assert_allclose(to_numpy(x.gelu("tanh")), [-0.15880800939172324, 0.0, 0.8411919906082768], rtol=1e-14)
    with pytest.raises(ValueError, match="approximate"):
        x.gelu("erf")


def test_sigmoid_and_silu_do_not_overflow():
    x = tl.tensor(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_array_equal(to_numpy(x.sigmoid()), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(to_numpy(x.silu()), [-0.0, 0.0, 1000.0])


@given(data=st.data())
def test_clamp(data):
    shape = data.draw(shapes())
    x = data.draw(grid(shape, parity=1))  # odd eighths: never on an even-eighth bound
    lo = data.draw(st.one_of(st.none(), st.integers(-30, 30).map(lambda k: 2 * k / 8.0)))
    hi = data.draw(st.one_of(st.none(), st.integers(-30, 30).map(lambda k: 2 * k / 8.0)))
    assume(lo is not None or hi is not None)
    assume(lo is None or hi is None or lo <= hi)
    expected = np.clip(x, lo, hi)
    check(lambda t: t.clamp(lo, hi), [x], expected)
    check(lambda t: ops.clamp(t, min=lo, max=hi), [x], expected)


def test_clamp_needs_a_bound():
    with pytest.raises(ValueError, match="at least one"):
        tl.tensor([1.0]).clamp()


# -- reductions --------------------------------------------------------------------


@given(data=st.data(), keepdims=st.booleans())
def test_sum(data, keepdims):
    shape = data.draw(shapes())
    axis = data.draw(axes_for(len(shape)))
    x = data.draw(values(shape))
    check(lambda t: t.sum(axis=axis, keepdims=keepdims), [x], np.sum(x, axis=axis, keepdims=keepdims))
    check(lambda t: ops.sum(t, axis, keepdims), [x], np.sum(x, axis=axis, keepdims=keepdims))


@given(data=st.data(), keepdims=st.booleans())
def test_mean(data, keepdims):
    shape = data.draw(shapes())
    axis = data.draw(axes_for(len(shape)))
    assume(reduced_count(shape, axis) > 0)  # the mean of nothing is nan
    x = data.draw(values(shape))
    check(lambda t: t.mean(axis=axis, keepdims=keepdims), [x], np.mean(x, axis=axis, keepdims=keepdims))


@given(data=st.data(), keepdims=st.booleans(), ddof=st.sampled_from([0, 1]))
def test_var(data, keepdims, ddof):
    shape = data.draw(shapes())
    axis = data.draw(axes_for(len(shape)))
    assume(reduced_count(shape, axis) > ddof)
    x = data.draw(values(shape))
    expected = np.var(x, axis=axis, keepdims=keepdims, ddof=ddof)
    check(lambda t: t.var(axis=axis, keepdims=keepdims, ddof=ddof), [x], expected)


@given(data=st.data(), keepdims=st.booleans())
def test_max(data, keepdims):
    shape = data.draw(shapes())
    axis = data.draw(axes_for(len(shape)))
    assume(reduced_count(shape, axis) > 0)  # the max of nothing is undefined
    x = data.draw(grid(shape, unique=True))  # distinct values: a unique maximum in every group
    check(lambda t: t.max(axis=axis, keepdims=keepdims), [x], np.max(x, axis=axis, keepdims=keepdims))


def test_max_splits_ties_evenly():
    x = leaf([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]])
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])


def test_reduction_axis_errors_and_scalars():
    x = tl.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="out of range"):
        x.sum(axis=2)
    with pytest.raises(ValueError, match="out of range"):
        x.mean(axis=(0, -3))
    s = tl.tensor(2.0)  # a 0-d tensor: axis 0 and -1 reduce nothing, as in PyTorch
    assert s.sum(axis=0).item() == 2.0 and s.max(axis=-1).item() == 2.0


# -- shape ops ---------------------------------------------------------------------


@given(data=st.data())
def test_reshape_and_view(data):
    shape = data.draw(shapes())
    x = data.draw(values(shape))
    # A new shape with the same size: the dims shuffled, with 1s inserted, maybe one -1.
    new_shape = list(data.draw(st.permutations(shape))) if shape else []
    for _ in range(data.draw(st.integers(0, 2))):
        new_shape.insert(data.draw(st.integers(0, len(new_shape))), 1)
    if x.size > 0 and new_shape and data.draw(st.booleans()):
        new_shape[data.draw(st.integers(0, len(new_shape) - 1))] = -1
    expected = x.reshape(new_shape)
    check(lambda t: t.reshape(tuple(new_shape)), [x], expected)
    check(lambda t: t.view(*new_shape), [x], expected)
    check(lambda t: ops.reshape(t, tuple(new_shape)), [x], expected)


def test_reshape_error_names_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        tl.tensor(np.ones((2, 3))).reshape(4)


@given(data=st.data())
def test_transpose_permute_and_T(data):
    shape = data.draw(shapes())
    x = data.draw(values(shape))
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    # Negative axes name the same permutation.
    signed = tuple(a - len(shape) if data.draw(st.booleans()) else a for a in perm)
    check(lambda t: t.transpose(signed), [x], np.transpose(x, perm))
    check(lambda t: t.permute(*perm), [x], np.transpose(x, perm))
    check(lambda t: t.T, [x], x.T)
    check(lambda t: ops.transpose(t), [x], np.transpose(x))


@given(data=st.data())
def test_swapaxes(data):
    shape = data.draw(shapes(min_dims=1))
    x = data.draw(values(shape))
    n = len(shape)
    a1, a2 = data.draw(st.integers(-n, n - 1)), data.draw(st.integers(-n, n - 1))
    check(lambda t: t.swapaxes(a1, a2), [x], np.swapaxes(x, a1, a2))


def test_axis_out_of_range_is_an_error_not_a_wraparound():
    x = tl.tensor(np.ones((2, 1)))
    with pytest.raises(ValueError, match="out of range"):
        x.transpose(0, 5)
    with pytest.raises(ValueError, match="out of range"):
        x.squeeze(5)
    with pytest.raises(ValueError, match="out of range"):
        x.unsqueeze(4)
    with pytest.raises(ValueError, match="out of range"):
        x.swapaxes(0, 2)
    with pytest.raises(ValueError, match="not a permutation"):
        x.transpose(0, 0)


@given(data=st.data())
def test_broadcast_to_and_expand(data):
    (x_shape, _), target = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=4)
    )
    x = data.draw(values(x_shape))
    expected = np.broadcast_to(x, target)
    check(lambda t: t.broadcast_to(target), [x], expected)
    check(lambda t: t.expand(target), [x], expected)


def test_broadcast_to_error_names_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 4\)"):
        tl.tensor(np.ones(3)).broadcast_to((2, 4))


@given(data=st.data())
def test_squeeze_unsqueeze(data):
    shape = data.draw(shapes(max_side=2))  # sides 0..2: plenty of size-1 axes
    x = data.draw(values(shape))
    check(lambda t: t.squeeze(), [x], np.squeeze(x))
    ones = [i for i, n in enumerate(shape) if n == 1]
    if ones:
        axis = data.draw(st.sampled_from(ones)) - (len(shape) if data.draw(st.booleans()) else 0)
        check(lambda t: t.squeeze(axis), [x], np.squeeze(x, axis))
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check(lambda t: t.unsqueeze(axis), [x], np.expand_dims(x, axis))
    check(lambda t: ops.unsqueeze(t, axis), [x], np.expand_dims(x, axis))


def test_squeeze_refuses_an_axis_whose_size_is_not_one():
    with pytest.raises(ValueError, match="not 1"):
        tl.tensor(np.ones((2, 1))).squeeze(0)


# -- indexing ----------------------------------------------------------------------


@given(data=st.data())
def test_getitem_basic_indices(data):
    shape = data.draw(shapes())
    x = data.draw(values(shape))
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    check(lambda t: t[index], [x], x[index])


@given(data=st.data())
def test_getitem_integer_arrays_with_duplicates(data):
    shape = data.draw(shapes(min_dims=1, min_side=1))
    x = data.draw(values(shape))
    n = shape[0]
    index_shape = data.draw(shapes(min_dims=1, max_dims=2, max_side=5))
    index = data.draw(hnp.arrays(np.int64, index_shape, elements=st.integers(-n, n - 1)))
    check(lambda t: t[tl.tensor(index)], [x], x[index])
    if index.size:  # (an empty nested list loses its shape)
        check(lambda t: t[index.tolist()], [x], x[index])  # a (nested) list is an integer-array index too
    if len(shape) >= 2:
        m = shape[1]
        cols = data.draw(hnp.arrays(np.int64, index_shape, elements=st.integers(-m, m - 1)))
        check(lambda t: t[:, tl.tensor(cols)], [x], x[:, cols])
        check(lambda t: t[tl.tensor(index), tl.tensor(cols)], [x], x[index, cols])


def test_getitem_duplicate_indices_accumulate():
    x = leaf([10.0, 20.0, 30.0])
    y = x[[0, 0, 2, 0]]
    np.testing.assert_array_equal(to_numpy(y), [10.0, 10.0, 30.0, 10.0])
    y.sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [3.0, 0.0, 1.0])


def test_getitem_empty_list_is_an_empty_integer_index():
    x = tl.tensor(np.ones((3, 2)))
    assert x[[]].shape == (0, 2)


@given(data=st.data())
def test_getitem_boolean_mask(data):
    shape = data.draw(shapes(min_dims=1))
    x = data.draw(values(shape))
    k = data.draw(st.integers(1, len(shape)))
    mask = data.draw(hnp.arrays(np.bool_, shape[:k]))
    check(lambda t: t[tl.tensor(mask)], [x], x[mask])
    if mask.size:  # (an empty list would be an integer index)
        check(lambda t: t[mask.tolist()], [x], x[mask])


@given(data=st.data())
def test_concatenate(data):
    base = data.draw(shapes(min_dims=1))
    ndim = len(base)
    axis = data.draw(st.integers(-ndim, ndim - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    arrays = []
    for size in sizes:
        shape = list(base)
        shape[axis] = size
        arrays.append(data.draw(values(tuple(shape))))
    expected = np.concatenate(arrays, axis=axis)
    check(lambda *ts: ops.concatenate(ts, axis=axis), arrays, expected)
    check(lambda *ts: tl.concatenate(list(ts), axis), arrays, expected)


def test_concatenate_error_names_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        ops.concatenate([tl.tensor(np.ones((2, 3))), tl.tensor(np.ones((2, 4)))], axis=0)


@given(data=st.data())
def test_stack(data):
    shape = data.draw(shapes())
    n = data.draw(st.integers(1, 3))
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    arrays = [data.draw(values(shape)) for _ in range(n)]
    expected = np.stack(arrays, axis=axis)
    check(lambda *ts: ops.stack(ts, axis=axis), arrays, expected)


@given(data=st.data())
def test_split_and_chunk(data):
    shape = data.draw(shapes(min_dims=1))
    ndim = len(shape)
    axis = data.draw(st.integers(-ndim, ndim - 1))
    x = data.draw(values(shape))
    length = shape[axis]
    cuts = sorted(data.draw(st.lists(st.integers(0, length), max_size=3)))
    expected = np.split(x, cuts, axis=axis)
    y = ops.split(leaf(x), cuts, axis=axis)
    assert len(y) == len(expected)
    for part, ref in zip(y, expected):
        assert_forward(part, ref)
    assert gradcheck(lambda t: t.split(cuts, axis=axis), [leaf(x)])
    divisors = [d for d in range(1, 5) if length % d == 0]
    chunks = data.draw(st.sampled_from(divisors))
    check(lambda t: t.chunk(chunks, axis=axis), [x], None)
    for part, ref in zip(leaf(x).chunk(chunks, axis=axis), np.split(x, chunks, axis=axis)):
        assert_forward(part, ref)


def test_split_outputs_the_loss_ignores_get_zero_gradient():
    x = leaf(np.arange(6.0))
    first, second, _ = x.split(3)
    (first * 2 + second).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [2.0, 2.0, 1.0, 1.0, 0.0, 0.0])


@given(data=st.data())
def test_where(data):
    (c_shape, a_shape, b_shape), _ = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, min_side=0, max_side=4)
    )
    cond = data.draw(hnp.arrays(np.bool_, c_shape))
    a, b = data.draw(values(a_shape)), data.draw(values(b_shape))
    check(lambda s, t: ops.where(tl.tensor(cond), s, t), [a, b], np.where(cond, a, b))
    check(lambda s: tl.where(tl.tensor(cond), s, 0.5), [a], np.where(cond, a, 0.5))


@given(data=st.data(), value=st.floats(-3.0, 3.0))
def test_masked_fill(data, value):
    shape = data.draw(shapes())
    mask_shape = data.draw(hnp.broadcastable_shapes(shape, min_side=0, max_side=4))
    assume(np.broadcast_shapes(mask_shape, shape) == shape)
    x = data.draw(values(shape))
    mask = data.draw(hnp.arrays(np.bool_, mask_shape))
    check(lambda t: t.masked_fill(tl.tensor(mask), value), [x], np.where(mask, value, x))
    check(lambda t: ops.masked_fill(t, tl.tensor(mask), value), [x], np.where(mask, value, x))


def test_masked_fill_minus_infinity_then_softmax():
    # The causal-attention pattern: future positions get -inf, then exactly 0 probability.
    scores = leaf(np.zeros((3, 3)))
    future = tl.tensor(np.triu(np.ones((3, 3), dtype=bool), k=1))
    probs = scores.masked_fill(future, float("-inf")).softmax(axis=-1)
    np.testing.assert_allclose(to_numpy(probs), [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-15)
    (probs * tl.tensor(np.arange(9.0).reshape(3, 3))).sum().backward()
    assert np.isfinite(to_numpy(scores.grad)).all()
    np.testing.assert_array_equal(to_numpy(scores.grad)[np.triu_indices(3, 1)], 0.0)


def test_where_needs_a_boolean_condition():
    with pytest.raises(TypeError, match="boolean"):
        ops.where(tl.tensor([1, 0]), tl.tensor([1.0, 2.0]), 0.0)


# -- softmax family ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_and_log_softmax(name, data):
    shape = data.draw(shapes(min_dims=1))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    assume(shape[axis] > 0)
    x = data.draw(values(shape, -5.0, 5.0))
    log_probs = np_log_softmax(x, axis)
    expected = np.exp(log_probs) if name == "softmax" else log_probs
    check(lambda t: getattr(t, name)(axis=axis), [x], expected)
    check(lambda t: getattr(ops, name)(t, axis), [x], expected)


@given(data=st.data(), keepdims=st.booleans())
def test_logsumexp(data, keepdims):
    shape = data.draw(shapes())
    axis = data.draw(axes_for(len(shape)))
    assume(all(shape[a] > 0 for a in reduced_axes(axis, len(shape))))
    x = data.draw(values(shape, -5.0, 5.0))
    axes = reduced_axes(axis, len(shape))
    m = np.max(x, axis=axes, keepdims=True)
    expected = m + np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True))
    if not keepdims:
        expected = expected.reshape([n for i, n in enumerate(shape) if i not in axes])
    check(lambda t: t.logsumexp(axis=axis, keepdims=keepdims), [x], expected)


def test_softmax_family_is_stable_for_large_inputs():
    x = leaf([[1000.0, 1000.0, -1000.0], [-1000.0, 0.0, 1000.0]])
    np.testing.assert_allclose(to_numpy(x.softmax()), [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], atol=1e-300)
    np.testing.assert_allclose(to_numpy(x.logsumexp()), [1000.0 + math.log(2.0), 1000.0], rtol=1e-15)
    log_probs = to_numpy(x.log_softmax())
    assert np.isfinite(log_probs).all()
    np.testing.assert_allclose(log_probs[0], [-math.log(2.0), -math.log(2.0), -2000.0 - math.log(2.0)], rtol=1e-15)


# -- cross-entropy -----------------------------------------------------------------


def np_cross_entropy(logits: np.ndarray, targets: np.ndarray, ignore_index: int, reduction: str) -> np.ndarray:
    """NLL of NumPy's log-softmax, row by row."""
    log_probs = np_log_softmax(logits, axis=-1).reshape(-1, logits.shape[-1])
    flat = targets.reshape(-1)
    losses = np.array([0.0 if t == ignore_index else -log_probs[i, t] for i, t in enumerate(flat)])
    if reduction == "none":
        return losses.reshape(targets.shape)
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / np.sum(flat != ignore_index)


@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]), ignore_index=st.sampled_from([-100, 1]))
def test_cross_entropy(data, reduction, ignore_index):
    batch = data.draw(shapes(min_dims=0, max_dims=2, max_side=3))
    n_classes = data.draw(st.integers(1, 5))
    logits = data.draw(values(batch + (n_classes,), -5.0, 5.0))
    targets = data.draw(hnp.arrays(np.int64, batch, elements=st.sampled_from(list(range(n_classes)) + [ignore_index])))
    if reduction == "mean":
        assume(np.any(targets != ignore_index))  # the mean over no rows is nan
    expected = np_cross_entropy(logits, targets, ignore_index, reduction)
    fn = lambda t: ops.cross_entropy(t, tl.tensor(targets), ignore_index=ignore_index, reduction=reduction)  # noqa: E731
    check(fn, [logits], expected)


def test_cross_entropy_known_answer_and_default_ignore_index():
    logits = leaf([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])
    loss = ops.cross_entropy(logits, tl.tensor([0, 1, -100]))  # mean over the two rows that count
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-14, abs=0)
    loss.backward()
    p = 1 / (1 + math.exp(2.0))  # softmax probability of the wrong class
    np.testing.assert_allclose(to_numpy(logits.grad), [[-p / 2, p / 2], [p / 2, -p / 2], [0.0, 0.0]], rtol=1e-13)


def test_cross_entropy_large_logits_and_bad_targets():
    logits = leaf([[1000.0, -1000.0]])
    loss = ops.cross_entropy(logits, tl.tensor([1]))
    assert loss.item() == pytest.approx(2000.0, rel=1e-14, abs=0)
    # Two tied large logits: log 2 to full precision (not rounded at the scale of 1000).
    tied = ops.cross_entropy(leaf([[1000.0, 1000.0]]), tl.tensor([0]))
    assert tied.item() == pytest.approx(math.log(2.0), rel=1e-15, abs=0)
    with pytest.raises(IndexError, match="out of range"):
        ops.cross_entropy(logits, tl.tensor([2]))
    with pytest.raises(ValueError, match="targets of shape"):
        ops.cross_entropy(logits, tl.tensor([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        ops.cross_entropy(logits, tl.tensor([0]), reduction="max")


# -- embedding ---------------------------------------------------------------------


@given(data=st.data())
def test_embedding(data):
    n_rows, dim = data.draw(st.integers(1, 5)), data.draw(st.integers(0, 4))
    weight = data.draw(values((n_rows, dim)))
    ids = data.draw(hnp.arrays(np.int64, shapes(max_dims=2, max_side=5), elements=st.integers(0, n_rows - 1)))
    check(lambda w: ops.embedding(tl.tensor(ids), w), [weight], weight[ids])


def test_embedding_duplicate_ids_accumulate():
    weight = leaf(np.arange(8.0).reshape(4, 2))
    out = ops.embedding(tl.tensor([[1, 3], [1, 1]]), weight)
    np.testing.assert_array_equal(to_numpy(out), [[[2, 3], [6, 7]], [[2, 3], [2, 3]]])
    out.sum().backward()
    np.testing.assert_array_equal(to_numpy(weight.grad), [[0, 0], [3, 3], [0, 0], [1, 1]])
    with pytest.raises(IndexError, match="out of range"):
        ops.embedding(tl.tensor([4]), weight)


# -- dropout -----------------------------------------------------------------------


@given(x=shapes().flatmap(lambda s: away_from_zero(s, margin=0.1)), p=st.sampled_from([0.1, 0.5, 0.9]))
def test_dropout_gradient_is_the_scaled_mask(x, p):
    tl.get_backend().seed(1)
    t = leaf(x)
    y = ops.dropout(t, p, training=True)
    kept = to_numpy(y) != 0  # x has no zeros, so a zero output is a dropped element
    np.testing.assert_allclose(to_numpy(y), np.where(kept, x / (1 - p), 0.0), rtol=1e-15)
    weights = np.linspace(-1.0, 1.0, x.size).reshape(x.shape)
    (y * tl.tensor(weights)).sum().backward()
    np.testing.assert_allclose(to_numpy(t.grad), weights * kept / (1 - p), rtol=1e-15)

    def fixed_mask_dropout(s):
        tl.get_backend().seed(2)  # the same mask on every finite-difference evaluation
        return ops.dropout(s, p)

    assert gradcheck(fixed_mask_dropout, [leaf(x)])


def test_dropout_same_seed_same_mask():
    x = tl.tensor(np.ones((64, 64)))
    tl.get_backend().seed(123)
    first = to_numpy(ops.dropout(x, 0.5))
    second = to_numpy(ops.dropout(x, 0.5))
    tl.get_backend().seed(123)
    again = to_numpy(ops.dropout(x, 0.5))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)  # the generator moves on between calls


def test_dropout_keeps_the_expected_fraction():
    x = tl.tensor(np.ones(200_000))
    y = to_numpy(ops.dropout(x, 0.3))
    kept = np.mean(y != 0)
    # Binomial: std of the kept fraction is sqrt(0.3 * 0.7 / 2e5) ~ 0.001, so 0.005 is 5 sigma.
    assert abs(kept - 0.7) < 0.005
    assert abs(y.mean() - 1.0) < 0.01  # inverted dropout keeps the expected value


def test_dropout_eval_and_p_zero_are_the_identity():
    x = leaf([1.0, -2.0, 3.0])
    for y in (ops.dropout(x, 0.5, training=False), ops.dropout(x, 0.0, training=True)):
        np.testing.assert_array_equal(to_numpy(y), [1.0, -2.0, 3.0])
    ops.dropout(x, 0.5, training=False).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [1.0, 1.0, 1.0])
    x.zero_grad()
    y = ops.dropout(x, 1.0)
    np.testing.assert_array_equal(to_numpy(y), [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="between 0 and 1"):
        ops.dropout(x, 1.5)


# -- casts and dtypes --------------------------------------------------------------


@given(x=shapes().flatmap(values))
def test_cast_between_floats(x):
    t32 = tl.tensor(x.astype(np.float32), requires_grad=True)
    y = t32.double()
    assert y.dtype == np.float64 and y.requires_grad
    np.testing.assert_array_equal(to_numpy(y), x.astype(np.float32).astype(np.float64))
    weights = np.linspace(-1.0, 1.0, x.size).reshape(x.shape)
    (y * tl.tensor(weights)).sum().backward()
    assert t32.grad.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(t32.grad), weights.astype(np.float32))

    t64 = leaf(x)
    y = t64.float()
    assert y.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(y), x.astype(np.float32))
    # (Finite differences through float32 would be too coarse: gradcheck a float64 -> float64 cast.)
    check(lambda t: ops.cast(t, np.float64) * 2.0, [x], 2.0 * x)


def test_cast_to_integer_gives_no_gradient():
    x = leaf([1.5, -2.5])
    ids = x.astype(np.int64)
    assert ids.dtype == np.int64
    assert not ids.requires_grad and ids.creator is None
    np.testing.assert_array_equal(to_numpy(ids), [1, -2])


# Every op on float32 inputs: the output and the gradients its backward hands to its
# inputs stay float32 (a float64 gradient would silently double the cost of training).
FLOAT32_OPS = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1),
    "maximum": ops.maximum,
    "minimum": ops.minimum,
    "matmul": lambda a, b: a @ b.T,
    "pow": lambda a, b: a**2,
    "exp": lambda a, b: a.exp(),
    "log": lambda a, b: (a * a + 1).log(),
    "rsqrt": lambda a, b: (a * a + 1).rsqrt(),
    "sigmoid": lambda a, b: a.sigmoid(),
    "relu": lambda a, b: a.relu(),
    "silu": lambda a, b: a.silu(),
    "gelu_tanh": lambda a, b: a.gelu(),
    "gelu_exact": lambda a, b: a.gelu("none"),
    "abs": lambda a, b: a.abs(),
    "clamp": lambda a, b: a.clamp(-0.5, 0.5),
    "sum": lambda a, b: a.sum(axis=0),
    "mean": lambda a, b: a.mean(axis=1),
    "max": lambda a, b: a.max(axis=1),
    "var": lambda a, b: a.var(axis=0),
    "getitem": lambda a, b: a[[0, 0, 1]],
    "where": lambda a, b: ops.where(a > b, a, b),
    "concatenate": lambda a, b: ops.concatenate([a, b], axis=1),
    "stack": lambda a, b: ops.stack([a, b]),
    "softmax": lambda a, b: a.softmax(),
    "log_softmax": lambda a, b: a.log_softmax(),
    "logsumexp": lambda a, b: a.logsumexp(),
    "cross_entropy": lambda a, b: ops.cross_entropy(a, tl.tensor([0, 2, -100])),
    "embedding": lambda a, b: ops.embedding(tl.tensor([2, 2, 0]), a),
    "dropout": lambda a, b: ops.dropout(a, 0.5),
}


@pytest.mark.parametrize("name", list(FLOAT32_OPS))
def test_float32_stays_float32(name):
    rng = np.random.default_rng(0)
    a = tl.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    b = tl.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    y = FLOAT32_OPS[name](a, b)
    assert y.dtype == np.float32
    grads = y.creator.backward(tl.get_backend().xp.ones(y.shape, dtype=np.float32))
    for g in grads if isinstance(grads, tuple) else (grads,):
        if g is not None:
            assert g.dtype == np.float32, f"{y.creator.name}.backward returned {g.dtype}"
