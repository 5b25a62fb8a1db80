"""The default backend: NumPy on the CPU."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Backend

# NumPy has no erf; math.erf is exact to double precision. Only the exact GELU
# uses it (the tanh-approximate GELU, the usual choice, does not).
_erf = np.vectorize(math.erf, otypes=[np.float64])


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def get_rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def to_host(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def scatter_add(self, target: np.ndarray, indices: Any, values: np.ndarray) -> None:
        np.add.at(target, indices, values)

    def erf(self, x: np.ndarray) -> np.ndarray:
        return _erf(x).astype(x.dtype, copy=False)

    def device_name(self) -> str:
        return "cpu"
