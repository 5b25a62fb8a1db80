"""Reading checkpoint tensors one at a time: ``LazyTensor`` and a small safetensors reader.

A 135M-parameter model is 538 MB in float32. Reading every tensor of a file into a dict
and then copying the dict into the model would hold two copies at once. Instead each
tensor is described by a ``LazyTensor`` (its shape, known from the file's header without
reading the data, and a function that reads it), so a loader can first check every name
and shape, then materialise one tensor, copy it into the model, and drop it.

safetensors files (https://huggingface.co/docs/safetensors) are simple enough to read
with NumPy directly::

    8 bytes          N, the header length (little-endian uint64)
    N bytes          JSON: {"name": {"dtype": "BF16", "shape": [576, 576], "data_offsets": [begin, end]}, ...,
                            "__metadata__": {...} (optional)}
    the rest         the raw tensor bytes; offsets count from the end of the header

Reading them here, rather than through the ``safetensors`` package, lets ``np.memmap`` map
the file (nothing is read until a tensor is used) and handles BF16, which NumPy has no
dtype for: a bfloat16 is the top 16 bits of a float32, so shifting it left by 16 bits
gives the float32 exactly.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..autograd import Tensor


@dataclass
class LazyTensor:
    """A tensor not read yet: ``shape`` and ``dtype`` come from the file's header, ``load()`` reads it as float32."""

    shape: tuple[int, ...]
    dtype: str  # as the file names it: "BF16", "Q4_1", "float32", ...
    load: Callable[[], np.ndarray]


# safetensors dtype name -> NumPy dtype of the stored bytes
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 values, given as their uint16 bit patterns, to float32 (exactly).

    >>> bf16_to_float32(np.array([0x3F80, 0xC000], dtype=np.uint16)).tolist()   # 1.0, -2.0
    [1.0, -2.0]
    """
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_safetensors_header(path: str | Path) -> tuple[dict[str, dict], int]:
    """The JSON header of a safetensors file (without ``__metadata__``) and the offset where the data starts."""
    path = Path(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is too short to be a safetensors file ({len(prefix)} bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > 100_000_000 or header_len > path.stat().st_size - 8:
            raise ValueError(f"{path} is not a safetensors file (its first 8 bytes give a header of {header_len} bytes)")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not a safetensors file: its header is not JSON ({error})") from None
    header.pop("__metadata__", None)
    return header, 8 + header_len


def safetensors_lazy_tensors(path: str | Path) -> dict[str, LazyTensor]:
    """Name -> ``LazyTensor`` for every tensor of one safetensors file (float types only)."""
    path = Path(path)
    header, data_start = read_safetensors_header(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = {}
    for name, info in header.items():
        dtype_name, shape = info["dtype"], tuple(info["shape"])
        if dtype_name not in _SAFETENSORS_DTYPES:
            raise NotImplementedError(
                f"{path}: tensor {name!r} has dtype {dtype_name}; tinyllm reads {sorted(_SAFETENSORS_DTYPES)}"
            )
        begin, end = (data_start + offset for offset in info["data_offsets"])
        expected = int(np.prod(shape)) * np.dtype(_SAFETENSORS_DTYPES[dtype_name]).itemsize
        if end > len(mapped) or end - begin != expected:  # checked here, before a loader copies anything
            raise ValueError(
                f"{path} is truncated or damaged: tensor {name!r} needs bytes {begin}..{end} ({expected} for shape "
                f"{shape} {dtype_name}) but the file has {len(mapped)} bytes; download or save it again"
            )

        def load(begin: int = begin, end: int = end, dtype_name: str = dtype_name, shape: tuple = shape) -> np.ndarray:
            raw = mapped[begin:end].view(_SAFETENSORS_DTYPES[dtype_name]).reshape(shape)
            if dtype_name == "BF16":
                return bf16_to_float32(raw)
            return raw.astype(np.float32)  # a copy: the result never points into the mapped file

        tensors[name] = LazyTensor(shape, dtype_name, load)
    return tensors


def eager_lazy_tensors(state: Mapping[str, Any]) -> dict[str, LazyTensor]:
    """Wrap arrays already in memory (a state dict) as ``LazyTensor``s, so one loader serves both."""
    wrapped = {}
    for name, array in state.items():
        array = array.data if isinstance(array, Tensor) else array  # a Tensor or Parameter: its array
        wrapped[name] = LazyTensor(tuple(array.shape), str(array.dtype), lambda array=array: array)
    return wrapped
