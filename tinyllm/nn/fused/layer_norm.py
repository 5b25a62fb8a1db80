"""LayerNorm as one op (Ba et al. 2016), the normalisation of GPT-2.

Over the last axis (D features), with mu = mean(x), r = 1 / sqrt(var(x) + eps):

    xhat = (x - mu) * r
    y    = xhat * w + b

Backward, with g = dy * w:

    dw = sum over rows of dy * xhat
    db = sum over rows of dy
    dx = r * (g - mean(g) - xhat * mean(g * xhat))

Read the plain version first: ``tinyllm.nn.reference.layer_norm``; RMSNorm's derivation in
docs/backprop.md#rmsnorm carries over with the mean subtracted (the extra -mean(g) term).
"""

from __future__ import annotations

from typing import Any

from ...autograd.function import Function


class LayerNormFunction(Function):
    def __init__(self, eps: float) -> None:
        self.eps = eps

    def forward(self, x: Any, weight: Any, bias: Any) -> Any:
        xp = self.xp
        if x.shape[-1:] != weight.shape or weight.shape != bias.shape:
            raise ValueError(
                f"layer_norm: weight {weight.shape} and bias {bias.shape} must match the last axis of {x.shape}"
            )
        centered = x - x.mean(axis=-1, keepdims=True)
        r = (1.0 / xp.sqrt((centered * centered).mean(axis=-1, keepdims=True) + self.eps)).astype(x.dtype, copy=False)
        xhat = centered * r  # (..., D)
        self.save(xhat, r, weight)
        return xhat * weight + bias

    def backward(self, gy: Any) -> tuple[Any, Any, Any]:
        xhat, r, weight = self.saved
        lead = tuple(range(gy.ndim - 1))
        gw = (gy * xhat).sum(axis=lead)
        gb = gy.sum(axis=lead)
        g = gy * weight
        gx = r * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
        return gx, gw, gb


def layer_norm(x: Any, weight: Any, bias: Any, eps: float = 1e-5) -> Any:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last axis."""
    return LayerNormFunction(eps)(x, weight, bias)
