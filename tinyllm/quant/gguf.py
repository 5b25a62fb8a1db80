"""GGUF Q8_0, Q4_0 and Q4_1 tensors loaded straight into quantized layers, with no float32 round trip.

llama.cpp stores a quantized matrix row by row, each row cut into blocks of 32 weights:

    Q8_0  34 bytes: float16 d, then 32 int8 q                      w = d * q
    Q4_0  18 bytes: float16 d, then 16 bytes of 4-bit q            w = d * (q - 8)
    Q4_1  20 bytes: float16 d, float16 m, then 16 bytes of 4-bit q  w = d * q + m

with, in the 4-bit blocks, byte j holding q_j (low nibble) and q_{j+16} (high nibble). These are
the layouts of ``Int8Weight`` with group_size 32 and of ``Q4Weight``, so the bytes are only
split into their arrays: d -> scales, q -> qweight / packed, m -> mins (Q4_0: m = -8d, exact).
The values a loaded layer computes with are exactly those of ``gguf.quants.dequantize``.

Tensors of other types (F32, F16, BF16 matrices, K-quants) have no such layout: they are
dequantized to float32 and, for matrices, quantized with ``fallback_scheme``; a warning names
each of them. Norm weights (1-D, F32) stay float32.

Names, the model config and the tokenizer come from ``tinyllm.pretrained.gguf`` and
``tinyllm.tokenizer``, as for the float32 loader. As there, the rows of Q and K are put back
from llama.cpp's RoPE order to tinyllm's; permuting whole rows moves their blocks unchanged.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ..backends import get_backend
from ..models.transformer import Transformer
from ..nn.rotary import interleaved_to_half_split
from ..pretrained.gguf import config_from_gguf, gguf_to_tinyllm_name, open_gguf
from .assemble import assemble_transformer
from .convert import quantize_weight
from .int8 import Int8Weight
from .q4 import Q4Weight
from .weight import QuantizedWeight

logger = logging.getLogger(__name__)

BLOCK_SIZE = 32  # weights per block in Q8_0, Q4_0 and Q4_1
DIRECT_TYPES = ("Q8_0", "Q4_0", "Q4_1")


def _split_blocks(raw: np.ndarray, out_features: int, in_features: int, block_bytes: int) -> np.ndarray:
    """Raw bytes (out, in/32 * block_bytes) -> (out, in/32, block_bytes), one row per block."""
    if in_features % BLOCK_SIZE:
        raise ValueError(f"a row of {in_features} weights is not a whole number of {BLOCK_SIZE}-weight blocks")
    return np.ascontiguousarray(raw).reshape(out_features, in_features // BLOCK_SIZE, block_bytes)


def _float16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 stored at bytes start:start+2 of every block: (out, n_blocks)."""
    return np.ascontiguousarray(blocks[:, :, start : start + 2]).view(np.float16)[:, :, 0]


