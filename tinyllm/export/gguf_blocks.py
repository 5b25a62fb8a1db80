"""One weight as the bytes of a GGUF tensor: F32, F16, Q8_0 or Q4_0 (the inverse of ``tinyllm.quant.gguf``).

llama.cpp stores a quantized matrix row by row, each row cut into blocks of 32 weights:

    Q8_0  34 bytes: float16 d, then 32 int8 q                        w = d * q
    Q4_0  18 bytes: float16 d, then 16 bytes, byte j = q_j | q_(j+16) << 4    w = d * (q - 8)

A model we hold quantized may already be in one of these layouts, and then its blocks are
written as they are, without a float round trip (``held_blocks``):

- an ``Int8Weight`` with groups of 32 and float16 scales is Q8_0 (d = scale, q = qweight);
- a ``Q4Weight`` with groups of 32 whose every minimum is exactly -8 d is Q4_0 (d q + m = d (q - 8));
  that is what loading a Q4_0 GGUF gives. ``tinyllm.quantize(model, "q4")`` chooses a free
  minimum per group (GGUF's Q4_1), which Q4_0 cannot hold: such weights are dequantized and
  quantized again.

Anything else is quantized from float32 by ``gguf.quants.quantize``, the NumPy port of
llama.cpp's reference quantizers (bit-exact with ``ggml-quants.c``):

    Q8_0: d = max|w| / 127, q = round(w / d)
    Q4_0: d = w_max / -8 (w_max: the weight of largest magnitude, with its sign), q = min(15, trunc(w / d + 8.5))

A matrix whose rows are not a whole number of 32-weight blocks is written as F16 instead (as
llama.cpp's converter does); 1-D weights (norms) are always F32.

The rows of Q and K are first put in llama.cpp's RoPE order (``half_split_to_interleaved``,
see ``tinyllm.pretrained.gguf``); permuting whole rows moves their blocks unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import get_backend
from ..nn.rotary import half_split_to_interleaved
from ..quant.int8 import Int8Weight
from ..quant.q4 import Q4Weight
from ..quant.weight import QuantizedWeight
from .weights import as_float

BLOCK_SIZE = 32
GGUF_TYPES = ("F32", "F16", "Q8_0", "Q4_0")


def held_blocks(weight: QuantizedWeight, type_name: str, heads: int | None) -> np.ndarray | None:
    """The GGUF bytes (out, bytes per row) of a quantized weight already in ``type_name``'s layout, else None."""
    if weight.group_size != BLOCK_SIZE:
        return None
    host = {name: np.asarray(get_backend().to_host(a)) for name, a in weight.arrays().items()}
    if heads is not None:
        host = {name: half_split_to_interleaved(a, heads) for name, a in host.items()}
    host = {name: np.ascontiguousarray(a) for name, a in host.items()}
    out_features, in_features = weight.shape
    n_blocks = in_features // BLOCK_SIZE
    if type_name == "Q8_0" and isinstance(weight, Int8Weight) and host["scales"].dtype == np.float16:
        blocks = np.empty((out_features, n_blocks, 2 + BLOCK_SIZE), dtype=np.uint8)
        blocks[:, :, :2] = host["scales"].reshape(out_features, n_blocks, 1).view(np.uint8)
        blocks[:, :, 2:] = host["qweight"].view(np.uint8).reshape(out_features, n_blocks, BLOCK_SIZE)
        return blocks.reshape(out_features, -1)
    if type_name == "Q4_0" and isinstance(weight, Q4Weight):
        scales, mins = host["scales"].astype(np.float16), host["mins"].astype(np.float16)
        if not np.array_equal(mins.view(np.uint16), (scales * np.float16(-8)).view(np.uint16)):
            return None  # a free minimum per group (Q4_1-like): not Q4_0
        blocks = np.empty((out_features, n_blocks, 2 + BLOCK_SIZE // 2), dtype=np.uint8)
        blocks[:, :, :2] = scales.reshape(out_features, n_blocks, 1).view(np.uint8)
        blocks[:, :, 2:] = host["packed"].reshape(out_features, n_blocks, BLOCK_SIZE // 2)
        return blocks.reshape(out_features, -1)
    return None


def tensor_type(shape: tuple[int, ...], dtype: str) -> str:
    """The GGUF type one weight is written as, for an export in ``dtype`` ("f32", "f16", "q8_0", "q4_0")."""
    if len(shape) == 1 or dtype == "f32":
        return "F32"
    if dtype == "f16" or shape[-1] % BLOCK_SIZE:
        return "F16"
    return dtype.upper()


def tensor_bytes(value: Any, type_name: str, heads: int | None) -> tuple[np.ndarray, bool]:
    """``(array to write, taken as held)``: float32/float16 values, or the uint8 blocks of a quantized type.

    ``heads``: for Q and K, the number of heads whose rows go into llama.cpp's RoPE order.
    """
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if isinstance(value, QuantizedWeight) and type_name in ("Q8_0", "Q4_0"):
        blocks = held_blocks(value, type_name, heads)
        if blocks is not None:
            return blocks, True
    values = as_float(value)
    if heads is not None:
        values = half_split_to_interleaved(values, heads)
    if type_name == "F32":
        return np.ascontiguousarray(values, dtype=np.float32), False
    if type_name == "F16":
        return np.ascontiguousarray(values.astype(np.float16)), False
    return quantize(np.ascontiguousarray(values, dtype=np.float32), GGMLQuantizationType[type_name]), False
