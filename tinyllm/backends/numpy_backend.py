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
    pad_small_batches = True  # see ``matmul``; benchmarks/decode_batch.py turns it off to compare

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

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b``, with a few rows of ``a`` padded with zero rows up to a multiple of 4.

        Decoding multiplies a handful of rows (one per sequence) by every weight. With the OpenBLAS
        that NumPy ships, rows beyond a multiple of 4 cost as much as a whole group of 4 or more
        (its single-precision kernels appear to work on 4 rows at a time): with one thread, an
        input-major (1536, 576) weight read from memory took 162 / 372 / 501 / 313 us for
        1 / 2 / 3 / 4 rows, and 2 or 3 rows padded to 4 took 320 / 317 us
        (``python benchmarks/decode_batch.py --products``). So 2, 3, 5, 6, 7, 9 ... 15 rows are
        padded; one row (a matrix-vector product) and 16 or more are left as they are.
        """
        rows = a.shape[0]
        if not self.pad_small_batches or a.ndim != 2 or rows < 2 or rows >= 16 or rows % 4 == 0:
            return a @ b
        padded = np.zeros((rows + (-rows) % 4, a.shape[1]), dtype=a.dtype)  # (rows rounded up to 4, k)
        padded[:rows] = a
        return (padded @ b)[:rows]

    def device_name(self) -> str:
        return "cpu"
