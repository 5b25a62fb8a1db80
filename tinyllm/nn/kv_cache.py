"""``KVCache``: the keys and values of every layer, kept between generation steps.

Layout, as llama2.c's ``run.c`` (there: (layer, seq_len, kv_dim)):

    keys[layer]   (B, n_kv_heads, max_seq_len, head_dim)
    values[layer] (B, n_kv_heads, max_seq_len, head_dim)
    lengths       (B,)  positions filled in each row

Only ``n_kv_heads`` heads are stored, never the repeated copies grouped-query
attention reads them as, so GQA's memory saving (n_heads / n_kv_heads) holds.
The arrays are preallocated once; a step writes its new positions in place.

Each row keeps its own length, so one cache can hold several sequences of
different lengths (batched generation over prompts of different lengths, or a
server decoding many conversations at once). Row b's new keys go to positions
``lengths[b] .. lengths[b] + T - 1``; everything past a row's length is stale
and the attention mask never lets a query see it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import get_backend


class KVCache:
    """Preallocated per-layer key/value arrays plus ``lengths``, the number of positions filled in each row."""

    def __init__(
        self, n_layers: int, batch_size: int, n_kv_heads: int, max_seq_len: int, head_dim: int, dtype: Any = np.float32
    ) -> None:
        xp = get_backend().xp
        shape = (batch_size, n_kv_heads, max_seq_len, head_dim)
        self.keys = [xp.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.values = [xp.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.max_seq_len = max_seq_len
        self.lengths = np.zeros(batch_size, dtype=np.int64)  # (B,) on the host: row b holds positions 0 .. lengths[b]-1
        self._planned: tuple | None = None  # (lengths and T it was made for, the write plan): see _write_plan

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    @property
    def length(self) -> int:
        """The number of positions filled, when every row holds the same number (one sequence, or a plain batch)."""
        if len(self.lengths) == 0:
            return 0
        first = int(self.lengths[0])
        if (self.lengths != first).any():
            raise ValueError(f"the rows of this cache hold different lengths {self.lengths.tolist()}; read cache.lengths")
        return first

    @property
    def uniform(self) -> bool:
        """True when every row holds the same number of positions."""
        return len(self.lengths) == 0 or bool((self.lengths == self.lengths[0]).all())

    def update(self, layer: int, k: Any, v: Any) -> tuple[Any, Any]:
        """Write k, v (B, n_kv_heads, T, head_dim) at positions lengths[b] .. lengths[b]+T-1 of each row b of ``layer``.

        Returns views of every row's keys and values up to the longest row's new end,
        (B, n_kv_heads, max(lengths)+T, head_dim); a shorter row's tail is stale (masked by attention).
        ``lengths`` itself advances in ``advance`` once every layer has been written.
        """
        end, rows, positions = self._write_plan(k.shape[2])
        if rows is None:  # every row holds the same length: one slice
            start = end - k.shape[2]
            self.keys[layer][:, :, start:end] = k
            self.values[layer][:, :, start:end] = v
        else:
            # Two integer indices around a slice: the indexed result is (B, T, n_kv_heads, head_dim).
            self.keys[layer][rows, :, positions] = k.transpose(0, 2, 1, 3)
            self.values[layer][rows, :, positions] = v.transpose(0, 2, 1, 3)
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def _write_plan(self, T: int) -> tuple[int, Any, Any]:
        """Where a step's T new positions go: (end, None, None) when every row holds the same length,
        else (end, rows (B, 1), positions (B, T)) for the indexed write; end = the longest row's new end.

        Every layer of one step writes to the same places, so the plan is worked out by the first
        layer and kept until ``lengths`` changes.
        """
        key = (self.lengths.tobytes(), T)
        if self._planned is None or self._planned[0] != key:
            end = int(self.lengths.max(initial=0)) + T
            if end > self.max_seq_len:
                raise ValueError(f"KV cache is full: {end} positions needed, {self.max_seq_len} allocated")
            if self.uniform:
                plan = (end, None, None)
            else:
                xp = get_backend().xp
                plan = (end, xp.arange(len(self.lengths))[:, None], xp.asarray(self.lengths[:, None] + np.arange(T)))
            self._planned = (key, plan)
        return self._planned[1]

    def advance(self, n_tokens: int | np.ndarray) -> None:
        """Count ``n_tokens`` more positions as filled: one number for every row, or one per row (B,)."""
        self.lengths += np.asarray(n_tokens, dtype=np.int64)

    def reset(self) -> None:
        """Forget everything (the arrays are reused)."""
        self.lengths[:] = 0

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` positions of every row (e.g. to roll back a chat turn)."""
        if not 0 <= length <= (int(self.lengths.min()) if len(self.lengths) else 0):
            raise ValueError(f"cannot truncate a cache of lengths {self.lengths.tolist()} to {length}")
        self.lengths[:] = length

    def rows(self, start: int, stop: int) -> KVCache:
        """A cache of rows start .. stop-1 that shares this one's arrays and lengths (writes go through).

        >>> cache = KVCache(n_layers=1, batch_size=4, n_kv_heads=1, max_seq_len=8, head_dim=2)
        >>> cache.rows(1, 3).advance(5); cache.lengths.tolist()
        [0, 5, 5, 0]
        """
        view = object.__new__(KVCache)
        view.keys = [k[start:stop] for k in self.keys]
        view.values = [v[start:stop] for v in self.values]
        view.max_seq_len = self.max_seq_len
        view.lengths = self.lengths[start:stop]  # a NumPy view: advancing it advances ours
        view._planned = None
        return view

    def move_row(self, source: int, target: int) -> None:
        """Copy row ``source`` (its filled positions and length) over row ``target``; then ``source`` is free.

        A server keeps its active sequences in rows 0 .. n-1 so each step runs on one slice: when a
        sequence ends, the last row moves into its place.
        """
        n = int(self.lengths[source])
        for array in self.keys + self.values:
            array[target, :, :n] = array[source, :, :n]
        self.lengths[target] = n
        self.lengths[source] = 0

    def release_row(self, row: int, n_active: int) -> None:
        """Free ``row`` of the active rows 0 .. n_active-1, keeping them contiguous: the last one moves into it.

        The caller moves its own per-row records the same way (record[row] = record[n_active - 1]).
        """
        last = n_active - 1
        if row != last:
            self.move_row(last, row)
        self.lengths[last] = 0

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.keys + self.values)
