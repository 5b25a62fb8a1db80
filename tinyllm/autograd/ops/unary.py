"""Elementwise functions of one tensor: exp, log, sqrt, rsqrt, tanh, sigmoid, relu, silu, gelu, abs, clamp, cast.

Each derivative is written in terms of what forward already computed, so
backward does as little new work as possible (e.g. d tanh = 1 - y**2).
"""

from __future__ import annotations

import math
from typing import Any

from ...backends import get_backend
from ..function import Function


class Exp(Function):
    """y = exp(x);  dL/dx = gy * y."""

    def forward(self, x: Any) -> Any:
        y = self.xp.exp(x)
        self.save(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        return gy * y


class Log(Function):
    """y = log(x);  dL/dx = gy / x."""

    def forward(self, x: Any) -> Any:
        self.save(x)
        return self.xp.log(x)

    def backward(self, gy: Any) -> Any:
        (x,) = self.saved
        return gy / x


class Sqrt(Function):
    """y = sqrt(x);  dL/dx = gy / (2 y)."""

    def forward(self, x: Any) -> Any:
        y = self.xp.sqrt(x)
        self.save(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        return gy / (2 * y)


class Rsqrt(Function):
    """y = 1 / sqrt(x);  dL/dx = -gy * y**3 / 2."""

    def forward(self, x: Any) -> Any:
        y = 1 / self.xp.sqrt(x)
        self.save(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        return -0.5 * gy * y * y * y


class Tanh(Function):
    """y = tanh(x);  dL/dx = gy * (1 - y**2)."""

    def forward(self, x: Any) -> Any:
        y = self.xp.tanh(x)
        self.save(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        return gy * (1 - y * y)


def _sigmoid(xp: Any, x: Any) -> Any:
    """1 / (1 + exp(-x)), written through tanh so it never overflows: sigmoid(x) = (1 + tanh(x/2)) / 2."""
    return 0.5 * (1 + xp.tanh(0.5 * x))


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x));  dL/dx = gy * y * (1 - y)."""

    def forward(self, x: Any) -> Any:
        y = _sigmoid(self.xp, x)
        self.save(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        return gy * y * (1 - y)


class Relu(Function):
    """y = max(x, 0);  dL/dx = gy where x > 0, else 0."""

    def forward(self, x: Any) -> Any:
        self.save(x > 0)
        return self.xp.maximum(x, 0)

    def backward(self, gy: Any) -> Any:
        (positive,) = self.saved
        return gy * positive


class Silu(Function):
    """y = x * sigmoid(x) (also called swish);  dL/dx = gy * s * (1 + x (1 - s)), s = sigmoid(x)."""

    def forward(self, x: Any) -> Any:
        s = _sigmoid(self.xp, x)
        self.save(x, s)
        return x * s

    def backward(self, gy: Any) -> Any:
        x, s = self.saved
        return gy * s * (1 + x * (1 - s))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class Gelu(Function):
    """Gaussian error linear unit.

    exact ("none"):  y = x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2;
                     dy/dx = Phi(x) + x * exp(-x**2 / 2) / sqrt(2 pi)
    "tanh" (GPT-2):  y = x/2 * (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x**3);
                     dy/dx = (1 + t)/2 + x/2 * (1 - t**2) * sqrt(2/pi) (1 + 3 * 0.044715 x**2), t = tanh(u)
    """

    def __init__(self, approximate: str = "tanh") -> None:
        if approximate not in ("tanh", "none"):
            raise ValueError(f"gelu approximate must be 'tanh' or 'none', not {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Any) -> Any:
        xp = self.xp
        if self.approximate == "tanh":
            t = xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
            self.save(x, t)
            return 0.5 * x * (1 + t)
        cdf = 0.5 * (1 + get_backend().erf(x / math.sqrt(2.0)))
        self.save(x, cdf)
        return x * cdf

    def backward(self, gy: Any) -> Any:
        x, saved = self.saved
        if self.approximate == "tanh":
            t = saved
            du_dx = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return gy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du_dx)
        cdf = saved
        pdf = self.xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return gy * (cdf + x * pdf)


class Abs(Function):
    """y = |x|;  dL/dx = gy * sign(x) (0 at x = 0)."""

    def forward(self, x: Any) -> Any:
        self.save(x)
        return self.xp.abs(x)

    def backward(self, gy: Any) -> Any:
        (x,) = self.saved
        return gy * self.xp.sign(x)


class Clamp(Function):
    """y = min(max(x, lo), hi);  dL/dx = gy where lo <= x <= hi, else 0."""

    def __init__(self, lo: float | None, hi: float | None) -> None:
        if lo is None and hi is None:
            raise ValueError("clamp needs at least one of min and max")
        self.lo, self.hi = lo, hi

    def forward(self, x: Any) -> Any:
        inside = self.xp.ones(x.shape, dtype=bool)
        if self.lo is not None:
            inside &= x >= self.lo
        if self.hi is not None:
            inside &= x <= self.hi
        self.save(inside)
        return self.xp.clip(x, self.lo, self.hi)

    def backward(self, gy: Any) -> Any:
        (inside,) = self.saved
        return gy * inside


class Cast(Function):
    """y = x converted to another dtype;  dL/dx = gy converted back."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype

    def forward(self, x: Any) -> Any:
        self.source_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy: Any) -> Any:
        return gy.astype(self.source_dtype)


def exp(x: Any) -> Any:
    return Exp()(x)


def log(x: Any) -> Any:
    return Log()(x)


def sqrt(x: Any) -> Any:
    return Sqrt()(x)


def rsqrt(x: Any) -> Any:
    return Rsqrt()(x)


def tanh(x: Any) -> Any:
    return Tanh()(x)


def sigmoid(x: Any) -> Any:
    return Sigmoid()(x)


def relu(x: Any) -> Any:
    return Relu()(x)


def silu(x: Any) -> Any:
    return Silu()(x)


def gelu(x: Any, approximate: str = "tanh") -> Any:
    return Gelu(approximate)(x)


def abs(x: Any) -> Any:  # noqa: A001 - the NumPy name
    return Abs()(x)


def clamp(x: Any, min: float | None = None, max: float | None = None) -> Any:  # noqa: A002
    return Clamp(min, max)(x)


def cast(x: Any, dtype: Any) -> Any:
    return Cast(dtype)(x)
