"""``RowPositions``: where each row of a batch sits, when the rows are not all alike.

A plain batch is B sequences of the same length T, all starting at position 0 (or all at
the same cache length). Two cases break that:

- **padding**: sequences of different lengths stacked into one (B, T) array, the short ones
  filled with padding tokens. ``attention_mask`` (B, T) says which tokens are real (1) and
  which are padding (0), as in Hugging Face. Padding may sit on the right (``[a b c 0 0]``)
  or on the left (``[0 0 a b c]``).
- **a cache whose rows hold different lengths** (batched generation, a server decoding many
  conversations): row b's new tokens continue from its own ``lengths[b]``.

For every row this works out the three things the layers need:

    positions        (B, T)  the position of each token, for RoPE or position embeddings:
                             lengths[b] + (number of real tokens before it in the row)
    query_start      (B,)    the key index of the row's first token (its cache length), for causality
    key_padding_mask (B, S)  True for real keys; only for left or middle padding without a cache
                             (right padding needs none: a real token never looks right of itself)

Example (no cache): attention_mask [[1, 1, 1], [0, 1, 1]] gives positions [[0, 1, 2], [0, 0, 1]]
(the padding token's position is clipped to 0 and never matters), so the second row's real tokens
sit at positions 0 and 1, exactly as they would alone.

Every layer of one forward needs the same RoPE tables at those positions and the same attention
mask, so ``rope_tables`` and ``attention_mask`` build them on the first layer's call and hand the
same arrays to the others (SmolLM2 has 30 layers: in a server's decode step of 4 rows, building
them in every layer cost about 2 ms of a 72 ms step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .fused.attention import row_mask


@dataclass
class RowPositions:
    positions: np.ndarray  # (B, T) int64
    query_start: np.ndarray  # (B,) int64
    key_padding_mask: np.ndarray | None  # (B, S) bool, or None
    n_real: np.ndarray  # (B,) int64: real tokens per row (what the cache advances by)
    built: dict = field(default_factory=dict, repr=False, compare=False)  # what the first layer built, for the rest

    def rope_tables(self, rope: Any) -> tuple[Any, Any]:
        """cos and sin at ``positions`` from ``rope`` (a RotaryEmbedding), each (B, 1, T, head_dim/2)."""
        key = ("rope", id(rope))
        if key not in self.built:
            self.built[key] = rope.tables_at(self.positions)
        return self.built[key]

    def attention_mask(self, S: int, dtype: Any) -> Any:
        """The causal attention's additive mask (B, 1, 1, T, S) over S keys: 0 where allowed, -inf elsewhere.

        >>> r = row_positions(2, 1, cache_lengths=np.array([2, 0]))
        >>> r.attention_mask(3, np.float32)[:, 0, 0, 0].tolist()
        [[0.0, 0.0, 0.0], [0.0, -inf, -inf]]
        """
        key = ("mask", S, np.dtype(dtype).str)
        if key not in self.built:
            B, T = self.positions.shape
            self.built[key] = row_mask(B, T, S, True, self.query_start, self.key_padding_mask, dtype)
        return self.built[key]


def row_positions(batch_size: int, T: int, attention_mask: Any = None, cache_lengths: Any = None) -> RowPositions:
    """Work out per-row positions and masks from an optional ``attention_mask`` (B, T) and cache lengths (B,).

    With a cache, padding must be on the right (the cache keeps each row's tokens contiguous).

    >>> r = row_positions(2, 3, attention_mask=np.array([[1, 1, 1], [0, 1, 1]]))
    >>> r.positions.tolist(), r.key_padding_mask.tolist()
    ([[0, 1, 2], [0, 0, 1]], [[True, True, True], [False, True, True]])
    """
    lengths = np.zeros(batch_size, np.int64) if cache_lengths is None else np.asarray(cache_lengths, np.int64)
    if attention_mask is None:
        positions = lengths[:, None] + np.arange(T)  # (B, T)
        return RowPositions(positions, lengths.copy(), None, np.full(batch_size, T, np.int64))
    mask = np.asarray(attention_mask)
    if mask.shape != (batch_size, T):
        raise ValueError(f"attention_mask must have the shape of the token ids {(batch_size, T)}, got {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("attention_mask must hold only 1 (a real token) and 0 (padding)")
    mask = mask.astype(bool)
    n_real = mask.sum(axis=1)  # (B,)
    if (n_real == 0).any():
        raise ValueError(f"every row needs at least one real token; rows {np.flatnonzero(n_real == 0).tolist()} have none")
    right_padded = bool((mask == (np.arange(T) < n_real[:, None])).all())  # ones, then zeros
    positions = lengths[:, None] + np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # (B, T)
    if cache_lengths is not None:
        if not right_padded:
            raise ValueError("with a KV cache, pad on the right (real tokens first, then padding)")
        return RowPositions(positions, lengths.copy(), None, n_real)
    key_padding_mask = None if right_padded else mask  # (B, S = T)
    return RowPositions(positions, lengths.copy(), key_padding_mask, n_real)
