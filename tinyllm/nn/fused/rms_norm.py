"""RMSNorm as one op (Zhang & Sennrich 2019), the normalisation of LLaMA.

Over the last axis (D features), with r = 1 / sqrt(mean(x^2) + eps) per row:

    y = x * r * w

Backward, with xhat = x * r and g = dy * w:

    dw = sum over rows of dy * xhat
    dx = r * (g - xhat * mean(g * xhat))

(the second term is the part of g along xhat, which normalisation removes).

Half precision (float16, bfloat16; tinyllm.amp): both passes compute in float32 and return the input's
dtype, as PyTorch's autocast does for norms: in float16, x^2 overflows once |x| > 256 (the largest
float16 is 65504), and the loss-scaled gradients of the backward are larger still.

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
        kernels = get_backend().kernels  # on CuPy: this method's math in one CUDA launch (float32, float16 or bfloat16)
        if kernels is not None and kernels.usable(x, weight, half=True):
            y, xhat, r = kernels.rms_norm_forward(x, weight, self.eps)
            self.save(xhat, r, weight)
            return y
        dtype = x.dtype
        x = x.astype(xp.float32) if dtype.itemsize < 4 else x  # half precision: the statistics in float32
        r = 1.0 / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps)  # (..., 1)
        r = r.astype(x.dtype, copy=False)
        xhat = x * r  # (..., D)
        self.save(xhat.astype(dtype, copy=False), r, weight)
        return (xhat * weight).astype(dtype, copy=False)

    def backward(self, gy: Any) -> tuple[Any, Any]:
        xhat, r, weight = self.saved
        kernels = get_backend().kernels
        if kernels is not None and kernels.usable(gy, xhat, weight, half=True) and kernels.usable(r):  # every array
            return kernels.rms_norm_backward(gy, xhat, r, weight)
        dtype = gy.dtype
        if dtype.itemsize < 4:  # half precision: in float32, back to the input's dtype at the end
            gy, xhat, weight = (a.astype(self.xp.float32) for a in (gy, xhat, weight))
        lead = tuple(range(gy.ndim - 1))
        need_x, need_w = self.needs_input_grad or (True, True)
        gw = (gy * xhat).sum(axis=lead).astype(dtype, copy=False) if need_w else None  # (D,); none for a frozen norm
        if not need_x:
            return None, gw
        g = gy * weight  # (..., D)
        gx = r * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))
        return gx.astype(dtype, copy=False), gw


def rms_norm(x: Any, weight: Any, eps: float = 1e-6) -> Any:
    """``x / sqrt(mean(x^2, axis=-1) + eps) * weight``.

    >>> import tinyllm as tl
    >>> rms_norm(tl.tensor([[3.0, 4.0]]), tl.tensor([1.0, 1.0]), eps=0.0).numpy().astype("float64").round(4).tolist()
    [[0.8485, 1.1314]]
    """
    return RMSNormFunction(eps)(x, weight)
