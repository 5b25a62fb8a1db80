"""``RotaryEmbedding``: the cos/sin tables of RoPE, and converting weights between pairing conventions.

Position p rotates feature pair i of every head by the angle p * theta^(-2i/D)
(D = head_dim). The tables hold cos and sin of those angles for every position
up to ``max_seq_len``, computed once in float64 and stored in float32.

Pairing convention. tinyllm pairs feature i with feature i + D/2 ("half-split"),
as Hugging Face transformers does for LLaMA, Qwen and most checkpoints on the Hub.
Meta's original LLaMA code and llama.cpp's GGUF files pair features 2i and 2i+1
("interleaved"). The two give identical attention scores if the rows of the query
and key projections are permuted to match, which is what
``interleaved_to_half_split`` does (and ``half_split_to_interleaved`` undoes):

    interleaved order of one head (D = 8):  0 1 | 2 3 | 4 5 | 6 7   (pairs side by side)
    half-split order of the same head:      0 2 4 6 | 1 3 5 7       (first of each pair, then second)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import get_backend
from .module import Module


def rope_frequencies(head_dim: int, theta: float = 10000.0) -> np.ndarray:
    """The D/2 rotation frequencies theta^(-2i/D), i = 0 .. D/2 - 1, in float64.

    >>> rope_frequencies(4, theta=100.0).tolist()
    [1.0, 0.1]
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    return theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)


class RotaryEmbedding(Module):
    """Precomputed cos/sin tables (max_seq_len, head_dim/2); ``tables(start, length)`` slices them."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.max_seq_len = max_seq_len
        self.theta = theta
        angles = np.outer(np.arange(max_seq_len, dtype=np.float64), rope_frequencies(head_dim, theta))  # (T, D/2)
        backend = get_backend()
        self.register_buffer("cos", backend.asarray(np.cos(angles).astype(np.float32)))
        self.register_buffer("sin", backend.asarray(np.sin(angles).astype(np.float32)))

    def tables(self, start: int, length: int) -> tuple[Any, Any]:
        """cos and sin for positions start .. start + length - 1, each (length, head_dim/2)."""
        if start + length > self.max_seq_len:
            raise ValueError(
                f"positions {start}..{start + length - 1} exceed the RoPE table of max_seq_len={self.max_seq_len}"
            )
        return self.cos[start : start + length], self.sin[start : start + length]

    def tables_at(self, positions: Any) -> tuple[Any, Any]:
        """cos and sin at per-row positions (B, T) ints, each (B, 1, T, head_dim/2) (broadcast over the heads).

        >>> rope = RotaryEmbedding(head_dim=4, max_seq_len=8)
        >>> rope.tables_at(np.array([[0, 1], [5, 6]]))[0].shape
        (2, 1, 2, 2)
        """
        positions = get_backend().xp.asarray(positions)
        if positions.size and (int(positions.min()) < 0 or int(positions.max()) >= self.max_seq_len):
            raise ValueError(
                f"positions {int(positions.min())}..{int(positions.max())} are outside the RoPE table of "
                f"max_seq_len={self.max_seq_len}"
            )
        return self.cos[positions][:, None], self.sin[positions][:, None]

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, max_seq_len={self.max_seq_len}, theta={self.theta}"


def interleaved_to_half_split(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the output rows of a Q or K projection (n_heads * head_dim, in) from interleaved to half-split pairs.

    >>> w = np.arange(4).reshape(4, 1)        # one head, head_dim 4: rows 0 1 2 3
    >>> interleaved_to_half_split(w, 1)[:, 0].tolist()
    [0, 2, 1, 3]
    """
    out_features, in_features = weight.shape[0], weight.shape[1:]
    head_dim = out_features // n_heads
    per_head = weight.reshape(n_heads, head_dim // 2, 2, *in_features)  # (heads, pair, member, ...)
    return per_head.swapaxes(1, 2).reshape(weight.shape)


def half_split_to_interleaved(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of ``interleaved_to_half_split``."""
    out_features, in_features = weight.shape[0], weight.shape[1:]
    head_dim = out_features // n_heads
    per_head = weight.reshape(n_heads, 2, head_dim // 2, *in_features)  # (heads, member, pair, ...)
    return per_head.swapaxes(1, 2).reshape(weight.shape)
