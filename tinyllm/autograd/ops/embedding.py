"""Embedding lookup: rows of a weight matrix gathered by integer ids.

    y[..., :] = weight[ids[...], :]
    dL/dweight[v] = sum of gy[...] over every position where ids[...] == v

A token that appears several times in the batch collects the gradient of
every appearance, hence the backend's ``scatter_add`` (a plain indexed
assignment would keep only one of them).
"""

from __future__ import annotations

from typing import Any

from ...backends import get_backend
from ..function import Function
from .indexing import _raw_index


def first_out_of_range(ids: Any, n: int) -> int | None:
    """The first id outside 0..n-1 (in row-major order), or None when all are valid.

    The check must happen: on a GPU an out-of-range row index is not an error, CuPy wraps it around and
    reads another row silently. It reads one boolean back from the device (one synchronisation); the
    offending id is looked up only when there is one.
    """
    if not ids.size:
        return None
    outside = (ids < 0) | (ids >= n)
    if not outside.any():
        return None
    return int(ids.reshape(-1)[outside.reshape(-1).argmax()])


class Embedding(Function):
    def __init__(self, ids: Any) -> None:
        self.ids = _raw_index(ids)

    def forward(self, weight: Any) -> Any:
        ids = self.ids
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding ids must be integers, not {ids.dtype}")
        n_rows = weight.shape[0]
        bad = first_out_of_range(ids, n_rows)
        if bad is not None:
            raise IndexError(f"embedding: id {bad} is out of range for a table of {n_rows} rows (valid: 0..{n_rows - 1})")
        self.weight_shape = weight.shape
        self.dtype = weight.dtype
        return weight[ids]  # (*ids.shape, dim)

    def backward(self, gy: Any) -> Any:
        xp = self.xp
        rows = gy.reshape((self.ids.size,) + self.weight_shape[1:])  # (n_ids, dim); not -1: dim may be 0
        kernels = get_backend().kernels  # on CuPy: the same sums in a fixed order (atomic adds vary run to run)
        if kernels is not None and len(self.weight_shape) == 2 and self.dtype.itemsize <= 4:
            # float32, and 16-bit tables too: summed in float32 (an id may repeat thousands of times), rounded once
            grad = xp.zeros(self.weight_shape, dtype=xp.float32)  # (vocab, dim)
            kernels.scatter_add_rows(grad, self.ids.reshape(-1), rows.astype(xp.float32, copy=False))
            return grad.astype(self.dtype, copy=False)
        grad = xp.zeros(self.weight_shape, dtype=self.dtype)  # (vocab, dim)
        get_backend().scatter_add(grad, self.ids.reshape(-1), rows)
        return grad


def embedding(ids: Any, weight: Any) -> Any:
    """Look up rows of ``weight`` (num_embeddings, dim) for integer ``ids`` of any shape."""
    return Embedding(ids)(weight)
