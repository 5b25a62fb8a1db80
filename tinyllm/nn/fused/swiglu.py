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
        # sigmoid(a) = 1 / (1 + exp(-a)) = (1 + tanh(a/2)) / 2, built in place in one buffer. The tanh
        # form never overflows (exp(-a) does for a < -88 in float32), as the unfused Sigmoid/Silu ops.
        s = a * 0.5
        xp.tanh(s, out=s)
        s += 1.0
        s *= 0.5
        self.save(a, b, s)
        y = a * s  # silu(a)
        y *= b
        return y

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a, b, s = self.saved
        need_a, need_b = self.needs_input_grad or (True, True)
        silu = a * s
        gb = gy * silu if need_b else None
        if not need_a:
            return None, gb
        # ga = gy * b * (s + silu * (1 - s)), built in place in the silu buffer
        silu *= 1.0 - s
        silu += s
        silu *= b
        silu *= gy
        return silu, gb


def swiglu(a: Any, b: Any) -> Any:
    """``silu(a) * b``, the gated activation of LLaMA's feed-forward block."""
    return SwiGLUFunction()(a, b)
