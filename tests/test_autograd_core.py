"""The autograd engine itself: graph walking, gradient accumulation, grad modes, dtype rules,
memory release, error messages, backends, gradcheck, to_dot, and the Tensor basics."""

from __future__ import annotations

import doctest
import gc
import importlib
import math
import re
import sys
import weakref

import numpy as np
import pytest
from conftest import cupy_skip_reason, to_numpy

import tinyllm as tl
from tinyllm.autograd import Function, GradcheckError, gradcheck, ops, to_dot


def leaf(values, dtype=np.float64) -> tl.Tensor:
    return tl.tensor(np.asarray(values, dtype=dtype), requires_grad=True)


def xp():
    return tl.get_backend().xp


# -- walking the graph ---------------------------------------------------------------


def test_deep_chain_backward_has_no_recursion_limit():
    # Deeper than the recursion limit: a recursive topological sort would fail here.
    n_ops = max(1000, 2 * sys.getrecursionlimit())
    x = leaf([0.5, -2.0])
    y = x
    for _ in range(n_ops):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [1.0001**n_ops] * 2, rtol=1e-12)
    assert "Mul" in to_dot(y)  # drawing the deep graph is iterative too


def test_deep_chain_of_mixed_ops():
    x = leaf([0.3])
    y = x
    for _ in range(500):  # 1,000 ops: y -> tanh(y) + 0.1 * y, twice per step
        y = y.tanh() + y * 0.1
    assert gradcheck(lambda t: _mixed_chain(t, 500), [leaf([0.3])])
    y.backward(np.ones(1))
    assert np.isfinite(to_numpy(x.grad)).all() and to_numpy(x.grad)[0] != 0


def _mixed_chain(t, n):
    for _ in range(n):
        t = t.tanh() + t * 0.1
    return t


def test_diamond_accumulates_both_paths():
    x = leaf([1.0, 2.0, -3.0])
    a = x * 2.0  # a feeds two branches that meet again
    loss = (a * 3.0 + a * a).sum()  # dloss/da = 3 + 2a, da/dx = 2
    loss.backward()
    np.testing.assert_allclose(to_numpy(x.grad), (3 + 2 * (2 * np.array([1.0, 2.0, -3.0]))) * 2)


def test_tensor_used_twice_in_one_op():
    x = leaf([3.0, -1.0])
    (x * x).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [6.0, -2.0])


def test_generation_order_with_uneven_paths():
    # a reaches the loss directly and through a long branch; its gradient must wait for both.
    x = leaf([0.5])
    a = x.exp()
    long_branch = a
    for _ in range(5):
        long_branch = long_branch * 1.5
    (a + long_branch).backward(np.ones(1))
    np.testing.assert_allclose(to_numpy(x.grad), [math.exp(0.5) * (1 + 1.5**5)], rtol=1e-14)


def test_gradients_accumulate_across_backward_calls_until_zero_grad():
    x = leaf([1.0, 2.0])
    (x * x).sum().backward()
    (x * x).sum().backward()  # a fresh graph: its gradient adds to the first
    np.testing.assert_array_equal(to_numpy(x.grad), [4.0, 8.0])
    x.zero_grad()
    assert x.grad is None
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [3.0, 3.0])


def test_backward_with_explicit_gradient_and_its_errors():
    x = leaf([1.0, 2.0])
    y = x * 3.0
    y.backward(np.array([1.0, -1.0]))
    np.testing.assert_array_equal(to_numpy(x.grad), [3.0, -3.0])
    with pytest.raises(RuntimeError, match=r"one-element.*\(2,\)"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        (x * 2.0).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        tl.tensor([1.0]).exp().sum().backward()


# -- grad modes and requires_grad ----------------------------------------------------------


def test_no_grad_records_nothing_and_enable_grad_turns_it_back_on():
    w = leaf([1.0, 2.0])
    assert tl.is_grad_enabled()
    with tl.no_grad():
        assert not tl.is_grad_enabled()
        y = (w * 2.0).exp()
        assert not y.requires_grad and y.creator is None
        with tl.enable_grad():
            z = w * 2.0
            assert z.requires_grad and z.creator is not None
        assert not tl.is_grad_enabled()
    assert tl.is_grad_enabled()


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(KeyError):
        with tl.no_grad():
            raise KeyError("boom")
    assert tl.is_grad_enabled()


def test_requires_grad_propagation():
    w, c = leaf([1.0]), tl.tensor(np.array([2.0]))
    assert w.requires_grad and w.is_leaf and not c.requires_grad
    assert (w * c).requires_grad and not (c * c).requires_grad
    assert (c * c).creator is None  # no graph when no input needs a gradient
    y = w * c
    assert not y.is_leaf and y.creator.name == "Mul"
    parts = ops.split(leaf(np.arange(4.0)), 2)
    assert all(p.requires_grad for p in parts)


# -- dtype rules ------------------------------------------------------------------------


def test_dtype_rules():
    assert tl.tensor([1.0, 2.0]).dtype == np.float32  # Python floats: float32 by default
    assert tl.tensor(1.5).dtype == np.float32
    x64 = tl.tensor(np.array([1.0, 2.0]))
    assert x64.dtype == np.float64  # arrays keep their dtype
    assert (x64 * 2.0).dtype == np.float64  # a Python scalar takes the tensor's dtype
    assert (2.0 * x64 + 1).dtype == np.float64
    assert (tl.tensor([1.0]) * 2.0).dtype == np.float32
    assert tl.tensor([1.0], dtype=np.float64).dtype == np.float64
    assert np.issubdtype(tl.tensor([1, 2]).dtype, np.integer)


def test_integer_tensors_never_require_grad():
    with pytest.raises(TypeError, match="Only floating-point tensors can require gradients.*int"):
        tl.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="floating-point"):
        tl.tensor([1, 2]).requires_grad_()
    with pytest.raises(TypeError, match="numbers"):
        tl.tensor(["a", object()])


