"""q4: 4-bit weights in groups along the input dimension, each group with a scale and a minimum.

For each group of ``group_size`` (default 32) consecutive inputs of one output row:

    m = min_k w_k                         the minimum (float16, rounded down)
    d = (max_k w_k - m) / 15              the scale  (float16, rounded up)
    q_k = round((w_k - m) / d)            an integer in [0, 15]
    w_k ~ d * q_k + m                     |w_k - (d q_k + m)| <= d / 2

This is the asymmetric scheme of llama.cpp's Q4_1: the 16 levels span exactly the group's
range, so a group of only positive weights wastes no level on negative ones. GGUF Q4_1 blocks
load unchanged; GGUF Q4_0 blocks, the symmetric scheme w = d * (q - 8), load as m = -8d,
which is exact in float16 (multiplying by a power of two only changes the exponent).

Packing, two values per byte, in llama.cpp's order: in a group of 32, byte j holds q_j in
its low 4 bits and q_{j+16} in its high 4 bits (``pack_nibbles``). Storage per group of 32:
16 bytes of values + 2 bytes of scale + 2 of minimum = 20 bytes, 0.625 bytes per weight,
0.156x of float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import get_backend
from .float16 import as_float
from .int8 import round_up_to
from .weight import QuantizedWeight

Q4_LEVELS = 15  # q in [0, 15]


def pack_nibbles(q: Any) -> Any:
    """Pack 4-bit values (..., gs) as bytes (..., gs // 2): byte j = q[j] | q[j + gs/2] << 4.

    >>> pack_nibbles(np.array([1, 2, 3, 4], dtype=np.uint8)).tolist()   # 1 | 3 << 4, 2 | 4 << 4
    [49, 66]
    """
    half = q.shape[-1] // 2
    return q[..., :half] | (q[..., half:] << 4)


def unpack_nibbles(packed: Any, axis: int = -1, dtype: Any = np.uint8) -> Any:
    """The inverse of ``pack_nibbles``: bytes (..., gs // 2) -> 4-bit values (..., gs) along ``axis``, as ``dtype``.

    The low nibbles are q[k] for k < gs/2 and the high ones q[k + gs/2], so the two, one after
    the other, are the group's values in order. (One ``concatenate`` that also casts: fewer
    passes over the data than unpacking to uint8 and converting after.)

    >>> unpack_nibbles(np.array([49, 66], dtype=np.uint8)).tolist()
    [1, 2, 3, 4]
    """
    xp = get_backend().xp
    return xp.concatenate([packed & 15, packed >> 4], axis=axis, dtype=dtype)


def quantize_q4(weight: Any, group_size: int = 32) -> tuple[Any, Any, Any]:
    """Quantize a float matrix (out, in) to ``(packed, scales, mins)``.

    packed: uint8 (out, in // 2); scales, mins: float16 (out, in // group_size).

    >>> packed, d, m = quantize_q4(np.array([[0.0, 1.5, 3.0, 7.5]], dtype=np.float32), group_size=4)
    >>> unpack_nibbles(packed).tolist(), float(d[0, 0]), float(m[0, 0])
    ([[0, 3, 6, 15]], 0.5, 0.0)
    """
    xp = get_backend().xp
    weight = xp.asarray(weight)
    out_features, in_features = weight.shape
    if group_size <= 0 or group_size % 2 or in_features % group_size:
        raise ValueError(f"group_size={group_size} must be even and divide in_features={in_features}")
    groups = weight.reshape(out_features, in_features // group_size, group_size)  # (out, G, gs)
    low = groups.min(axis=-1)  # (out, G)
    high = groups.max(axis=-1)
    # m rounded down and d rounded up (in float16) keep every w inside [m, m + 15 d].
    mins = -round_up_to(-low, np.float16)
    scale = (high - mins.astype(weight.dtype)) / Q4_LEVELS
    scales = round_up_to(scale, np.float16)
    divisor = xp.where(scales == 0, 1, scales).astype(weight.dtype)[:, :, None]  # a constant group: q = 0
    q = xp.rint((groups - mins.astype(weight.dtype)[:, :, None]) / divisor)
    q = xp.clip(q, 0, Q4_LEVELS).astype(np.uint8)
    return pack_nibbles(q).reshape(out_features, in_features // 2), scales, mins


class Q4Weight(QuantizedWeight):
    """A matrix stored as packed 4-bit values with float16 scales and minimums, one of each per group.

    W[o, g*gs + k] = scales[o, g] * q[o, g, k] + mins[o, g], q unpacked from ``packed``.

    Built from, and saved as, llama.cpp's row-major arrays: ``packed`` (out, in/2) uint8 and
    ``scales``, ``mins`` (out, n_groups) float16. In memory the same bytes are kept input-major
    (weight.py says why):

        packed_t[g, j, o]       = packed[o, g*gs/2 + j]     (n_groups, gs/2, out)   uint8
        scales_mins_t[g, 0, o]  = scales[o, g]              (n_groups, 2, out)      float16
        scales_mins_t[g, 1, o]  = mins[o, g]

    Each scale sits next to its minimum (as in a Q4_1 block), so one conversion widens both.

    >>> w = Q4Weight.from_float(np.array([[0.0, 1.5, 3.0, 7.5]], dtype=np.float32), group_size=4)
    >>> w.dequantize().tolist()
    [[0.0, 1.5, 3.0, 7.5]]
    """

    scheme = "q4"

    def __init__(self, packed: Any, scales: Any, mins: Any) -> None:
        backend = get_backend()
        xp = backend.xp
        out_features, n_groups = scales.shape
        if packed.ndim != 2 or packed.shape[0] != out_features or mins.shape != scales.shape:
            raise ValueError(f"q4 weight: packed (out, in/2), scales and mins (out, n_groups) expected, got "
                             f"{packed.shape}, {scales.shape}, {mins.shape}")
        in_features = 2 * packed.shape[1]
        if in_features % n_groups or (in_features // n_groups) % 2:
            raise ValueError(f"q4 weight: {n_groups} groups do not split {in_features} inputs into even groups")
        super().__init__((out_features, in_features), in_features // n_groups)
        half = self.group_size // 2
        packed = backend.asarray(packed, dtype=np.uint8).reshape(out_features, n_groups, half)
        self.packed_t = xp.ascontiguousarray(packed.transpose(1, 2, 0))  # (G, gs/2, out)
        scales_mins = xp.stack([backend.asarray(scales), backend.asarray(mins)], axis=1)  # (out, 2, G)
        self.scales_mins_t = xp.ascontiguousarray(scales_mins.transpose(2, 1, 0))  # (G, 2, out)

    @classmethod
    def from_float(cls, weight: Any, group_size: int = 32) -> Q4Weight:
        return cls(*quantize_q4(weight, group_size))

    @property
    def packed(self) -> Any:
        """The packed values in llama.cpp's row-major layout (out, in/2): a copy."""
        xp = get_backend().xp
        return xp.ascontiguousarray(self.packed_t.transpose(2, 0, 1)).reshape(self.shape[0], self.shape[1] // 2)

    @property
    def scales(self) -> Any:
        """The scales d, (out, n_groups) float16 (a view)."""
        return self.scales_mins_t[:, 0].T

    @property
    def mins(self) -> Any:
        """The minimums m, (out, n_groups) float16 (a view)."""
        return self.scales_mins_t[:, 1].T

    def arrays(self) -> dict[str, Any]:
        return {"packed": self.packed, "scales": self.scales, "mins": self.mins}

    def held_arrays(self) -> list[Any]:
        return [self.packed_t, self.scales_mins_t]

    def _columns(self, rows: Any, dtype: Any) -> Any:
        """q of output rows ``rows`` (a slice or an index array) as floats, input-major: (G, gs, n)."""
        return unpack_nibbles(self.packed_t[:, :, rows], axis=1, dtype=dtype)  # from (G, gs/2, n)

    def dequantize_rows(self, rows: Any, dtype: Any = np.float32) -> Any:
        """``W[rows]`` in float: d * q + m, for a slice or an index array of rows (a transposed view)."""
        w_t = self._columns(rows, dtype)  # (G, gs, n)
        scales_mins = as_float(self.scales_mins_t[:, :, rows], dtype)  # (G, 2, n)
        w_t *= scales_mins[:, 0:1]
        w_t += scales_mins[:, 1:2]
        return w_t.reshape(self.shape[1], w_t.shape[2]).T  # (n, in)

    def _prepare_small(self, x: Any) -> tuple[Any, Any]:
        # what each group's q multiplies, and what each minimum multiplies (the sum of the group's inputs)
        x_groups = super()._prepare_small(x)  # (G, N, gs)
        return x_groups, x_groups.sum(axis=-1).T  # (N, G)

    def _matmul_small(self, prepared: tuple[Any, Any], start: int, stop: int) -> Any:
        xp = get_backend().xp
        x_groups, x_sums = prepared
        dtype = x_groups.dtype
        q = self._columns(slice(start, stop), dtype)  # (G, gs, n)
        dots = xp.matmul(x_groups, q)  # (G, N, n): sum_k x[n, g, k] q[o, g, k], one product per group
        scales_mins = as_float(self.scales_mins_t[:, :, start:stop], dtype)  # (G, 2, n)
        dots *= scales_mins[:, 0:1]  # times d[o, g]
        return dots.sum(axis=0) + x_sums @ scales_mins[:, 1]  # (N, n)
