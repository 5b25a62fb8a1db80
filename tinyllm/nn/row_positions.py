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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class RowPositions:
    positions: np.ndarray  # (B, T) int64
    query_start: np.ndarray  # (B,) int64
    key_padding_mask: np.ndarray | None  # (B, S) bool, or None
    n_real: np.ndarray  # (B,) int64: real tokens per row (what the cache advances by)


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