def test_grad_is_a_plain_array_of_the_parameter_shape_and_dtype():
    for dtype in (np.float32, np.float64):
        bias = tl.tensor(np.zeros(3, dtype=dtype), requires_grad=True)
        x = tl.tensor(np.ones((2, 3), dtype=dtype))
        ((x + bias) * 2.0).sum().backward()  # bias is broadcast over 2 rows
        assert isinstance(bias.grad, xp().ndarray) and not isinstance(bias.grad, tl.Tensor)
        assert bias.grad.shape == (3,) and bias.grad.dtype == dtype
        np.testing.assert_array_equal(to_numpy(bias.grad), [4.0, 4.0, 4.0])


def test_grads_of_different_leaves_never_share_memory():
    # Add hands the very same gradient array to both inputs; each leaf must get its own copy.
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).backward(np.array([1.0, 1.0]))
    a.grad += 10.0  # an optimizer-style in-place update of one gradient
    np.testing.assert_array_equal(to_numpy(b.grad), [1.0, 1.0])
    upstream = xp().ones(2)
    c = leaf([0.0, 0.0])
    c.backward(upstream)  # a leaf's own backward: the caller's array is not adopted either
    c.grad *= 3.0
    np.testing.assert_array_equal(to_numpy(upstream), [1.0, 1.0])


# -- memory ---------------------------------------------------------------------------


def test_backward_frees_the_graph():
    x = leaf(np.ones((4, 4)))
    hidden = (x * 2.0).exp()
    out = hidden.tanh()
    loss = out.sum()
    hidden_ref, out_ref = weakref.ref(hidden), weakref.ref(out)
    creator = out.creator
    del hidden, out
    gc.collect()
    assert hidden_ref() is not None and out_ref() is not None  # the graph keeps them alive
    assert len(creator.saved) > 0
    gc.disable()  # freed by reference counting alone: the graph holds no cycles
    try:
        loss.backward()
        assert hidden_ref() is None and out_ref() is None
    finally:
        gc.enable()
    assert creator.saved == () and creator.inputs is None


def test_dropping_the_loss_frees_the_graph_without_backward():
    x = leaf(np.ones(3))
    hidden = x.exp()
    loss = (hidden * 2.0).sum()
    hidden_ref = weakref.ref(hidden)
    del hidden
    assert hidden_ref() is not None
    gc.disable()
    try:
        del loss
        assert hidden_ref() is None
    finally:
        gc.enable()


def test_second_backward_through_a_freed_graph_raises():
    x = leaf([1.0, 2.0])
    loss = (x.exp() * 2.0).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    loss = (x.exp() * 2.0).sum()
    loss.backward(retain_graph=True)
    assert loss.creator.inputs is not None  # nothing was freed
    loss.backward()
    np.testing.assert_allclose(to_numpy(x.grad), 4.0 * np.exp([1.0, 2.0]), rtol=1e-15)
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


# -- error messages ----------------------------------------------------------------------


def test_matmul_shape_mismatch_names_both_shapes():
    a, b = tl.tensor(np.ones((2, 3))), tl.tensor(np.ones((4, 5)))
    with pytest.raises(ValueError) as info:
        a @ b
    assert "(2, 3)" in str(info.value) and "(4, 5)" in str(info.value)
    with pytest.raises(ValueError) as info:
        tl.tensor(np.ones((2, 2, 3))) @ tl.tensor(np.ones((3, 3, 4)))  # batch dims 2 vs 3
    assert "(2, 2, 3)" in str(info.value) and "(3, 3, 4)" in str(info.value)
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        tl.tensor(np.ones(3)) @ tl.tensor(np.ones(2))