def weight_from_blocks(raw: np.ndarray, type_name: str, shape: tuple[int, int]) -> QuantizedWeight:
    """A Q8_0 / Q4_0 / Q4_1 tensor's bytes as an ``Int8Weight`` or ``Q4Weight`` of ``shape`` (out, in).

    ``raw``: the tensor's bytes, (out, bytes per row) as ``GGUFReader`` maps them.
    """
    out_features, in_features = shape
    if type_name == "Q8_0":
        blocks = _split_blocks(raw, out_features, in_features, 2 + BLOCK_SIZE)
        q = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).reshape(out_features, in_features)
        return Int8Weight(q, _float16(blocks, 0))
    if type_name == "Q4_1":
        blocks = _split_blocks(raw, out_features, in_features, 4 + BLOCK_SIZE // 2)
        packed = blocks[:, :, 4:].reshape(out_features, in_features // 2)
        return Q4Weight(packed, _float16(blocks, 0), _float16(blocks, 2))
    if type_name == "Q4_0":
        blocks = _split_blocks(raw, out_features, in_features, 2 + BLOCK_SIZE // 2)
        packed = blocks[:, :, 2:].reshape(out_features, in_features // 2)
        scales = _float16(blocks, 0)
        return Q4Weight(packed, scales, (scales * np.float16(-8)))  # d (q - 8) = d q + (-8 d)
    raise ValueError(f"GGUF type {type_name} has no direct quantized layout (direct: {DIRECT_TYPES})")


def _permute_rows(weight: QuantizedWeight, n_heads: int) -> QuantizedWeight:
    """Undo llama.cpp's Q/K row order on every array of a quantized weight (rows move whole)."""
    arrays = {name: interleaved_to_half_split(get_backend().to_host(a), n_heads) for name, a in weight.arrays().items()}
    return type(weight)(**arrays)


def load_gguf_quantized(path: str | os.PathLike, max_seq_len: int | None = None,
                        fallback_scheme: str | None = "int8") -> tuple[Transformer, Any]:
    """``(model, tokenizer)`` from a GGUF file, its Q8_0/Q4_0/Q4_1 matrices kept quantized as stored.

    ``fallback_scheme``: how to store matrices of other types once dequantized ("int8", "q4",
    or None to keep them float32). The model is in eval mode; the tokenizer is None if the file has none.

    >>> from tinyllm.pretrained import find_smollm2
    >>> model, tokenizer = load_gguf_quantized(find_smollm2())    # doctest: +SKIP
    >>> model.layers[0].attention.wq.weight                        # doctest: +SKIP
    Q4Weight(shape=(576, 576), group_size=32, 207,360 bytes = 0.156x float32)
    """
    from gguf.quants import dequantize

    from ..tokenizer.pretrained import from_gguf

    reader = open_gguf(path)
    config = config_from_gguf(reader)
    if max_seq_len is not None:
        config.max_seq_len = min(config.max_seq_len, int(max_seq_len))
    tokenizer = from_gguf(reader) if "tokenizer.ggml.model" in reader.fields else None
    tensors = {gguf_to_tinyllm_name(t.name) or t.name: t for t in reader.tensors}
    del reader  # frees its metadata (~100k small objects for SmolLM2); the tensors keep the file mapping
    row_heads = {"attention.wq.weight": config.n_heads, "attention.wk.weight": config.n_kv_heads}
    used, converted = set(), []

    def load(name: str) -> Any:
        if name not in tensors:
            raise ValueError(f"{path} has no tensor for {name}")
        used.add(name)
        tensor = tensors[name]
        shape = tuple(int(n) for n in reversed(tensor.shape))  # ggml lists dimensions innermost first
        kind = tensor.tensor_type.name
        heads = next((h for suffix, h in row_heads.items() if name.endswith(suffix)), None)
        if kind in DIRECT_TYPES and len(shape) == 2:
            weight = weight_from_blocks(tensor.data, kind, shape)
            return _permute_rows(weight, heads) if heads else weight
        values = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32).reshape(shape)
        if heads:
            values = interleaved_to_half_split(values, heads)
        if len(shape) == 2 and fallback_scheme is not None:
            converted.append(f"{tensor.name} ({kind})")
            # groups of BLOCK_SIZE, as the GGUF blocks have, unless the rows do not split into
            # them (int8 then takes one scale per row; q4 says it needs groups)
            group_size = BLOCK_SIZE if shape[1] % BLOCK_SIZE == 0 or fallback_scheme != "int8" else None
            return quantize_weight(values, fallback_scheme, group_size)
        if len(shape) == 2:
            converted.append(f"{tensor.name} ({kind}, kept float32)")
        return values

    model = assemble_transformer(config, load)
    if converted:
        logger.warning("%s: %d tensor(s) have no direct quantized layout and were dequantized to float32%s: %s",
                       path, len(converted), f", then quantized to {fallback_scheme}" if fallback_scheme else "",
                       ", ".join(converted))
    unused = sorted(set(tensors) - used)
    if unused:
        raise ValueError(f"{path}: tensors the model has no place for: {', '.join(unused)}")
    return model, tokenizer
