"""``KVCache``: the keys and values of every layer, kept between generation steps.

Layout, as llama2.c's ``run.c`` (there: (layer, seq_len, kv_dim)):

    keys[layer]   (B, n_kv_heads, max_seq_len, head_dim)
    values[layer] (B, n_kv_heads, max_seq_len, head_dim)

Only ``n_kv_heads`` heads are stored, never the repeated copies grouped-query
attention reads them as, so GQA's memory saving (n_heads / n_kv_heads) holds.
The arrays are preallocated once; a step writes its new positions in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import get_backend


class KVCache:
    """Preallocated per-layer key/value arrays plus ``length``, the number of positions filled."""

    def __init__(
        self, n_layers: int, batch_size: int, n_kv_heads: int, max_seq_len: int, head_dim: int, dtype: Any = np.float32
    ) -> None:
        xp = get_backend().xp
        shape = (batch_size, n_kv_heads, max_seq_len, head_dim)
        self.keys = [xp.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.values = [xp.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.max_seq_len = max_seq_len
        self.length = 0  # positions 0 .. length-1 hold keys/values

    def update(self, layer: int, k: Any, v: Any) -> tuple[Any, Any]:
        """Write k, v (B, n_kv_heads, T, head_dim) at positions length .. length+T-1 of ``layer``.

        Returns views of all keys and values so far, (B, n_kv_heads, length+T, head_dim).
        ``length`` itself advances in ``advance`` once every layer has been written.
        """
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_seq_len:
            raise ValueError(f"KV cache is full: {end} positions needed, {self.max_seq_len} allocated")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n_tokens: int) -> None:
        self.length += n_tokens

    def reset(self) -> None:
        """Forget everything (the arrays are reused)."""
        self.length = 0

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` positions (e.g. to roll back a chat turn)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of length {self.length} to {length}")
        self.length = length

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.keys + self.values)
