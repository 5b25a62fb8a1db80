"""Writing a safetensors file one tensor at a time, in float32, float16 or bfloat16.

The format (read by ``tinyllm.pretrained.tensors``)::

    8 bytes   N, the header length (little-endian uint64)
    N bytes   JSON: {"__metadata__": {"format": "pt"},
                     "model.norm.weight": {"dtype": "F32", "shape": [576], "data_offsets": [0, 2304]}, ...}
              (padded with spaces to a multiple of 8 bytes, so that every tensor starts aligned)
    the rest  each tensor's bytes, row-major, little-endian, in the header's order

The header needs every shape and dtype, which are known before any tensor is converted, so
the file is written in one pass: header first, then each tensor converted and written in turn.
Only one converted tensor is ever in memory (the ``safetensors`` package's ``save_file`` takes
a dict of all of them), and NumPy has no bfloat16, which this writer makes itself:

    bfloat16 = the top 16 bits of a float32, rounded to nearest (ties to even):
        bits = float32 bits;  bits + 0x7FFF + ((bits >> 16) & 1), then >> 16

``{"format": "pt"}`` in the metadata is what transformers checks before loading a file.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

DTYPES = {"float32": ("F32", 4), "float16": ("F16", 2), "bfloat16": ("BF16", 2)}


def float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float32 values, rounded to nearest, ties to even (finite values).

    >>> float32_to_bfloat16_bits(np.array([1.0, 1.00390625, 1.01171875], dtype=np.float32)).tolist()
    [16256, 16256, 16258]
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def convert(values: np.ndarray, dtype: str) -> np.ndarray:
    """A float32 array in ``dtype``'s stored form: float32, float16, or bfloat16 bits (uint16)."""
    if dtype == "float32":
        return np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "float16":
        return np.ascontiguousarray(values.astype(np.float16))
    return float32_to_bfloat16_bits(values)


def write_safetensors(
    path: str | os.PathLike,
    tensors: Iterable[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]],
    dtype: str,
    metadata: dict[str, str] | None = None,
) -> int:
    """Write ``(name, shape, load)`` tensors (``load()`` gives float32) as ``dtype``; returns the file's size."""
    if dtype not in DTYPES:
        raise ValueError(f"safetensors dtype {dtype!r} is not one of {sorted(DTYPES)}")
    code, itemsize = DTYPES[dtype]
    entries = list(tensors)
    header: dict[str, Any] = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    for name, shape, _ in entries:
        size = int(np.prod(shape, dtype=np.int64)) * itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape, load in entries:
            values = load()
            if tuple(values.shape) != tuple(shape):
                raise ValueError(f"{name}: announced shape {tuple(shape)}, got {tuple(values.shape)}")
            f.write(convert(values, dtype).tobytes())
        f.flush()
        os.fsync(f.fileno())
    return 8 + len(text) + offset
