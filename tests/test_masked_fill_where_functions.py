"""Issue 18 item 17: ``masked_fill`` and ``where`` are functions in ``tinyllm`` and ``tinyllm.nn.functional``,
where a PyTorch reader looks for them (``torch.where``, ``torch.masked_fill``, ``F``-style calls)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_numpy

import tinyllm as tl
from tinyllm.nn import functional as F


@pytest.mark.parametrize("namespace", [tl, F], ids=["tinyllm", "functional"])
def test_masked_fill_function_values_and_gradient(namespace) -> None:
    x = tl.tensor(np.arange(6, dtype=np.float64).reshape(2, 3), requires_grad=True)
    mask = np.array([[True, False, False], [False, False, True]])
    y = namespace.masked_fill(x, mask, -5.0)  # (2, 3)
    np.testing.assert_array_equal(to_numpy(y.data), [[-5.0, 1.0, 2.0], [3.0, 4.0, -5.0]])
    (y * tl.tensor(np.full((2, 3), 2.0))).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), np.where(mask, 0.0, 2.0))  # filled places get no gradient


@pytest.mark.parametrize("namespace", [tl, F], ids=["tinyllm", "functional"])
def test_where_function_broadcasts_and_routes_gradients(namespace) -> None:
    a = tl.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)  # (3,)
    b = tl.tensor(np.array([[10.0], [20.0]]), requires_grad=True)  # (2, 1)
    cond = np.array([[True, False, True], [False, True, False]])  # (2, 3)
    y = namespace.where(cond, a, b)  # (2, 3)
    np.testing.assert_array_equal(to_numpy(y.data), [[1.0, 10.0, 3.0], [20.0, 2.0, 20.0]])
    y.sum().backward()
    np.testing.assert_array_equal(to_numpy(a.grad), [1.0, 1.0, 1.0])  # each column picks a once
    np.testing.assert_array_equal(to_numpy(b.grad), [[1.0], [2.0]])


def test_functions_are_the_methods_twins() -> None:
    x = tl.tensor(np.array([1.0, -1.0]))
    mask = np.array([False, True])
    np.testing.assert_array_equal(to_numpy(F.masked_fill(x, mask, 0.0).data), to_numpy(x.masked_fill(mask, 0.0).data))
    assert "masked_fill" in tl.__all__ and "where" in tl.__all__
    assert "masked_fill" in F.__all__ and "where" in F.__all__
