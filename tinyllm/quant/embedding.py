"""``QuantizedEmbedding``: a token table kept quantized; a lookup dequantizes only the rows it picks.

    y[..., :] = dequantize(W[ids[...], :])        W (num_embeddings, embedding_dim), int8 or q4

The rows are quantized along the embedding dimension, exactly like a ``QuantizedLinear``'s
weight (out = num_embeddings, in = embedding_dim), so one ``QuantizedWeight`` can serve both
as the input table and, when the model ties them, as the output projection
``logits = x W^T`` (see ``quantize`` in convert.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..autograd import Tensor
from ..autograd.ops.embedding import check_ids
from ..backends import get_backend
from ..nn.module import Module
from .weight import QuantizedWeight


class QuantizedEmbedding(Module):
    """Rows of a quantized (num_embeddings, embedding_dim) table picked by integer ids of any shape.

    >>> import numpy as np, tinyllm as tl
    >>> from tinyllm.quant.int8 import Int8Weight
    >>> table = QuantizedEmbedding(Int8Weight.from_float(np.eye(4, dtype=np.float32)))
    >>> table(tl.tensor([[2]])).numpy().tolist()
    [[[0.0, 0.0, 1.0, 0.0]]]
    """

    def __init__(self, weight: QuantizedWeight) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.weight = weight

    def forward(self, ids: Any, message: Callable[[int], str] | None = None) -> Tensor:
        """The dequantized rows for ``ids``; an id out of range raises ``IndexError`` (worded by ``message``,
        bad id -> text, if given), checked as the float table checks (one boolean, read once)."""
        ids = ids.data if isinstance(ids, Tensor) else get_backend().asarray(ids)
        check_ids(ids, self.num_embeddings, message)
        rows = self.weight.dequantize_rows(ids.reshape(-1))  # (n_ids, dim)
        return Tensor(rows.reshape(*ids.shape, self.embedding_dim))  # a constant: nothing to train

    def extra_repr(self) -> str:
        weight = self.weight
        return f"{self.num_embeddings}, {self.embedding_dim}, scheme={weight.scheme}, group_size={weight.group_size}"