def test_broadcasting_mismatch_names_both_shapes():
    with pytest.raises(ValueError) as info:
        tl.tensor(np.ones((2, 3))) + tl.tensor(np.ones(4))
    message = str(info.value)
    assert "(2, 3)" in message and "(4,)" in message and "broadcast" in message
    with pytest.raises(ValueError, match=r"\(5,\).*\(2, 3\)"):
        tl.tensor(np.ones(5)) * tl.tensor(np.ones((2, 3)))


# -- backends ----------------------------------------------------------------------------


def test_unknown_backend_lists_the_choices():
    before = tl.get_backend()
    with pytest.raises(ValueError) as info:
        tl.set_backend("tpu")
    assert "'tpu'" in str(info.value) and "numpy" in str(info.value) and "cupy" in str(info.value)
    assert tl.get_backend() is before


def test_missing_cupy_explains_how_to_install_it():
    reason = cupy_skip_reason()
    if reason is None:
        pytest.skip("CuPy and a GPU are available here, so the 'unavailable' message cannot be produced")
    before = tl.get_backend()
    with pytest.raises(tl.BackendUnavailableError) as info:
        tl.set_backend("cupy")
    assert 'pip install "tinyllm[cuda12]"' in str(info.value)
    assert tl.get_backend() is before  # no silent fallback, no half-switched state


# -- gradcheck ------------------------------------------------------------------------------


class WrongSquare(Function):
    """y = x**2 with a deliberately wrong backward: x instead of 2x."""

    def forward(self, x):
        self.save(x)
        return x * x

    def backward(self, gy):
        (x,) = self.saved
        return gy * x


class NanBackward(Function):
    def forward(self, x):
        return x * 1.0

    def backward(self, gy):
        return gy * np.nan


def test_gradcheck_passes_a_correct_function():
    x, y = leaf([[0.3, -1.2], [2.0, 0.5]]), leaf([1.5, -0.7])
    assert gradcheck(lambda a, b: (a @ b).tanh() * b.sum(), [x, y]) is True
    # A non-contiguous input (a transposed view) is perturbed in place as well.
    transposed = tl.tensor((np.arange(6.0).reshape(2, 3) / 6).T, requires_grad=True)
    assert gradcheck(lambda a: (a * a).exp().sum(), [transposed]) is True


def test_gradcheck_catches_a_wrong_backward_and_names_the_worst_element():
    x = leaf([1.0, -3.0, 2.0])
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda t: WrongSquare()(t), [x])
    message = str(info.value)
    # The error is |x| * |r|, largest at index 1 where |x| = 3 (r is gradcheck's random weight,
    # which here is a fixed seed's draw; the analytic gradient is half the numeric one).
    match = re.search(r"at index \((\d+),\): analytic (\S+), numeric (\S+)", message)
    assert match, message
    index, analytic, numeric = int(match[1]), float(match[2]), float(match[3])
    weights = np.random.default_rng(0).standard_normal(3)
    assert index == int(np.argmax(np.abs(weights * np.array([1.0, -3.0, 2.0]))))
    assert numeric == pytest.approx(2 * analytic, rel=1e-6, abs=0)


def test_gradcheck_catches_nan_gradients_and_checks_its_inputs():
    with pytest.raises(GradcheckError, match="nan"):
        gradcheck(lambda t: NanBackward()(t), [leaf([1.0, 2.0])])
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda t: t * 2.0, [leaf([1.0], dtype=np.float32)])
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda t: t * 2.0, [tl.tensor(np.ones(2))])
    with pytest.raises(ValueError, match="leaf"):
        gradcheck(lambda t: t * 2.0, [leaf([1.0]) * 1.0])


def test_gradcheck_leaves_inputs_and_grads_as_they_were():
    x = leaf([0.5, 1.5])
    before = to_numpy(x).copy()
    gradcheck(lambda t: t.exp(), [x])
    np.testing.assert_array_equal(to_numpy(x), before)
    assert x.grad is None


def test_docstring_examples():
    # (importlib: the attribute tinyllm.autograd.gradcheck is the function, not its module)
    for name in ("gradcheck", "function", "tensor"):
        module = importlib.import_module(f"tinyllm.autograd.{name}")
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# -- to_dot -----------------------------------------------------------------------------


