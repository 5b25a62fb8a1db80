"""Inverted dropout: zero each element with probability p, scale the survivors by 1 / (1 - p).

    y = x * mask / (1 - p),  mask ~ Bernoulli(1 - p)
    dL/dx = gy * mask / (1 - p)

The scaling keeps the expected value of y equal to x, so at evaluation time
dropout is simply the identity. The mask comes from the backend's seeded RNG.
"""

from __future__ import annotations

from typing import Any

from ...backends import get_backend
from ..function import Function


class Dropout(Function):
    def __init__(self, p: float) -> None:
        self.p = p

    def forward(self, x: Any) -> Any:
        keep = get_backend().rng.random(x.shape, dtype=self.xp.float32) >= self.p
        scaled_mask = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        self.save(scaled_mask)
        return x * scaled_mask

    def backward(self, gy: Any) -> Any:
        (scaled_mask,) = self.saved
        return gy * scaled_mask


def dropout(x: Any, p: float = 0.5, training: bool = True) -> Any:
    """Dropout when ``training`` and p > 0; otherwise ``x`` unchanged."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be between 0 and 1, got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return Dropout(p)(x)
