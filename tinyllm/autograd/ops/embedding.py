"""Embedding lookup: rows of a weight matrix gathered by integer ids.

    y[..., :] = weight[ids[...], :]
    dL/dweight[v] = sum of gy[...] over every position where ids[...] == v

A token that appears several times in the batch collects the gradient of
every appearance, hence the backend's ``scatter_add`` (a plain indexed
assignment would keep only one of them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...backends import get_backend
from ...backends.deferred import check
from ..function import Function
from .indexing import _raw_index


def outside_range(ids: Any, n: int) -> Any:
    """A boolean array like ``ids``: True where an id is outside 0..n-1.

    One comparison for both ends: a negative integer read as unsigned (the same bits, a view, no copy) is
    larger than any valid id, so ``ids >= n`` as unsigned is ``(ids < 0) | (ids >= n)`` in one pass.
    """
    unsigned = ids.view(f"u{ids.dtype.itemsize}") if ids.dtype.kind == "i" else ids
    return unsigned >= n


def check_ids(ids: Any, n: int, message: Callable[[int], str] | None = None) -> None:
    """The checks of a lookup in a table of ``n`` rows: ``TypeError`` unless the ids are integers;
    ``IndexError(message(first bad id))`` if an id is outside 0..n-1 (``message``: bad id -> text; the
    table's own words when None).

    The range check must happen: on a GPU an out-of-range row index is not an error, CuPy wraps it around and
    reads another row silently. Its answer is one boolean on the device; inside ``train_step`` it waits
    for the step's one read (``tinyllm.backends.deferred``), elsewhere it is read here. The offending id
    is looked up only when there is one.
    """
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding ids must be integers, not {ids.dtype}")
    if not ids.size:
        return
    outside = outside_range(ids, n)

    def error() -> IndexError:  # made only when an id is out of range: it reads that id back
        bad = int(ids.reshape(-1)[outside.reshape(-1).argmax()])
        if message is not None:
            return IndexError(message(bad))
        return IndexError(f"embedding: id {bad} is out of range for a table of {n} rows (valid: 0..{n - 1})")

    check(outside.any(), error)


class Embedding(Function):
    def __init__(self, ids: Any, message: Callable[[int], str] | None = None) -> None:
        self.ids = _raw_index(ids)
        self.message = message  # the error for an id out of range (bad id -> text), or the table's own

    def forward(self, weight: Any) -> Any:
        ids = self.ids
        check_ids(ids, weight.shape[0], self.message)
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


def embedding(ids: Any, weight: Any, message: Callable[[int], str] | None = None) -> Any:
    """Look up rows of ``weight`` (num_embeddings, dim) for integer ``ids`` of any shape.

    An id outside 0..num_embeddings-1 raises ``IndexError``; ``message`` (bad id -> text) words it for
    the caller (the model says "token id 70 is out of range for vocab_size=64"), so the ids are checked
    once, here, not once by the model and again by the table.
    """
    return Embedding(ids, message)(weight)
