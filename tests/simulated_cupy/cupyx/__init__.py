"""``cupyx`` of the simulated CuPy (see ``cupy/__init__.py``): ``scatter_add`` and ``scipy.special.erf``."""

from __future__ import annotations

from typing import Any

import cupy
import numpy as _np

_SCATTER_DTYPES = (_np.int32, _np.float16, _np.float32, _np.float64, _np.uint32, _np.uint64)


def scatter_add(a: Any, slices: Any, value: Any) -> None:
    """``a[slices] += value`` with repeated indices adding up (NumPy's ``np.add.at``); CuPy's dtypes only."""
    if not isinstance(a, cupy.ndarray):
        raise TypeError(f"scatter_add needs a cupy.ndarray, not {type(a)}")
    value = value._a if isinstance(value, cupy.ndarray) else _np.asarray(value)
    if a.dtype.type not in _SCATTER_DTYPES:
        raise TypeError("scatter_add only supports int32, float16, float32, float64, uint32, uint64, as data type")
    _np.add.at(a._a, cupy._unwrap_index(slices), value.astype(a.dtype, copy=False))


from . import scipy  # noqa: E402,F401
