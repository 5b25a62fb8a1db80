"""Gradient clipping by global norm, as ``torch.nn.utils.clip_grad_norm_``."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..autograd import Tensor
from ..backends import get_backend


def clip_grad_norm_(params: Iterable[Tensor], max_norm: float, eps: float = 1e-6) -> float:
    """Scale all gradients in place so their joint L2 norm is at most ``max_norm``; return the norm before.

    The norm is over every gradient together: sqrt(sum over params of sum(g^2)).
    A non-finite norm is returned as is (the caller decides to skip the step), and nothing is scaled.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    kernels = get_backend().kernels  # on CuPy: each loop below in one CUDA launch over every gradient
    fused = kernels is not None and kernels.usable(*grads)
    if fused:
        squares = kernels.sum_of_squares_many(grads)  # the same float64 sum, the same bits every run
    else:  # each sum stays on the device until the one float(): a single GPU-to-host wait, not one per parameter
        squares = sum((g.astype("float64", copy=False) ** 2).sum() for g in grads)
    total = math.sqrt(float(squares))
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + eps)
        if fused:
            kernels.scale_many(grads, scale)
        else:
            for g in grads:
                g *= scale
    return total
