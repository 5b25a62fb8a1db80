"""Exercise 5: the backward of RMSNorm.

Over the last axis: r = 1 / sqrt(mean(x^2) + eps), xhat = x * r, y = xhat * w.
Write ``backward``: from gy return (dx, dw). Derive it first (docs/backprop.md#rmsnorm walks
through it as llm.c does for layernorm); dw sums over every leading axis.

Run ``python exercises/05_rms_norm_backward.py``.
The library's answer: tinyllm/nn/fused/rms_norm.py::RMSNormFunction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tinyllm as tl
from tinyllm.autograd import Function, gradcheck

EXERCISE = "RMSNorm"


class RMSNorm(Function):
    def __init__(self, eps: float) -> None:
        self.eps = eps

    def forward(self, x: Any, weight: Any) -> Any:
        r = 1.0 / self.xp.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps)  # (..., 1)
        xhat = x * r  # (..., D)
        self.save(xhat, r, weight)
        return xhat * weight

    def backward(self, gy: Any) -> tuple[Any, Any]:
        xhat, r, weight = self.saved
        # YOUR CODE HERE: replace the two lines below.
        gx = gy * weight * r  # (..., D); misses how r depends on x
        gw = self.xp.zeros_like(weight)  # (D,)
        return gx, gw


def library_solution() -> type[Function]:
    from tinyllm.nn.fused.rms_norm import RMSNormFunction

    return RMSNormFunction


def check(candidate: type[Function]) -> None:
    rng = np.random.default_rng(0)
    for eps in (1e-6, 1e-2):
        x = tl.tensor(rng.standard_normal((2, 3, 5)), requires_grad=True)
        w = tl.tensor(rng.standard_normal(5), requires_grad=True)
        assert gradcheck(lambda x, w, eps=eps: candidate(eps)(x, w), [x, w])


if __name__ == "__main__":
    check(RMSNorm)
    print("exercise 5 passed")
