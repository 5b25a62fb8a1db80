"""RMSNorm as one op (Zhang & Sennrich 2019), the normalisation of LLaMA.

Over the last axis (D features), with r = 1 / sqrt(mean(x^2) + eps) per row:

    y = x * r * w

Backward, with xhat = x * r and g = dy * w:

    dw = sum over rows of dy * xhat
    dx = r * (g - xhat * mean(g * xhat))

(the second term is the part of g along xhat, which normalisation removes).

Read the plain version first: ``tinyllm.nn.reference.rms_norm`` (one line of primitive ops).
The backward is derived in docs/backprop.md#rmsnorm. The fused op saves only xhat and r
(not the four intermediate arrays the primitive ops would) and runs one backward.
"""

from __future__ import annotations

from typing import Any

from ...autograd.function import Function
from ...backends import get_backend


class RMSNormFunction(Function):
    def __init__(self, eps: float) -> None:
        self.eps = eps

    def forward(self, x: Any, weight: Any) -> Any:
        xp = self.xp
        if x.shape[-1:] != weight.shape:
            raise ValueError(f"rms_norm: weight {weight.shape} must match the last axis of the input {x.shape}")
        kernels = get_backend().kernels  # on CuPy: this method's math in two CUDA launches
        if kernels is not None and kernels.usable(x, weight):
            y, xhat, r = kernels.rms_norm_forward(x, weight, self.eps)
            self.save(xhat, r, weight)
            return y
        r = 1.0 / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps)  # (..., 1)
        r = r.astype(x.dtype, copy=False)
        xhat = x * r  # (..., D)
        self.save(xhat, r, weight)
        return xhat * weight

    def backward(self, gy: Any) -> tuple[Any, Any]:
        xhat, r, weight = self.saved
        kernels = get_backend().kernels
        if kernels is not None and kernels.usable(gy, xhat):
            return kernels.rms_norm_backward(gy, xhat, r, weight)
        lead = tuple(range(gy.ndim - 1))
        gw = (gy * xhat).sum(axis=lead)  # (D,)
        g = gy * weight  # (..., D)
        gx = r * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))
        return gx, gw


def rms_norm(x: Any, weight: Any, eps: float = 1e-6) -> Any:
    """``x / sqrt(mean(x^2, axis=-1) + eps) * weight``.

    >>> import tinyllm as tl
    >>> rms_norm(tl.tensor([[3.0, 4.0]]), tl.tensor([1.0, 1.0]), eps=0.0).numpy().astype("float64").round(4).tolist()
    [[0.8485, 1.1314]]
    """
    return RMSNormFunction(eps)(x, weight)
