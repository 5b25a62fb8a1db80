"""Reductions over axes: sum, mean, max, var (NumPy's ``axis=`` and ``keepdims=``).

A reduction's backward spreads the output gradient back over the reduced axes:
first reshape it as if ``keepdims=True`` was used, then broadcast.
"""

from __future__ import annotations

from typing import Any

from ..function import Function


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` as a sorted tuple of non-negative ints: normalize_axes(-1, 3) -> (2,); None -> all axes.

    A 0-d tensor accepts axis 0 or -1 and reduces nothing (as PyTorch does).
    """
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    # This module defines its own ``max`` and ``sum`` (the ops), so no builtin max() here.
    bound = ndim if ndim > 0 else 1
    normalized = []
    for a in axes:
        if not -bound <= a < bound:
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        if ndim > 0:
            normalized.append(a % ndim)
    return tuple(sorted(set(normalized)))


def keepdims_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a reduction over ``axes`` has with keepdims=True: ((2, 3, 4), (1,)) -> (2, 1, 4)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Reduction(Function):
    def __init__(self, axis: Any = None, keepdims: bool = False) -> None:
        self.axis = axis
        self.keepdims = keepdims

    def setup(self, x: Any) -> tuple[int, ...]:
        self.axes = normalize_axes(self.axis, x.ndim)
        self.input_shape = x.shape
        return self.axes

    def expand(self, gy: Any) -> Any:
        """The output gradient broadcast back to the input shape (a read-only view)."""
        gy = gy.reshape(keepdims_shape(self.input_shape, self.axes))
        return self.xp.broadcast_to(gy, self.input_shape)

    def count(self) -> int:
        n = 1
        for a in self.axes:
            n *= self.input_shape[a]
        return n


class Sum(Reduction):
    """y = sum of x over the axes;  dL/dx = gy broadcast over the axes."""

    def forward(self, x: Any) -> Any:
        axes = self.setup(x)
        return x.sum(axis=axes, keepdims=self.keepdims)

    def backward(self, gy: Any) -> Any:
        return self.expand(gy)


class Mean(Reduction):
    """y = sum(x) / N over the axes;  dL/dx = gy / N broadcast over the axes."""

    def forward(self, x: Any) -> Any:
        axes = self.setup(x)
        return x.mean(axis=axes, keepdims=self.keepdims)

    def backward(self, gy: Any) -> Any:
        return self.expand(gy / self.count())


class Max(Reduction):
    """y = max of x over the axes;  dL/dx = gy at the maximum (split evenly between ties), else 0."""

    def forward(self, x: Any) -> Any:
        axes = self.setup(x)
        y = x.max(axis=axes, keepdims=True)
        self.save(x == y)
        return y if self.keepdims else y.reshape(tuple(n for i, n in enumerate(x.shape) if i not in axes))

    def backward(self, gy: Any) -> Any:
        (is_max,) = self.saved
        # bool / int counts would be float64: cast so a float32 graph stays float32.
        share = (is_max / is_max.sum(axis=self.axes, keepdims=True)).astype(gy.dtype, copy=False)
        return self.expand(gy) * share


class Var(Reduction):
    """y = sum((x - mean)**2) / (N - ddof) over the axes;  dL/dx = gy * 2 (x - mean) / (N - ddof).

    (The mean's own dependence on x cancels: the deviations sum to zero.)
    """

    def __init__(self, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> None:
        super().__init__(axis, keepdims)
        self.ddof = ddof

    def forward(self, x: Any) -> Any:
        axes = self.setup(x)
        centered = x - x.mean(axis=axes, keepdims=True)
        self.save(centered)
        return (centered * centered).sum(axis=axes, keepdims=self.keepdims) / (self.count() - self.ddof)

    def backward(self, gy: Any) -> Any:
        (centered,) = self.saved
        return self.expand(gy) * centered * (2.0 / (self.count() - self.ddof))


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Any:  # noqa: A001 - the NumPy name
    return Sum(axis, keepdims)(x)


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return Mean(axis, keepdims)(x)


def max(x: Any, axis: Any = None, keepdims: bool = False) -> Any:  # noqa: A001
    return Max(axis, keepdims)(x)


def var(x: Any, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Any:
    return Var(axis, keepdims, ddof)(x)
