"""``cupy.random`` of the simulated CuPy: seeded generators without a state to save (as on a GPU).

CuPy's generators keep their state in GPU memory and cannot export it; here the bit generators
simply have no ``state``. Streams come from NumPy's Philox, so they differ from a real GPU's.
"""

from __future__ import annotations

from typing import Any

import numpy as _np


class BitGenerator:
    def __init__(self, seed: int | None = None) -> None:
        self._numpy = _np.random.Generator(_np.random.Philox(seed))


class Philox4x3210(BitGenerator):
    pass


class XORWOW(BitGenerator):
    pass


class MRG32k3a(BitGenerator):
    pass


def _dtype(dtype: Any) -> _np.dtype:
    dtype = _np.dtype(dtype)
    if dtype not in (_np.float32, _np.float64):
        raise TypeError(f"simulated CuPy: random floats come in float32 or float64, not {dtype}")
    return dtype


class Generator:
    """CuPy's ``Generator`` API: ``random``, ``standard_normal``, ``uniform``, ``integers`` (and no ``normal``)."""

    def __init__(self, bit_generator: BitGenerator) -> None:
        self.bit_generator = bit_generator
        self._g = bit_generator._numpy

    def random(self, size: Any = None, dtype: Any = _np.float64, out: Any = None) -> Any:
        from . import ndarray

        return ndarray(_np.asarray(self._g.random(size, dtype=_dtype(dtype))))

    def standard_normal(self, size: Any = None, dtype: Any = _np.float64, out: Any = None) -> Any:
        from . import ndarray

        return ndarray(_np.asarray(self._g.standard_normal(size, dtype=_dtype(dtype))))

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None, dtype: Any = _np.float64) -> Any:
        from . import ndarray

        values = self._g.random(size, dtype=_dtype(dtype))
        return ndarray(_np.asarray(values * (high - low) + low).astype(dtype, copy=False))

    def integers(self, low: int, high: int | None = None, size: Any = None, dtype: Any = _np.int64,
                 endpoint: bool = False) -> Any:
        from . import ndarray

        return ndarray(_np.asarray(self._g.integers(low, high, size, dtype=dtype, endpoint=endpoint)))


def default_rng(seed: int | None = None) -> Generator:
    return Generator(XORWOW(seed))
