"""``cupyx.scipy.special.erf`` of the simulated CuPy (elementwise ``math.erf``, in the input's dtype)."""

from __future__ import annotations

import math
from typing import Any

import cupy
import numpy as _np

_erf = _np.vectorize(math.erf, otypes=[_np.float64])


def erf(x: Any) -> Any:
    if not isinstance(x, cupy.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    return cupy.ndarray(_erf(x._a).astype(x.dtype if x.dtype.kind == "f" else _np.float64))
