"""``QuantizedWeight``: a (out_features, in_features) matrix kept in a few bits, used a block of rows at a time.

A quantized weight never becomes one float32 matrix. Its one product, ``matmul(x) = x @ W^T``,
walks the output rows in blocks of about ``block_elements`` weights (2^20: 4 MiB of float32,
which stays in the CPU's caches, and large enough that NumPy's and BLAS's per-call overhead
stays small; measured on SmolLM2) and turns only that block into floats:

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
  matrix product, one per group: x's group (N, gs) times the block's q for that group (gs, n).

``small_batch`` is the largest number of rows that takes the second way (the crossover, measured
on a (1536, 576) weight, lies between 16 and 32 rows). Both give the same numbers up to float
rounding (tests/test_quant.py compares them).

**Memory layout.** A weight is built from, and saved as, llama.cpp's row-major arrays (one row
per output, its groups in order), but kept in memory input-major: the transpose, with the
output index last (``qweight_t[k, o]``, ``scales_t[g, o]``). A block of output rows is then a
slice of the last axis, and each group's q for the block is a (gs, n) matrix with long
contiguous rows, which BLAS streams through as one matrix-vector product per group. Row-major,
the same products run over rows of only gs values, which BLAS runs about 3x slower (the per-group
products of SmolLM2's output projection for one token: 7.4 ms against 2.0 ms). (llama.cpp repacks
its blocks for its CPU kernels in the same spirit.) The transpose is made once, when the
weight is built; ``arrays()`` gives the row-major form back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import get_backend


class QuantizedWeight:
    """Base class of ``Int8Weight`` and ``Q4Weight``: shapes, bytes, and the blocked product.

    Subclasses store their arrays (input-major, see the module docstring) and define

    - ``arrays()``: the arrays by name, row-major (what a checkpoint saves);
    - ``held_arrays()``: the arrays as kept in memory (what ``nbytes`` counts);
    - ``dequantize_rows(rows, dtype)``: float rows ``W[rows]`` (rows: a slice or an index array);
    - ``_matmul_small(prepared, start, stop)``, and ``_prepare_small(x)`` if x's groups
      (G, N, gs) are not all it needs: the few-rows product.

    ``shape`` is (out_features, in_features) and ``dtype`` the float type the weight computes in
    (float32), so code that only asks a weight for its shape or dtype (``Transformer.new_cache``)
    works on quantized weights too.
    """

    scheme: str = "base"
    dtype = np.dtype(np.float32)
    block_elements: int = 1 << 20  # weights converted to float at a time (see the module docstring)
    small_batch: int = 16  # x with at most this many rows takes the "scale outside" path

    def __init__(self, shape: tuple[int, int], group_size: int) -> None:
        out_features, in_features = (int(n) for n in shape)
        if group_size <= 0 or in_features % group_size:
            raise ValueError(
                f"group_size={group_size} must divide in_features={in_features} (each row is cut into whole groups); "
                f"choose a divisor such as 32 or 64, or, for int8, group_size=None (one scale per output row)"
            )
        self.shape = (out_features, in_features)
        self.group_size = int(group_size)
        self.n_groups = in_features // group_size

    # -- what subclasses provide ----------------------------------------------
    def arrays(self) -> dict[str, Any]:
        """Name -> backend array of everything stored, in the layout a checkpoint saves."""
        raise NotImplementedError

    def held_arrays(self) -> list[Any]:
        """The arrays as kept in memory (input-major)."""
        raise NotImplementedError

    def dequantize_rows(self, rows: Any, dtype: Any = np.float32) -> Any:
        raise NotImplementedError

    def _prepare_small(self, x: Any) -> Any:
        """x (N, in) cut into its groups, group-major: (G, N, gs)."""
        x_groups = x.reshape(x.shape[0], self.n_groups, self.group_size)  # (N, G, gs)
        return get_backend().xp.ascontiguousarray(x_groups.transpose(1, 0, 2))

    def _matmul_small(self, prepared: Any, start: int, stop: int) -> Any:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes held in memory: the integers plus the scales (and minimums)."""
        return int(sum(a.nbytes for a in self.held_arrays()))

    def dequantize(self, dtype: Any = np.float32) -> Any:
        """The whole matrix in float (out_features, in_features): for tests and inspection, not for inference."""
        return self.dequantize_rows(slice(0, self.shape[0]), dtype)

    def row_blocks(self) -> list[tuple[int, int]]:
        """(start, stop) of each block of output rows, about ``block_elements`` weights each."""
        out_features, in_features = self.shape
        rows = max(1, self.block_elements // in_features)
        return [(start, min(start + rows, out_features)) for start in range(0, out_features, rows)]

    def matmul(self, x: Any, small_batch: int | None = None) -> Any:
        """``x @ W^T`` for x (N, in_features), block by block; returns (N, out_features) in x's dtype.

        ``small_batch``: largest N that takes the few-rows path (default: the class's ``small_batch``;
        0: dequantize-then-multiply, unless the weight has one group per row).
        """
        xp = get_backend().xp
        n_rows, in_features = x.shape
        if in_features != self.shape[1]:
            raise ValueError(f"input has {in_features} features but the weight {self.shape} expects {self.shape[1]}")
        # With one group per row (int8 per channel) the scale comes out of the whole dot product:
        # the "few rows" path is then a plain matrix product, the better choice for any number of rows.
        small = n_rows <= (self.small_batch if small_batch is None else small_batch) or self.n_groups == 1
        prepared = self._prepare_small(x) if small else None

        def product(start: int, stop: int) -> Any:  # (N, stop - start)
            if small:
                return self._matmul_small(prepared, start, stop)
            return x @ self.dequantize_rows(slice(start, stop), x.dtype).T

        if self.shape[0] * in_features <= self.block_elements:  # one block (most matrices of a small model)
            return product(0, self.shape[0])
        y = xp.empty((n_rows, self.shape[0]), dtype=x.dtype)  # (N, out)
        for start, stop in self.row_blocks():
            y[:, start:stop] = product(start, stop)
        return y

    def input_grad(self, gy: Any) -> Any:
        """``gy @ W`` for gy (N, out_features): the gradient of ``x @ W^T`` with respect to x, (N, in_features).

        Training a LoRA adapter (or anything before this layer) on a quantized base needs dL/dx;
        the weight itself gets no gradient. As in ``matmul``, W is never whole in float: each
        block of output rows is dequantized and its share of the sum added in::

            dx = sum over blocks r0:r1 of  gy[:, r0:r1] @ W[r0:r1]
        """
        xp = get_backend().xp
        n_rows, out_features = gy.shape
        if out_features != self.shape[0]:
            raise ValueError(f"gradient has {out_features} features but the weight {self.shape} has {self.shape[0]} outputs")
        if self.shape[0] * self.shape[1] <= self.block_elements:  # one block
            return gy @ self.dequantize_rows(slice(0, self.shape[0]), gy.dtype)
        gx = xp.zeros((n_rows, self.shape[1]), dtype=gy.dtype)  # (N, in)
        for start, stop in self.row_blocks():
            gx += gy[:, start:stop] @ self.dequantize_rows(slice(start, stop), gy.dtype)
        return gx

    def describe(self) -> dict[str, Any]:
        """The JSON description a checkpoint stores next to the arrays."""
        return {"scheme": self.scheme, "shape": list(self.shape), "group_size": self.group_size}

    def __repr__(self) -> str:
        out_features, in_features = self.shape
        ratio = self.nbytes / (4 * out_features * in_features)
        return (f"{type(self).__name__}(shape={self.shape}, group_size={self.group_size}, "
                f"{self.nbytes:,} bytes = {ratio:.3f}x float32)")
