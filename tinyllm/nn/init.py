"""Weight initialisation, drawn from the backend's seeded generator (in place)."""

from __future__ import annotations

from ..autograd import Tensor
from ..backends import get_backend


def normal_(param: Tensor, std: float = 0.02, mean: float = 0.0) -> Tensor:
    """Fill ``param`` with N(mean, std^2) samples, in place; returns it."""
    rng = get_backend().rng
    param.data[...] = rng.standard_normal(param.shape, dtype=param.data.dtype) * std + mean
    return param


def zeros_(param: Tensor) -> Tensor:
    param.data[...] = 0
    return param


def ones_(param: Tensor) -> Tensor:
    param.data[...] = 1
    return param
