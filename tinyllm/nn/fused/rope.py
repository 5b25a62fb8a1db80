"""Rotary position embedding (Su et al. 2021) as one op.

Each pair of features (x1, x2) of a head is rotated by the angle pos * freq:

    y1 = x1 cos - x2 sin
    y2 = x2 cos + x1 sin

The backward rotates the gradient back by the opposite angle:

    dx1 =  dy1 cos + dy2 sin
    dx2 = -dy1 sin + dy2 cos

Pairing convention: "half-split", as Hugging Face transformers' LLaMA: for a head of
D features, feature i is paired with feature i + D/2 (x1 = x[..., :D/2],
x2 = x[..., D/2:]). Meta's original LLaMA and GGUF files use the "interleaved"
convention, pairing features 2i and 2i+1; see ``RotaryEmbedding`` for the
permutation that converts weights from one to the other.

Read the plain version first: ``tinyllm.nn.reference.rope`` (slice, rotate, concatenate).
The backward and why the rotated score depends only on m - n: docs/backprop.md#rope. The
fused op writes both halves into one output buffer instead of two products and a concatenate,
and saves nothing but the cos/sin tables.
"""

from __future__ import annotations

from typing import Any

from ...autograd.function import Function
from ...backends import get_backend


class ApplyRope(Function):
    """Rotate ``x`` (B, n_heads, T, head_dim) with tables ``cos``/``sin`` (T, head_dim/2), or (B, 1, T, head_dim/2)
    when each row sits at its own positions (a batch of sequences of different lengths)."""

    def __init__(self, cos: Any, sin: Any) -> None:
        self.cos = cos  # (T, D/2), constants: no gradient
        self.sin = sin

    def forward(self, x: Any) -> Any:
        half = x.shape[-1] // 2
        per_row = (x.shape[0], 1, x.shape[-2], half)  # one table per row: rows at different positions
        if x.shape[-1] % 2 or self.cos.shape not in ((x.shape[-2], half), per_row):
            raise ValueError(
                f"apply_rope: x {x.shape} (..., T, head_dim) needs an even head_dim and cos/sin tables of shape "
                f"(T, head_dim/2) = {(x.shape[-2], half)} or, per row, {per_row}; got {self.cos.shape}"
            )
        kernels = get_backend().kernels  # on CuPy: the lines below in one CUDA launch (float32, float16 or bfloat16 x)
        if kernels is not None and kernels.usable(x, half=True) and kernels.usable(self.cos, self.sin, half=True):
            return kernels.rope(x, self.cos, self.sin)  # the tables as they are: the kernel computes in float
        cos, sin = self.cos.astype(x.dtype, copy=False), self.sin.astype(x.dtype, copy=False)
        x1, x2 = x[..., :half], x[..., half:]  # (..., T, D/2) each
        y = self.xp.empty_like(x)
        y[..., :half] = x1 * cos - x2 * sin
        y[..., half:] = x2 * cos + x1 * sin
        return y

    def backward(self, gy: Any) -> Any:
        half = gy.shape[-1] // 2
        kernels = get_backend().kernels
        if kernels is not None and kernels.usable(gy, half=True) and kernels.usable(self.cos, self.sin, half=True):
            return kernels.rope(gy, self.cos, self.sin, inverse=True)
        cos, sin = self.cos.astype(gy.dtype, copy=False), self.sin.astype(gy.dtype, copy=False)
        g1, g2 = gy[..., :half], gy[..., half:]
        gx = self.xp.empty_like(gy)
        gx[..., :half] = g1 * cos + g2 * sin
        gx[..., half:] = g2 * cos - g1 * sin
        return gx


def apply_rope(x: Any, cos: Any, sin: Any) -> Any:
    """Rotate the features of ``x`` (..., T, head_dim) by position-dependent angles (half-split pairs).

    ``cos``/``sin`` are raw arrays (T, head_dim/2), e.g. ``RotaryEmbedding.tables(start, T)``.
    """
    return ApplyRope(cos, sin)(x)
