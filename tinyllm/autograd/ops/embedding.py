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


class Embedding(Function):
    def __init__(self, ids: Any) -> None:
        self.ids = _raw_index(ids)

    def forward(self, weight: Any) -> Any:
        ids = self.ids
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding ids must be integers, not {ids.dtype}")
        n_rows = weight.shape[0]
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n_rows):
            bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
            raise IndexError(f"embedding: id {bad} is out of range for a table of {n_rows} rows (valid: 0..{n_rows - 1})")
        self.weight_shape = weight.shape
        self.dtype = weight.dtype
        return weight[ids]  # (*ids.shape, dim)

    def backward(self, gy: Any) -> Any:
        grad = self.xp.zeros(self.weight_shape, dtype=self.dtype)  # (vocab, dim)
        rows = gy.reshape((self.ids.size,) + self.weight_shape[1:])  # (n_ids, dim); not -1: dim may be 0
        get_backend().scatter_add(grad, self.ids.reshape(-1), rows)
        return grad


def embedding(ids: Any, weight: Any) -> Any:
    """Look up rows of ``weight`` (num_embeddings, dim) for integer ``ids`` of any shape."""
    return Embedding(ids)(weight)
