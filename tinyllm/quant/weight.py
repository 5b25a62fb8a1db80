"""``QuantizedWeight``: a (out_features, in_features) matrix kept in a few bits, used a block of rows at a time.

A quantized weight never becomes one float32 matrix. Its one product, ``matmul(x) = x @ W^T``,
walks the output rows in blocks of about ``BLOCK_ELEMENTS`` weights (2 MiB of float32, small
enough to stay in the CPU's caches, large enough that NumPy's per-call overhead stays small; 2^17
to 2^21 measured within 10% of each other on SmolLM2) and turns only that block into floats:

    for each block of rows r0:r1
        y[:, r0:r1] = x @ W[r0:r1]^T          with W[r0:r1] built from its integers just now

Both schemes (int8.py, q4.py) cut each row into groups of ``group_size`` consecutive inputs,
and every weight of a group shares one float scale ``d`` (and, for q4, one minimum ``m``):

    W[o, g*gs + k] = d[o, g] * q[o, g, k]  (+ m[o, g])

Two ways to compute the block's product, chosen by how many rows ``x`` has:

- many rows (a prompt, a batch): dequantize the block, ``W_blk = d * q (+ m)``, then one
  float matrix product. The dequantization is paid once for all the rows of ``x``.
- few rows (decoding one token): the scale is the same for the whole group, so it comes out
  of the group's dot product and is applied to one number per group instead of to every
  weight::

      y[n, o] = sum_g d[o, g] * (sum_k x[n, g, k] q[o, g, k])  +  sum_g m[o, g] * (sum_k x[n, g, k])

  The integers are only converted to floats (one cheap pass); the inner sums are a batched
  matrix product, one small product per group.

Both give the same numbers up to float rounding (tests/test_quant.py compares them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import get_backend

BLOCK_ELEMENTS = 1 << 19  # weights converted to float at a time: 512 Ki, 2 MiB of float32
SMALL_BATCH = 8  # x with at most this many rows takes the "scale outside" path (measured crossover: 8-16 rows)


class QuantizedWeight:
    """Base class of ``Int8Weight`` and ``Q4Weight``: shapes, bytes, and the blocked product.

    Subclasses store their arrays and define

    - ``dequantize_rows(rows, dtype)``: float rows ``W[rows]`` (rows: a slice or an index array);
    - ``_prepare_small(x)`` and ``_matmul_small(prepared, start, stop)``: the few-rows product.

    ``shape`` is (out_features, in_features) and ``dtype`` the float type the weight computes in
    (float32), so code that only asks a weight for its shape or dtype (``Transformer.new_cache``)
    works on quantized weights too.
    """

    scheme: str = "base"
    dtype = np.dtype(np.float32)

    def __init__(self, shape: tuple[int, int], group_size: int) -> None:
        out_features, in_features = (int(n) for n in shape)
        if group_size <= 0 or in_features % group_size:
            raise ValueError(
                f"group_size={group_size} must divide in_features={in_features} (each row is cut into whole groups); "
                f"choose a divisor such as 32 or 64, or quantize this layer per channel"
            )
        self.shape = (out_features, in_features)
        self.group_size = int(group_size)
        self.n_groups = in_features // group_size

    # -- what subclasses provide ----------------------------------------------
    def arrays(self) -> dict[str, Any]:
        """Name -> backend array of everything stored (what a checkpoint saves)."""
        raise NotImplementedError

    def dequantize_rows(self, rows: Any, dtype: Any = np.float32) -> Any:
        raise NotImplementedError

    def _prepare_small(self, x: Any) -> Any:
        raise NotImplementedError

    def _matmul_small(self, prepared: Any, start: int, stop: int) -> Any:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes held in memory: the integers plus the scales (and minimums)."""
        return int(sum(a.nbytes for a in self.arrays().values()))

    def dequantize(self, dtype: Any = np.float32) -> Any:
        """The whole matrix in float (out_features, in_features): for tests and inspection, not for inference."""
        return self.dequantize_rows(slice(0, self.shape[0]), dtype)

    def row_blocks(self) -> list[tuple[int, int]]:
        """(start, stop) of each block of output rows, about ``BLOCK_ELEMENTS`` weights each."""
        out_features, in_features = self.shape
        rows = max(1, BLOCK_ELEMENTS // in_features)
        return [(start, min(start + rows, out_features)) for start in range(0, out_features, rows)]

    def matmul(self, x: Any, small_batch: int = SMALL_BATCH) -> Any:
        """``x @ W^T`` for x (N, in_features), block by block; returns (N, out_features) in x's dtype.

        ``small_batch``: largest N that takes the few-rows path (0: dequantize-then-multiply, unless
        the weight has one group per row).
        """
        xp = get_backend().xp
        n_rows, in_features = x.shape
        if in_features != self.shape[1]:
            raise ValueError(f"input has {in_features} features but the weight {self.shape} expects {self.shape[1]}")
        y = xp.empty((n_rows, self.shape[0]), dtype=x.dtype)  # (N, out)
        # With one group per row (int8 per channel) the scale comes out of the whole dot product:
        # the "few rows" path is then a plain matrix product, the better choice for any number of rows.
        small = n_rows <= small_batch or self.n_groups == 1
        prepared = self._prepare_small(x) if small else None
        for start, stop in self.row_blocks():
            if small:
                y[:, start:stop] = self._matmul_small(prepared, start, stop)
            else:
                y[:, start:stop] = x @ self.dequantize_rows(slice(start, stop), x.dtype).T  # (N, rows)
        return y

    def describe(self) -> dict[str, Any]:
        """The JSON description a checkpoint stores next to the arrays."""
        return {"scheme": self.scheme, "shape": list(self.shape), "group_size": self.group_size}

    def __repr__(self) -> str:
        out_features, in_features = self.shape
        ratio = self.nbytes / (4 * out_features * in_features)
        return (f"{type(self).__name__}(shape={self.shape}, group_size={self.group_size}, "
                f"{self.nbytes:,} bytes = {ratio:.3f}x float32)")
