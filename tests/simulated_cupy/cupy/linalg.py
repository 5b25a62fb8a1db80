"""``cupy.linalg`` of the simulated CuPy: NumPy's, with device arrays in and out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as _np

_NAMES = set(json.loads((Path(__file__).with_name("names.json")).read_text())["linalg"])


def __getattr__(name: str) -> Any:
    if name not in _NAMES or not hasattr(_np.linalg, name):
        raise AttributeError(f"module 'cupy.linalg' has no attribute {name!r}")
    from . import _call

    function = getattr(_np.linalg, name)
    return lambda *args, **kwargs: _call(function, *args, **kwargs)
