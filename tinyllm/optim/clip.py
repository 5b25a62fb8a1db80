"""Gradient clipping by global norm, as ``torch.nn.utils.clip_grad_norm_``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..autograd import Tensor
from ..backends import get_backend


def clip_grad_norm_(params: Iterable[Tensor], max_norm: float, eps: float = 1e-6) -> float:
    """Scale all gradients in place so their joint L2 norm is at most ``max_norm``; return the norm before.

    The norm is over every gradient together: sqrt(sum over params of sum(g^2)).
    A non-finite norm is returned as is (the caller decides to skip the step), and nothing is scaled.
    (``train_step`` uses the two halves below, so that the norm is read back with the step's other values.)
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = math.sqrt(float(squared_grad_norm(grads)))  # the one read: the GPU finishes the sum first
    clip_to_norm_(grads, total, max_norm, eps)
    return total


def squared_grad_norm(grads: list[Any]) -> Any:
    """sum over every gradient of sum(g^2), in float64: a 0-d array left on the device (nothing is read)."""
    kernels = get_backend().kernels  # on CuPy: every gradient's sum in one CUDA launch
    if kernels is not None and grads and kernels.usable(*grads):
        return kernels.sum_of_squares_many(grads)  # the same float64 sum, the same bits every run
    xp = get_backend().xp
    return sum((g.astype("float64", copy=False) ** 2).sum() for g in grads) if grads else xp.zeros((), xp.float64)


def clip_to_norm_(grads: list[Any], total: float, max_norm: float, eps: float = 1e-6) -> None:
    """Given their joint norm ``total`` (read back), scale the gradients in place by max_norm / (total + eps)
    when it is over ``max_norm``; a non-finite ``total`` scales nothing."""
    if not (math.isfinite(total) and total > max_norm):
        return
    scale = max_norm / (total + eps)
    kernels = get_backend().kernels  # on CuPy: every gradient in one CUDA launch
    if kernels is not None and kernels.usable(*grads):
        kernels.scale_many(grads, scale)
        return
    for g in grads:
        g *= scale


def clip_by_squared_norm_(grads: list[Any], squares: Any, max_norm: float, eps: float = 1e-6) -> None:
    """``clip_to_norm_``'s scaling decided on the device from the squared norm ``squares`` (a 0-d float64 array
    there), so nothing is read back: max_norm / (sqrt(squares) + eps) when that norm is finite and over
    ``max_norm``, else nothing (the same factor, the same bits as the host's)."""
    if not grads or not math.isfinite(max_norm):
        return
    kernels = get_backend().kernels  # on CuPy: every gradient in one CUDA launch, which reads squares itself
    if kernels is not None and kernels.usable(*grads):
        kernels.clip_many(grads, squares, max_norm, eps)
        return
    xp = get_backend().xp
    norm = xp.sqrt(squares)
    factor = xp.where((norm > max_norm) & xp.isfinite(norm), max_norm / (norm + eps), 1.0)  # 0-d, float64
    for g in grads:
        g *= factor.astype(g.dtype)
