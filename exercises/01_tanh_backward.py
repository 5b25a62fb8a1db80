"""Exercise 1: the backward of tanh.

y = tanh(x). Write ``backward``: given gy = dL/dy (same shape as y), return dL/dx.
Hint: d tanh(x)/dx = 1 - tanh(x)^2, and forward saved y = tanh(x), so x is not needed.

Run ``python exercises/01_tanh_backward.py``: it says "passed" or shows what is wrong.
Read first: tinyllm/autograd/function.py (what forward, backward and save are).
The library's own answer: tinyllm/autograd/ops/unary.py::Tanh (look after you are done).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tinyllm as tl
from tinyllm.autograd import Function, gradcheck

EXERCISE = "Tanh"  # the name of what you fill in


class Tanh(Function):
    def forward(self, x: Any) -> Any:
        y = self.xp.tanh(x)
        self.save(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        # YOUR CODE HERE: replace the line below with dL/dx.
        return gy


def library_solution() -> type[Function]:
    from tinyllm.autograd.ops import Tanh

    return Tanh


def check(candidate: type[Function]) -> None:
    """Raises AssertionError, with what is wrong, unless ``candidate`` is a correct tanh Function."""
    x = tl.tensor(np.array([[-2.0, -0.5, 0.0], [0.3, 1.0, 3.0]]), requires_grad=True)
    y = candidate()(x)
    np.testing.assert_allclose(y.numpy(), np.tanh(x.numpy()), rtol=1e-12, err_msg="the forward changed")
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 1 - np.tanh(x.numpy()) ** 2, rtol=1e-10, err_msg="dL/dx for L = sum(tanh(x))")
    assert gradcheck(lambda t: candidate()(t), [tl.tensor(np.random.default_rng(0).standard_normal((3, 4)),
                                                          requires_grad=True)])


if __name__ == "__main__":
    check(Tanh)
    print("exercise 1 passed")
