"""softmax, log_softmax and logsumexp over one axis, each stabilised by subtracting the maximum.

With s = softmax(x) along the axis:

    softmax:     y = s;              dL/dx = y * (gy - sum(gy * y))
    log_softmax: y = x - lse(x);     dL/dx = gy - s * sum(gy)
    logsumexp:   y = log sum exp x;  dL/dx = gy * s
"""

from __future__ import annotations

from typing import Any

from ..function import Function


def shifted_logsumexp(xp: Any, x: Any, axis: Any) -> tuple[Any, Any]:
    """(m, log(sum(exp(x - m)))) along ``axis`` with keepdims, m = max(x): logsumexp(x) is their sum.

    Kept apart so that log_softmax can compute (x - m) - log(sum(...)): adding m first and
    subtracting it again (x - lse) rounds at the scale of m and loses digits when |x| is large.
    """
    m = x.max(axis=axis, keepdims=True)
    shifted = xp.asarray(x - m)  # asarray: for 0-d x NumPy returns a scalar, which out= cannot write into
    xp.exp(shifted, out=shifted)
    return m, xp.log(shifted.sum(axis=axis, keepdims=True))


def stable_logsumexp(xp: Any, x: Any, axis: Any) -> Any:
    """log(sum(exp(x))) along ``axis`` with keepdims, without overflow: m + log(sum(exp(x - m)))."""
    m, log_sum = shifted_logsumexp(xp, x, axis)
    return m + log_sum


class Softmax(Function):
    def __init__(self, axis: int = -1) -> None:
        self.axis = axis

    def forward(self, x: Any) -> Any:
        y = self.xp.asarray(x - x.max(axis=self.axis, keepdims=True))  # asarray: see stable_logsumexp
        self.xp.exp(y, out=y)
        y /= y.sum(axis=self.axis, keepdims=True)
        self.save(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    def __init__(self, axis: int = -1) -> None:
        self.axis = axis

    def forward(self, x: Any) -> Any:
        m, log_sum = shifted_logsumexp(self.xp, x, self.axis)
        y = (x - m) - log_sum
        self.save(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        return gy - self.xp.exp(y) * gy.sum(axis=self.axis, keepdims=True)


class LogSumExp(Function):
    def __init__(self, axis: Any = -1, keepdims: bool = False) -> None:
        self.axis = axis
        self.keepdims = keepdims

    def forward(self, x: Any) -> Any:
        from .reduction import keepdims_shape, normalize_axes

        self.axes = normalize_axes(self.axis, x.ndim)
        y = stable_logsumexp(self.xp, x, self.axes)  # keepdims shape
        self.save(x, y)
        self.kept_shape = keepdims_shape(x.shape, self.axes)
        return y if self.keepdims else y.reshape(tuple(n for i, n in enumerate(x.shape) if i not in self.axes))

    def backward(self, gy: Any) -> Any:
        x, y = self.saved
        return gy.reshape(self.kept_shape) * self.xp.exp(x - y)


def softmax(x: Any, axis: int = -1) -> Any:
    return Softmax(axis)(x)


def log_softmax(x: Any, axis: int = -1) -> Any:
    return LogSoftmax(axis)(x)


def logsumexp(x: Any, axis: Any = -1, keepdims: bool = False) -> Any:
    return LogSumExp(axis, keepdims)(x)
