"""``save_gguf``: a tinyllm model as one GGUF file that llama.cpp (and Ollama, LM Studio) run.

    >>> import tinyllm as tl
    >>> from tinyllm.models import ModelConfig, Transformer
    >>> from tinyllm.tokenizer import BPETokenizer
    >>> tokenizer = BPETokenizer.train("to be or not to be " * 20, vocab_size=300)
    >>> model = Transformer(ModelConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1, n_heads=2))
    >>> save_gguf(model, tokenizer, "tiny.gguf", dtype="q8_0").name
    'tiny.gguf'
    >>> reloaded, _ = tl.load_pretrained("tiny.gguf")

The file, written with the ``gguf`` package's ``GGUFWriter`` (llama.cpp's own Python writer)::

    general.architecture = "llama", general.name, general.file_type (0 f32, 1 f16, 7 q8_0, 2 q4_0)
    llama.block_count, llama.context_length, llama.embedding_length, llama.feed_forward_length,
    llama.attention.head_count, llama.attention.head_count_kv, llama.attention.key_length,
    llama.attention.value_length, llama.rope.dimension_count, llama.rope.freq_base,
    llama.attention.layer_norm_rms_epsilon, llama.vocab_size
    tokenizer.ggml.*            (gguf_tokenizer.py)
    tensors                     token_embd.weight, blk.{i}.attn_q.weight, ..., output_norm.weight,
                                output.weight only when the output is not tied to the token table

with the rows of every Q and K projection in llama.cpp's RoPE order (gguf_blocks.py). The tensor
types follow ``dtype`` (gguf_blocks.py): "f32" writes every weight as F32 (a bit-exact copy), "f16"
the matrices as F16, "q8_0" / "q4_0" the matrices in 32-weight blocks, taking the blocks the
model already holds when they are in that layout; norms stay F32 in every case.

The file is written tensor by tensor (one converted tensor in memory at a time) under a
temporary name, then renamed (output.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_VERSION, GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf.quants import quant_shape_to_byte_shape

from ..nn.module import Module
from ..pretrained.gguf import tinyllm_to_gguf_name
from .gguf_blocks import tensor_bytes, tensor_type
from .gguf_tokenizer import add_tokenizer_metadata, pre_tokenizer_name
from .output import atomic_output
from .weights import ExportError, check_exportable, model_weights

logger = logging.getLogger(__name__)

DTYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0"}  # -> LlamaFileType
ARCHITECTURE = "llama"


def save_gguf(
    model: Module, tokenizer: Any, path: str | os.PathLike, dtype: str = "f32", force: bool = False,
    name: str | None = None,
) -> Path:
    """Write ``model`` (and ``tokenizer``, unless None) as a GGUF file for llama.cpp; returns its path.

    ``dtype``: "f32", "f16", "q8_0" or "q4_0" (see the module docstring). ``path`` must not exist
    unless ``force=True``; it appears complete or not at all. ``name``: ``general.name``
    (default: the model's recorded name, else the file name).
    """
    dtype = dtype.lower()
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not supported for GGUF: choose one of {sorted(DTYPES)}")
    config = model.config
    check_exportable(config, "GGUF")
    if tokenizer is not None:
        if tokenizer.vocab_size != config.vocab_size:
            raise ExportError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but the model {config.vocab_size} embeddings; "
                f"llama.cpp needs exactly one token per row of token_embd"
            )
        pre_tokenizer_name(tokenizer)  # an inexpressible tokenizer fails here, before anything is written
    path = Path(path)
    heads = {"attention.wq.weight": config.n_heads, "attention.wk.weight": config.n_kv_heads}

    writer = GGUFWriter(None, ARCHITECTURE)
    writer.add_type("model")
    writer.add_name(name or (config.extra or {}).get("name") or path.stem)
    writer.add_file_type(int(LlamaFileType[DTYPES[dtype]]))
    if dtype in ("q8_0", "q4_0"):
        writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.dim)
    writer.add_feed_forward_length(config.ffn_hidden_dim)
    writer.add_block_count(config.n_layers)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(float(config.rope_theta))
    writer.add_layer_norm_rms_eps(float(config.norm_eps))
    if tokenizer is not None:
        add_tokenizer_metadata(writer, tokenizer)

    plan = []  # (gguf name, value, type name, heads for the RoPE row order)
    for ours, value in model_weights(model):
        gguf_name = tinyllm_to_gguf_name(ours)
        if gguf_name is None:
            raise ExportError(f"no GGUF name for {ours}: not a parameter of a llama model")
        row_heads = next((h for suffix, h in heads.items() if ours.endswith(suffix)), None)
        plan.append((gguf_name, value, tensor_type(tuple(value.shape), dtype), row_heads))
    for gguf_name, value, type_name, _ in plan:
        shape = tuple(int(n) for n in value.shape)
        if type_name in ("Q8_0", "Q4_0"):
            byte_shape = quant_shape_to_byte_shape(shape, GGMLQuantizationType[type_name])
            nbytes = byte_shape[0] * byte_shape[1]
            writer.add_tensor_info(gguf_name, byte_shape, np.dtype(np.uint8), nbytes,
                                   raw_dtype=GGMLQuantizationType[type_name])
        else:
            float_dtype = np.dtype(np.float32 if type_name == "F32" else np.float16)
            writer.add_tensor_info(gguf_name, shape, float_dtype, int(np.prod(shape)) * float_dtype.itemsize)

    held, converted, widened = [], [], []
    with atomic_output(path, is_dir=False, force=force) as tmp:
        try:
            writer.write_header_to_file(tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for gguf_name, value, type_name, row_heads in plan:
                data, was_held = tensor_bytes(value, type_name, row_heads)
                writer.write_tensor_data(data)
                if was_held:
                    held.append(gguf_name)
                elif hasattr(value, "dequantize") and type_name in ("Q8_0", "Q4_0"):
                    converted.append(f"{gguf_name} ({value.scheme}, group {value.group_size} -> {type_name})")
                if type_name == "F16" and dtype in ("q8_0", "q4_0"):
                    widened.append(gguf_name)
        finally:
            writer.close()
    if held:
        logger.info("%s: %d tensor(s) written from the blocks the model holds", path, len(held))
    if converted:
        logger.warning("%s: %d quantized tensor(s) not in the %s layout were dequantized and quantized again "
                       "(a second rounding): %s", path, len(converted), dtype, ", ".join(converted))
    if widened:
        logger.warning("%s: rows not a multiple of 32, written as F16: %s", path, ", ".join(widened))
    return path

