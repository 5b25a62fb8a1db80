"""Indexing: ``x[index]`` (slices, integer arrays, boolean masks), ``where`` and ``masked_fill``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...backends import get_backend
from ..function import Function
from .arithmetic import sum_to


def _raw_index(index: Any) -> Any:
    """Replace Tensors inside an index by their arrays, and host (NumPy) arrays by the backend's.

    On CuPy an index array must live on the GPU like the data it indexes: a NumPy array there would
    be refused by ``xp.where`` and, worse, not recognised as an advanced index by the backward below
    (which would then assign where it must add).
    """
    from ..tensor import Tensor

    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(_raw_index(i) for i in index)
    if isinstance(index, np.ndarray):
        return get_backend().asarray(index)  # NumPy backend: the same array, no copy
    if isinstance(index, list):
        array = get_backend().xp.asarray(index)
        # x[[]] selects nothing, as in NumPy; asarray([]) alone would be a float array, not an index.
        return array.astype(get_backend().xp.int64) if array.size == 0 else array
    return index


def _is_advanced(index: Any) -> bool:
    """True if the index holds an integer array (which may repeat positions)."""
    parts = index if isinstance(index, tuple) else (index,)
    xp = get_backend().xp
    return any(isinstance(p, xp.ndarray) and p.dtype != bool for p in parts)


class GetItem(Function):
    """y = x[index];  dL/dx = zeros with gy added at the indexed positions.

    Integer-array indices may name one position twice (x[[0, 0]]); their
    gradients must add up, so that case uses the backend's ``scatter_add``.
    """

    def __init__(self, index: Any) -> None:
        self.index = _raw_index(index)

    def forward(self, x: Any) -> Any:
        self.input_shape = x.shape
        self.dtype = x.dtype
        return x[self.index]

    def backward(self, gy: Any) -> Any:
        gx = self.xp.zeros(self.input_shape, dtype=self.dtype)
        if _is_advanced(self.index):
            get_backend().scatter_add(gx, self.index, gy)
        else:
            gx[self.index] = gy
        return gx


class Where(Function):
    """y = a where cond else b (broadcasting);  dL/da = sum_to(gy * cond), dL/db = sum_to(gy * ~cond)."""

    def __init__(self, condition: Any) -> None:
        self.condition = _raw_index(condition)
        if self.condition.dtype != bool:
            raise TypeError(f"where/masked_fill needs a boolean condition, not {self.condition.dtype}")

    def forward(self, a: Any, b: Any) -> Any:
        self.shapes = (a.shape, b.shape)
        try:
            return self.xp.where(self.condition, a, b)
        except ValueError:
            raise ValueError(
                f"where: condition {self.condition.shape} and values {a.shape}, {b.shape} do not broadcast"
            ) from None

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a_shape, b_shape = self.shapes
        zero = self.xp.zeros((), dtype=gy.dtype)
        ga = self.xp.where(self.condition, gy, zero)
        gb = self.xp.where(self.condition, zero, gy)
        return sum_to(ga, a_shape), sum_to(gb, b_shape)


def getitem(x: Any, index: Any) -> Any:
    return GetItem(index)(x)


def where(condition: Any, a: Any, b: Any) -> Any:
    """Elementwise ``a if condition else b`` (NumPy's and PyTorch's ``where``), differentiable in a and b.

    Also ``tl.where`` and ``F.where``; ``condition`` is a boolean array or Tensor, ``a`` and ``b``
    Tensors or numbers, all broadcast together.

    >>> import tinyllm as tl
    >>> tl.where(tl.tensor([True, False]).data, tl.tensor([1.0, 2.0]), 0.0).tolist()
    [1.0, 0.0]
    """
    from ..tensor import Tensor, as_tensor, floating_dtype_of

    like = floating_dtype_of((a, b))
    a = a if isinstance(a, Tensor) else as_tensor(a, dtype=like)
    b = b if isinstance(b, Tensor) else as_tensor(b, dtype=like)
    return Where(condition)(a, b)


def masked_fill(x: Any, mask: Any, value: float) -> Any:
    """``x`` with ``value`` wherever ``mask`` is True (PyTorch's ``masked_fill``); no gradient flows there.

    Also ``tl.masked_fill``, ``F.masked_fill`` and the method ``x.masked_fill(mask, value)``. The
    causal mask of attention is the classic use: scores.masked_fill(future, -inf) before softmax.

    >>> import numpy as np, tinyllm as tl
    >>> tl.masked_fill(tl.tensor([1.0, 2.0, 3.0]), np.array([False, True, False]), -1.0).tolist()
    [1.0, -1.0, 3.0]
    """
    return where(mask, value, x)