def test_to_dot_shows_ops_shapes_and_grad_flags():
    w = leaf(np.ones((2, 3)))
    w.name = "weight"
    x = tl.tensor(np.ones((4, 2)))
    loss = (x @ w).tanh().sum()
    dot = to_dot(loss)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    for op in ("MatMul", "Tanh", "Sum"):
        assert f'label="{op}"' in dot
    boxes = [line for line in dot.splitlines() if "shape=box" in line]
    assert len(boxes) == 5  # w, x, x @ w, tanh, loss
    weight_box = next(line for line in boxes if "weight" in line)
    assert "(2, 3)" in weight_box and "requires_grad" in weight_box and "fillcolor" in weight_box
    input_box = next(line for line in boxes if "(4, 2)" in line)
    assert "requires_grad" not in input_box  # the input needs no gradient
    assert any("(4, 3)" in line for line in boxes)


def test_to_dot_draws_each_edge_once_and_marks_freed_functions():
    w = leaf([1.0, 2.0])
    a = w * w  # a feeds two ops: its creator is reached twice
    loss = (a * a.exp()).sum()
    out_edges = [line for line in to_dot(loss).splitlines() if line.strip().startswith("f") and "-> t" in line]
    assert len(out_edges) == len(set(out_edges)) == 4  # one per op: Mul, Exp, Mul, Sum
    loss.backward()
    assert "(freed)" in to_dot(loss)


# -- Tensor basics ----------------------------------------------------------------------------


def test_getitem_slices_integer_arrays_and_masks():
    data = np.arange(12.0).reshape(3, 4)
    x = leaf(data)
    np.testing.assert_array_equal(to_numpy(x[1:, ::2]), data[1:, ::2])
    np.testing.assert_array_equal(to_numpy(x[..., -1]), data[..., -1])
    np.testing.assert_array_equal(to_numpy(x[None, 0]), data[None, 0])
    np.testing.assert_array_equal(to_numpy(x[[2, 0, 2]]), data[[2, 0, 2]])
    mask = data > 6.5
    np.testing.assert_array_equal(to_numpy(x[tl.tensor(mask)]), data[mask])
    np.testing.assert_array_equal(to_numpy(x[x > 6.5]), data[mask])  # a comparison result as the mask
    (x[1:, ::2].sum() + x[[2, 0, 2]].sum() + x[x > 6.5].sum()).backward()
    expected = np.zeros((3, 4))
    expected[1:, ::2] += 1
    expected[[2, 0]] += [[2.0], [1.0]]
    expected[mask] += 1
    np.testing.assert_array_equal(to_numpy(x.grad), expected)


def test_comparisons_return_boolean_tensors_without_grad():
    x, y = leaf([1.0, 2.0, 3.0]), leaf([3.0, 2.0, 1.0])
    cases = {
        "<": (x < y, [True, False, False]),
        "<=": (x <= y, [True, True, False]),
        ">": (x > y, [False, False, True]),
        ">=": (x >= 2.0, [False, True, True]),
        "eq": (x.eq(y), [False, True, False]),
        "ne": (x.ne(2.0), [True, False, True]),
    }
    for name, (result, expected) in cases.items():
        assert result.dtype == np.bool_, name
        assert not result.requires_grad and result.creator is None, name
        np.testing.assert_array_equal(to_numpy(result), expected)
    assert (x == x) is True and (x == y) is False  # == is identity, so tensors stay hashable
    assert len({x, y, x}) == 2


def test_item_numpy_detach_T():
    x = leaf([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert x.sum().item() == 21.0 and isinstance(x.sum().item(), float)
    with pytest.raises(ValueError, match=r"one element.*\(2, 3\)"):
        x.item()
    host = x.numpy()
    assert isinstance(host, np.ndarray)
    host[0, 0] = 100.0  # a copy: the tensor is unchanged
    assert to_numpy(x)[0, 0] == 1.0
    assert x.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]

    d = x.detach()
    assert not d.requires_grad and d.creator is None and d.data is x.data
    (d * x).sum().backward()  # the gradient flows through x only, not through d
    np.testing.assert_array_equal(to_numpy(x.grad), to_numpy(x))
    x.zero_grad()
    assert x.grad is None

    t = x.T
    assert t.shape == (3, 2)
    np.testing.assert_array_equal(to_numpy(t), to_numpy(x).T)
    (t * tl.tensor(np.arange(6.0).reshape(3, 2))).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), np.arange(6.0).reshape(3, 2).T)


def test_tensor_attributes_and_repr():
    x = leaf(np.zeros((2, 3)))
    assert (x.shape, x.ndim, x.size, len(x)) == ((2, 3), 2, 6, 2)
    assert "requires_grad=True" in repr(x) and repr(x).startswith("tensor(")
    assert "requires_grad" not in repr(x.detach())
