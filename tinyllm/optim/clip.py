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
    (``queue_train_step`` uses the two halves below and reads the norm later, with the step's other values.)
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    squares = squared_grad_norm(grads)
    clip_by_squared_norm_(grads, squares, max_norm, eps)
    return math.sqrt(float(squares))  # the one read: the GPU finishes the sum (and the scaling) first


def squared_grad_norm(grads: list[Any]) -> Any:
    """sum over every gradient of sum(g^2), in float64: a 0-d array left on the device (nothing is read)."""
    kernels = get_backend().kernels  # on CuPy: every gradient's sum in one CUDA launch
    if kernels is not None and grads and kernels.usable(*grads):
        return kernels.sum_of_squares_many(grads)  # the same float64 sum, the same bits every run
    xp = get_backend().xp
    return sum((g.astype("float64", copy=False) ** 2).sum() for g in grads) if grads else xp.zeros((), xp.float64)


def clip_by_squared_norm_(grads: list[Any], squares: Any, max_norm: float, eps: float = 1e-6) -> None:
    """Scale the gradients in place by max_norm / (norm + eps), norm = sqrt(squares) (``squared_grad_norm``),
    when that norm is finite and over ``max_norm``; else leave them. The fused kernel decides on the device
    (it computes the factor as the code below does: the same bits), so nothing is read back; the array code
    reads the norm (free on NumPy, one wait on CuPy without kernels)."""
    if not grads or not math.isfinite(max_norm):
        return
    kernels = get_backend().kernels  # on CuPy: every gradient in one CUDA launch, which reads squares itself
    if kernels is not None and kernels.usable(*grads):
        kernels.clip_many(grads, squares, max_norm, eps)
        return
    total = math.sqrt(float(squares))
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + eps)
        for g in grads:
            g *= scale
