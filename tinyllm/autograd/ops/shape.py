"""Ops that move values around without changing them: reshape, transpose, broadcast, squeeze,
concatenate, stack, split. Their backward moves the gradient back the same way.
"""

from __future__ import annotations

from typing import Any

from ..function import Function
from .arithmetic import sum_to
from .reduction import normalize_axes


class Reshape(Function):
    """y = x viewed with a new shape;  dL/dx = gy reshaped to x's shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)

    def forward(self, x: Any) -> Any:
        self.input_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) into {self.shape}") from None

    def backward(self, gy: Any) -> Any:
        return gy.reshape(self.input_shape)


class Transpose(Function):
    """y = x with its axes permuted (all reversed when axes is None);  dL/dx = gy with the inverse permutation."""

    def __init__(self, axes: tuple[int, ...] | None = None) -> None:
        self.axes = axes

    def forward(self, x: Any) -> Any:
        if self.axes is None:
            axes = tuple(reversed(range(x.ndim)))
        else:
            # Check the range first: a % ndim would quietly turn axis 5 of a 2-d tensor into axis 1.
            if any(not -x.ndim <= a < x.ndim for a in self.axes):
                raise ValueError(f"transpose axes {self.axes} are out of range for shape {x.shape}")
            axes = tuple(a % x.ndim for a in self.axes)
        if sorted(axes) != list(range(x.ndim)):
            raise ValueError(f"transpose axes {self.axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
        self.inverse = tuple(sorted(range(len(axes)), key=lambda i: axes[i]))
        return x.transpose(axes)

    def backward(self, gy: Any) -> Any:
        return gy.transpose(self.inverse)


class BroadcastTo(Function):
    """y = x repeated along broadcast axes to ``shape``;  dL/dx = sum_to(gy, x.shape)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)

    def forward(self, x: Any) -> Any:
        self.input_shape = x.shape
        try:
            return self.xp.broadcast_to(x, self.shape)
        except ValueError:
            raise ValueError(f"cannot broadcast a tensor of shape {x.shape} to {self.shape}") from None

    def backward(self, gy: Any) -> Any:
        return sum_to(gy, self.input_shape)


class Concatenate(Function):
    """y = the inputs joined along ``axis``;  dL/dx_i = the slice of gy that x_i filled."""

    def __init__(self, axis: int = 0) -> None:
        self.axis = axis

    def forward(self, *xs: Any) -> Any:
        self.sizes = [x.shape[self.axis] for x in xs]
        try:
            return self.xp.concatenate(xs, axis=self.axis)
        except ValueError:
            shapes = ", ".join(str(x.shape) for x in xs)
            raise ValueError(f"concatenate along axis {self.axis}: shapes {shapes} differ off that axis") from None

    def backward(self, gy: Any) -> tuple[Any, ...]:
        boundaries = []
        total = 0
        for size in self.sizes[:-1]:
            total += size
            boundaries.append(total)
        return tuple(self.xp.split(gy, boundaries, axis=self.axis))


class Stack(Function):
    """y = the inputs stacked along a new ``axis``;  dL/dx_i = gy indexed at i on that axis."""

    def __init__(self, axis: int = 0) -> None:
        self.axis = axis

    def forward(self, *xs: Any) -> Any:
        try:
            return self.xp.stack(xs, axis=self.axis)
        except ValueError:
            shapes = ", ".join(str(x.shape) for x in xs)
            raise ValueError(f"stack needs tensors of one shape, got {shapes}") from None

    def backward(self, gy: Any) -> tuple[Any, ...]:
        n = gy.shape[self.axis]
        return tuple(self.xp.take(gy, i, axis=self.axis) for i in range(n))


class Split(Function):
    """(y_1, ..., y_n) = x cut along ``axis`` (NumPy's ``split`` rules);  dL/dx = the gy_i joined again.

    Outputs the loss did not use get a zero gradient.
    """

    def __init__(self, indices_or_sections: Any, axis: int = 0) -> None:
        self.indices_or_sections = indices_or_sections
        self.axis = axis

    def forward(self, x: Any) -> tuple[Any, ...]:
        try:
            parts = self.xp.split(x, self.indices_or_sections, axis=self.axis)
        except ValueError:
            raise ValueError(
                f"cannot split axis {self.axis} of shape {x.shape} into {self.indices_or_sections} equal parts"
            ) from None
        self.part_shapes = [p.shape for p in parts]
        self.dtype = x.dtype
        return tuple(parts)

    def backward(self, *gys: Any) -> Any:
        filled = [g if g is not None else self.xp.zeros(s, dtype=self.dtype) for g, s in zip(gys, self.part_shapes)]
        return self.xp.concatenate(filled, axis=self.axis)


def reshape(x: Any, shape: tuple[int, ...]) -> Any:
    return Reshape(shape)(x)


def transpose(x: Any, axes: tuple[int, ...] | None = None) -> Any:
    return Transpose(axes)(x)


def swapaxes(x: Any, axis1: int, axis2: int) -> Any:
    for a in (axis1, axis2):
        if not -x.ndim <= a < x.ndim:
            raise ValueError(f"swapaxes: axis {a} is out of range for shape {x.shape}")
    axes = list(range(x.ndim))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return Transpose(tuple(axes))(x)


def broadcast_to(x: Any, shape: tuple[int, ...]) -> Any:
    return BroadcastTo(shape)(x)


def squeeze(x: Any, axis: Any = None) -> Any:
    """Remove size-1 axes (all of them, or the given ones, which must have size 1).

    squeeze(x of shape (2, 1, 3, 1)) -> (2, 3);  squeeze(x, axis=-1) -> (2, 1, 3).
    """
    axes = normalize_axes(axis, x.ndim)  # raises for an axis out of range
    for a in axes:
        if axis is not None and x.shape[a] != 1:
            raise ValueError(f"cannot squeeze axis {a} of shape {x.shape}: its size is not 1")
    shape = tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1))
    return Reshape(shape)(x)


def unsqueeze(x: Any, axis: int) -> Any:
    """Insert a size-1 axis at ``axis`` (negative counts from the end of the new shape).

    unsqueeze(x of shape (2, 3), 0) -> (1, 2, 3);  unsqueeze(x, -1) -> (2, 3, 1).
    """
    if not -(x.ndim + 1) <= axis <= x.ndim:
        raise ValueError(f"unsqueeze: axis {axis} is out of range for shape {x.shape} (valid: {-(x.ndim + 1)}..{x.ndim})")
    axis = axis % (x.ndim + 1)
    return Reshape(x.shape[:axis] + (1,) + x.shape[axis:])(x)


def concatenate(xs: Any, axis: int = 0) -> Any:
    return Concatenate(axis)(*xs)


def stack(xs: Any, axis: int = 0) -> Any:
    return Stack(axis)(*xs)


def split(x: Any, indices_or_sections: Any, axis: int = 0) -> tuple[Any, ...]:
    """NumPy's ``split``: an int cuts into that many equal parts, a list gives the cut indices."""
    return Split(indices_or_sections, axis)(x)


def chunk(x: Any, chunks: int, axis: int = 0) -> tuple[Any, ...]:
    """Cut into ``chunks`` equal parts along ``axis`` (the size must divide evenly)."""
    return Split(chunks, axis)(x)
