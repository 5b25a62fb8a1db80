"""int8: symmetric 8-bit weights, one float scale per output row (or per group of a row).

For each group of ``group_size`` consecutive inputs of one output row (by default the group
is the whole row: "per output channel"):

    d = max_k |w_k| / 127                 the scale
    q_k = round(w_k / d)                  an integer in [-127, 127], stored as int8
    w_k ~ d * q_k                         |w_k - d q_k| <= d / 2

-128 is never used, so the grid is symmetric around 0 and 0 is exact (an all-zero row stays
zero). Storage: 1 byte per weight plus the scales, (out_features, n_groups):

- per channel (``group_size=None``): float32 scales, 4 bytes per row: 1.007 bytes per weight
  for a 576-wide row, 0.252x of float32;
- in groups of 32 (``group_size=32``): float16 scales, llama.cpp's Q8_0 exactly (a GGUF Q8_0
  block is 32 int8 values and one float16 scale), 34 bytes per 32 weights, 0.266x of float32.

A float16 scale is rounded *up* to the next float16 when rounding to nearest would make it
too small, so |w / d| <= 127 still holds and the error bound d/2 stays exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import get_backend
from .float16 import as_float
from .weight import QuantizedWeight

INT8_MAX = 127


def next_float_up(values: Any) -> Any:
    """The next representable float above each (finite) value: one step of its bit pattern.

    Floats of one sign are ordered like their bit patterns read as integers, so the next float
    towards +inf is bits + 1 for a positive value and bits - 1 for a negative one (its magnitude
    shrinks); both zeros go to the smallest positive subnormal. (Integer arithmetic, not
    ``nextafter``, so that it is exact on every backend.)

    >>> next_float_up(np.array([1.0, -1.0, 0.0], dtype=np.float16)).tolist()
    [1.0009765625, -0.99951171875, 5.960464477539063e-08]
    """
    xp = get_backend().xp
    signed = {2: xp.int16, 4: xp.int32, 8: xp.int64}[values.dtype.itemsize]
    bits = values.view(signed)
    stepped = xp.where(bits >= 0, bits + 1, bits - 1)
    stepped = xp.where(values == 0, 1, stepped).astype(signed)
    return stepped.view(values.dtype)


def round_up_to(values: Any, dtype: Any) -> Any:
    """``values`` cast to the smaller float ``dtype`` (float16), but never below the original value.

    A cast rounds to the nearest float16, which is below the value half of the time; there the
    next float16 up is taken instead.

    >>> float(round_up_to(np.array([1 / 3]), np.float16)[0]) >= 1 / 3
    True
    """
    xp = get_backend().xp
    largest = float(xp.abs(values).max()) if values.size else 0.0
    if not largest <= float(np.finfo(dtype).max):  # also catches inf and nan
        raise ValueError(f"weights too large for {np.dtype(dtype).name} scales (a scale of {largest:.4g})")
    stored = values.astype(dtype)
    return xp.where(stored.astype(values.dtype) < values, next_float_up(stored), stored)


def quantize_int8(weight: Any, group_size: int | None = None) -> tuple[Any, Any]:
    """Quantize a float matrix (out, in) to ``(q, scales)``: q int8 (out, in), scales (out, in // group_size).

    >>> q, d = quantize_int8(np.array([[0.5, -1.27, 0.0]], dtype=np.float32))
    >>> q.tolist(), round(float(d[0, 0]), 6)
    ([[50, -127, 0]], 0.01)
    """
    xp = get_backend().xp
    weight = xp.asarray(weight)
    out_features, in_features = weight.shape
    group_size = in_features if group_size is None else int(group_size)
    if group_size <= 0 or in_features % group_size:
        raise ValueError(f"group_size={group_size} must divide in_features={in_features}")
    groups = weight.reshape(out_features, in_features // group_size, group_size)  # (out, G, gs)
    amax = xp.abs(groups).max(axis=-1)  # (out, G)
    scale = amax / INT8_MAX
    if group_size == in_features:
        scales = scale.astype(np.float32)  # per channel: 4 bytes a row is nothing
    else:
        scales = round_up_to(scale, np.float16)  # Q8_0's float16 scales
    divisor = xp.where(scales == 0, 1, scales).astype(weight.dtype)[:, :, None]  # an all-zero group: q = 0
    q = xp.clip(xp.rint(groups / divisor), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q.reshape(out_features, in_features), scales


class Int8Weight(QuantizedWeight):
    """A matrix stored as int8 ``qweight`` (out, in) and ``scales`` (out, n_groups): W = scales * qweight.

    Kept in memory input-major (weight.py explains why): ``qweight_t`` (in, out) int8 and
    ``scales_t`` (n_groups, out), the transposes of the row-major arrays it is built from and saved as.

    >>> w = Int8Weight.from_float(np.array([[0.5, -1.27, 0.0]], dtype=np.float32))
    >>> w.dequantize(np.float64).round(4).tolist()
    [[0.5, -1.27, 0.0]]
    """

    scheme = "int8"

    def __init__(self, qweight: Any, scales: Any) -> None:
        backend = get_backend()
        xp = backend.xp
        if qweight.ndim != 2 or scales.ndim != 2 or scales.shape[0] != qweight.shape[0]:
            raise ValueError(f"int8 weight: qweight (out, in) and scales (out, n_groups) expected, got "
                             f"{qweight.shape} and {scales.shape}")
        if qweight.shape[1] % scales.shape[1]:
            raise ValueError(f"int8 weight: {scales.shape[1]} groups do not divide {qweight.shape[1]} inputs")
        super().__init__(qweight.shape, qweight.shape[1] // scales.shape[1])
        self.qweight_t = xp.ascontiguousarray(backend.asarray(qweight, dtype=np.int8).T)  # (in, out)
        self.scales_t = xp.ascontiguousarray(backend.asarray(scales).T)  # (G, out), float32 or float16

    @classmethod
    def from_float(cls, weight: Any, group_size: int | None = None) -> Int8Weight:
        """Quantize a float (out, in) matrix; ``group_size=None`` means one scale per output row."""
        return cls(*quantize_int8(weight, group_size))

    @property
    def qweight(self) -> Any:
        """q, (out, in) int8 (a view)."""
        return self.qweight_t.T

    @property
    def scales(self) -> Any:
        """The scales d, (out, n_groups) (a view)."""
        return self.scales_t.T

    def arrays(self) -> dict[str, Any]:
        return {"qweight": self.qweight, "scales": self.scales}

    def held_arrays(self) -> list[Any]:
        return [self.qweight_t, self.scales_t]

    def _columns(self, rows: Any, dtype: Any) -> Any:
        """q of output rows ``rows`` (a slice or an index array) as floats, input-major: (G, gs, n)."""
        q = self.qweight_t[:, rows].astype(dtype)  # (in, n)
        return q.reshape(self.n_groups, self.group_size, q.shape[1])

    def dequantize_rows(self, rows: Any, dtype: Any = np.float32) -> Any:
        """``W[rows]`` in float: d * q, for a slice or an index array of rows (a transposed view)."""
        w_t = self._columns(rows, dtype)  # (G, gs, n)
        w_t *= as_float(self.scales_t[:, rows], dtype)[:, None, :]
        return w_t.reshape(self.shape[1], w_t.shape[2]).T  # (n, in)

    def _matmul_small(self, x_groups: Any, start: int, stop: int) -> Any:
        xp = get_backend().xp
        dtype = x_groups.dtype
        dots = xp.matmul(x_groups, self._columns(slice(start, stop), dtype))  # (G, N, n): each group's dot product
        dots *= as_float(self.scales_t[:, start:stop], dtype)[:, None, :]  # times d[o, g]
        return dots.sum(axis=0)  # (N, n)
