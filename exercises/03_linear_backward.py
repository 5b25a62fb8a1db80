"""Exercise 3: the backward of a linear layer, y = x W^T + b.

x (..., in), W (out, in) as in PyTorch, b (out,). Write ``backward``: from gy (..., out) return
(dx, dW, db) with the shapes of (x, W, b). Fold the leading axes into N rows first:
x2 (N, in), gy2 (N, out). Use the shapes to guess each product, then check it on paper.

Run ``python exercises/03_linear_backward.py``. Read first: docs/backprop.md#linear-and-batched-matmul.
The library's answer: tinyllm/nn/fused/linear.py::LinearFunction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tinyllm as tl
from tinyllm.autograd import Function, gradcheck

EXERCISE = "Linear"


class Linear(Function):
    def forward(self, x: Any, weight: Any, bias: Any) -> Any:
        self.x_shape = x.shape
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        self.save(x2, weight)
        y = x2 @ weight.T + bias  # (N, out)
        return y.reshape(*x.shape[:-1], weight.shape[0])

    def backward(self, gy: Any) -> tuple[Any, Any, Any]:
        x2, weight = self.saved
        gy2 = gy.reshape(-1, weight.shape[0])  # (N, out)  # noqa: F841 (you will use it)
        # YOUR CODE HERE: replace the three zero arrays.
        gx = self.xp.zeros(self.x_shape)  # (..., in)
        gw = self.xp.zeros(weight.shape)  # (out, in)
        gb = self.xp.zeros(weight.shape[0])  # (out,)
        return gx, gw, gb


def library_solution() -> type[Function]:
    from tinyllm.nn.fused.linear import LinearFunction

    return LinearFunction


def check(candidate: type[Function]) -> None:
    rng = np.random.default_rng(0)
    for x_shape in [(4, 3), (2, 3, 3)]:
        inputs = [tl.tensor(rng.standard_normal(s), requires_grad=True) for s in (x_shape, (5, 3), (5,))]
        assert gradcheck(lambda x, w, b: candidate()(x, w, b), inputs)


if __name__ == "__main__":
    check(Linear)
    print("exercise 3 passed")
