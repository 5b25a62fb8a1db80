"""``Embedding``: a lookup table from token ids to vectors (gather forward, scatter-add backward)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..autograd.ops.embedding import embedding
from .init import normal_
from .module import Module, Parameter


class Embedding(Module):
    """Rows of ``weight`` (num_embeddings, embedding_dim) picked by integer ids of any shape.

    >>> import tinyllm as tl
    >>> table = Embedding(10, 4)
    >>> table(tl.tensor([[1, 2, 3]])).shape
    (1, 3, 4)
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, std: float = 0.02) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = normal_(Parameter(np.zeros((num_embeddings, embedding_dim), dtype=np.float32)), std)

    def forward(self, ids: Any, message: Callable[[int], str] | None = None) -> Any:
        """The rows for ``ids``; an id out of range raises ``IndexError``, worded by ``message`` if given
        (bad id -> text: the model names its vocab_size)."""
        return embedding(ids, self.weight, message)  # (..., embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
