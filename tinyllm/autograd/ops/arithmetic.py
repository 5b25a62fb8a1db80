"""Binary arithmetic with NumPy broadcasting: add, sub, mul, div, maximum, minimum; neg and pow.

Broadcasting copies an input along some axes in the forward pass, so its
gradient is the output gradient *summed* over those axes: :func:`sum_to`.
"""

from __future__ import annotations

from typing import Any

from ..function import Function


def sum_to(grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``grad`` down to ``shape``, undoing NumPy broadcasting.

    Example: a (3,) input broadcast against (2, 3) gets the output gradient
    summed over the first axis:  sum_to(ones((2, 3)), (3,)) -> [2, 2, 2];
    sum_to(ones((2, 3)), (2, 1)) -> [[3], [3]].
    """
    if grad.shape == tuple(shape):
        return grad  # nothing was broadcast
    # Broadcasting lines the shapes up at the right, e.g. shape (3, 1) against grad (4, 3, 5):
    n_lead = grad.ndim - len(shape)  # 1: the input had no axis 0 at all, it was repeated 4 times
    lead_axes = tuple(range(n_lead))  # (0,)
    # Axes where the input had size 1 but the output more (here axis 2: 1 -> 5): repeated too.
    kept_axes = tuple(n_lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[n_lead + i] != 1)  # (2,)
    # Every repeat got its own gradient: add them up. (4, 3, 5) -> (1, 3, 1) -> reshape drops the lead -> (3, 1).
    return grad.sum(axis=lead_axes + kept_axes, keepdims=True).reshape(shape)


class BinaryFunction(Function):
    """A Function of two broadcastable arrays; checks the shapes with a clear message."""

    def check_shapes(self, a: Any, b: Any) -> None:
        if a.shape == b.shape:
            return  # the common case, at no cost
        try:
            self.xp.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ValueError(
                f"{self.name}: shapes {a.shape} and {b.shape} cannot be broadcast together "
                "(trailing dimensions must be equal or 1)."
            ) from None


class Add(BinaryFunction):
    """y = a + b;  dL/da = sum_to(gy), dL/db = sum_to(gy)."""

    def forward(self, a: Any, b: Any) -> Any:
        self.check_shapes(a, b)
        self.shapes = (a.shape, b.shape)
        return a + b

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a_shape, b_shape = self.shapes
        return sum_to(gy, a_shape), sum_to(gy, b_shape)


class Sub(BinaryFunction):
    """y = a - b;  dL/da = sum_to(gy), dL/db = -sum_to(gy)."""

    def forward(self, a: Any, b: Any) -> Any:
        self.check_shapes(a, b)
        self.shapes = (a.shape, b.shape)
        return a - b

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a_shape, b_shape = self.shapes
        return sum_to(gy, a_shape), -sum_to(gy, b_shape)


class Mul(BinaryFunction):
    """y = a * b;  dL/da = sum_to(gy * b), dL/db = sum_to(gy * a)."""

    def forward(self, a: Any, b: Any) -> Any:
        self.check_shapes(a, b)
        self.save(a, b)
        return a * b

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a, b = self.saved
        return sum_to(gy * b, a.shape), sum_to(gy * a, b.shape)


class Div(BinaryFunction):
    """y = a / b;  dL/da = sum_to(gy / b), dL/db = sum_to(-gy * a / b**2)."""

    def forward(self, a: Any, b: Any) -> Any:
        self.check_shapes(a, b)
        self.save(a, b)
        return a / b

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a, b = self.saved
        ga = gy / b
        return sum_to(ga, a.shape), sum_to(-ga * a / b, b.shape)


class Maximum(BinaryFunction):
    """y = max(a, b) elementwise; the gradient goes to the larger input (split evenly on ties)."""

    def forward(self, a: Any, b: Any) -> Any:
        self.check_shapes(a, b)
        self.save(a, b)
        return self.xp.maximum(a, b)

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a, b = self.saved
        share_a = ((a > b) + 0.5 * (a == b)).astype(gy.dtype, copy=False)  # 1 where a wins, 0.5 on ties, 0 where b wins
        return sum_to(gy * share_a, a.shape), sum_to(gy * (1.0 - share_a), b.shape)


class Minimum(BinaryFunction):
    """y = min(a, b) elementwise; the gradient goes to the smaller input (split evenly on ties)."""

    def forward(self, a: Any, b: Any) -> Any:
        self.check_shapes(a, b)
        self.save(a, b)
        return self.xp.minimum(a, b)

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a, b = self.saved
        share_a = ((a < b) + 0.5 * (a == b)).astype(gy.dtype, copy=False)
        return sum_to(gy * share_a, a.shape), sum_to(gy * (1.0 - share_a), b.shape)


class Neg(Function):
    """y = -x;  dL/dx = -gy."""

    def forward(self, x: Any) -> Any:
        return -x

    def backward(self, gy: Any) -> Any:
        return -gy


class Pow(Function):
    """y = x ** c for a constant exponent c;  dL/dx = gy * c * x ** (c - 1)  (0 when c = 0, even at x = 0)."""

    def __init__(self, exponent: float) -> None:
        if not isinstance(exponent, int | float):
            raise TypeError(f"pow takes a constant number as exponent, not {type(exponent).__name__}")
        self.exponent = exponent

    def forward(self, x: Any) -> Any:
        self.save(x)
        return x**self.exponent

    def backward(self, gy: Any) -> Any:
        (x,) = self.saved
        c = self.exponent
        if c == 0:
            return self.xp.zeros_like(gy)  # x ** -1 at x = 0 would turn 0 * inf into nan
        return gy * c * x ** (c - 1)


def add(a: Any, b: Any) -> Any:
    return Add()(a, b)


def sub(a: Any, b: Any) -> Any:
    return Sub()(a, b)


def mul(a: Any, b: Any) -> Any:
    return Mul()(a, b)


def div(a: Any, b: Any) -> Any:
    return Div()(a, b)


def maximum(a: Any, b: Any) -> Any:
    return Maximum()(a, b)


def minimum(a: Any, b: Any) -> Any:
    return Minimum()(a, b)


def neg(x: Any) -> Any:
    return Neg()(x)


def pow(x: Any, exponent: float) -> Any:  # noqa: A001 - mirrors the operator's name
    return Pow(exponent)(x)
