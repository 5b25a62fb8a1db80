"""The SwiGLU gate as one op (Shazeer 2020): y = silu(a) * b, with silu(a) = a * sigmoid(a).

With s = sigmoid(a):

    y  = a * s * b
    da = dy * b * s * (1 + a * (1 - s))     (d/da of a*s is s + a*s*(1-s))
    db = dy * a * s

Read the plain version first: ``tinyllm.nn.reference.swiglu`` (a * sigmoid(a) * b). The
derivation is in docs/backprop.md#swiglu. The fused op saves only a, b and s, computes
sigmoid through tanh (no overflow), and builds da in place in one buffer.
"""

from __future__ import annotations

from typing import Any

from ...autograd.function import Function
from ...backends import get_backend


class SwiGLUFunction(Function):
    def forward(self, a: Any, b: Any) -> Any:
        if a.shape != b.shape:
            raise ValueError(f"swiglu: gate {a.shape} and up projection {b.shape} must have the same shape")
        xp = self.xp
        kernels = get_backend().kernels  # on CuPy: this method's math in one CUDA launch (float32, float16 or bfloat16)
        if kernels is not None and kernels.usable(a, b, half=True):
            y, s = kernels.swiglu_forward(a, b)
            self.save(a, b, s)
            return y
        # sigmoid(a) = 1 / (1 + exp(-a)) = (1 + tanh(a/2)) / 2, built in place in one buffer. The tanh
        # form never overflows (exp(-a) does for a < -88 in float32), as the unfused Sigmoid/Silu ops.
        s = a * a.dtype.type(0.5)  # a scalar of a's dtype: NumPy would turn an ml_dtypes bfloat16 a * 0.5 into float32
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
        kernels = get_backend().kernels
        if need_a and need_b and kernels is not None and kernels.usable(gy, a, b, s, half=True):
            return kernels.swiglu_backward(gy, a, b, s)  # the same arithmetic in one CUDA kernel
        ga = a * s  # silu(a) for now: the buffer becomes da below, saving one (..., hidden) array
        gb = gy * ga if need_b else None  # db = dy * silu(a)
        if not need_a:
            return None, gb
        # da = dy * b * d silu(a)/da, with d silu(a)/da = s + a s (1 - s), built in place:
        ga *= 1.0 - s  # a s (1 - s)
        ga += s  # s + a s (1 - s)
        ga *= b
        ga *= gy
        return ga, gb


def swiglu(a: Any, b: Any) -> Any:
    """``silu(a) * b``, the gated activation of LLaMA's feed-forward block."""
    return SwiGLUFunction()(a, b)
