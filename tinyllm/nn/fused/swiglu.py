"""The SwiGLU gate as one op (Shazeer 2020): y = silu(a) * b, with silu(a) = a * sigmoid(a).

With s = sigmoid(a):

    y  = a * s * b
    da = dy * b * s * (1 + a * (1 - s))     (d/da of a*s is s + a*s*(1-s))
    db = dy * a * s
"""

from __future__ import annotations

from typing import Any

from ...autograd.function import Function


class SwiGLUFunction(Function):
    def forward(self, a: Any, b: Any) -> Any:
        if a.shape != b.shape:
            raise ValueError(f"swiglu: gate {a.shape} and up projection {b.shape} must have the same shape")
        xp = self.xp
        s = 1.0 / (1.0 + xp.exp(-a))  # sigmoid(a)
        silu = a * s
        self.save(a, b, s)
        return silu * b

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a, b, s = self.saved
        silu = a * s
        gb = gy * silu
        ga = gy * b * (s + silu * (1.0 - s))
        return ga, gb


def swiglu(a: Any, b: Any) -> Any:
    """``silu(a) * b``, the gated activation of LLaMA's feed-forward block."""
    return SwiGLUFunction()(a, b)
