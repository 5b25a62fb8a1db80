"""Weight initialisation, drawn from the backend's seeded generator (in place)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..autograd import Tensor
from ..backends import get_backend

_skip_init = False


@contextlib.contextmanager
def no_init() -> Iterator[None]:
    """Inside this block ``normal_`` leaves parameters as they are (zeros): for models whose
    weights are about to be loaded, so no time goes into random numbers that are overwritten.

    >>> from tinyllm.nn import Linear
    >>> with no_init():
    ...     layer = Linear(2, 2)
    >>> float(abs(layer.weight.data).sum())
    0.0
    """
    global _skip_init
    previous, _skip_init = _skip_init, True
    try:
        yield
    finally:
        _skip_init = previous


def normal_(param: Tensor, std: float = 0.02, mean: float = 0.0) -> Tensor:
    """Fill ``param`` with N(mean, std^2) samples, in place; returns it."""
    if _skip_init:
        return param
    rng = get_backend().rng
    param.data[...] = rng.standard_normal(param.shape, dtype=param.data.dtype) * std + mean
    return param


def zeros_(param: Tensor) -> Tensor:
    param.data[...] = 0
    return param


def ones_(param: Tensor) -> Tensor:
    param.data[...] = 1
    return param
