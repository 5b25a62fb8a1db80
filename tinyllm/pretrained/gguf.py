"""GGUF files (llama.cpp's format) -> ``ModelConfig`` and float32 weights with tinyllm's names.

A GGUF file holds, in order: metadata (key -> value: ``general.architecture = "llama"``,
``llama.block_count = 30``, the tokenizer's vocabulary and merges, the chat template, ...),
a table of tensors (name, type, shape, offset), and the tensor bytes. We read it with the
``gguf`` package's ``GGUFReader``, which maps the file into memory: a tensor's bytes are read
only when it is dequantized.

Quantized tensors are stored in blocks of 32 values. Q8_0: one float16 scale d and 32 int8
values q, x = d * q. Q4_0: d and 32 4-bit values, x = d * (q - 8). Q4_1: d, a float16 offset
m and 32 4-bit values, x = d * q + m. ``gguf.quants.dequantize`` turns each into float32,
in the (out_features, in_features) layout of Hugging Face and tinyllm.

Names (llama.cpp's ``tensor_mapping.py``)::

    token_embd.weight          tok_embeddings.weight
    blk.{i}.attn_norm.weight   layers.{i}.attention_norm.weight
    blk.{i}.attn_q.weight      layers.{i}.attention.wq.weight      (rows un-permuted, see below)
    blk.{i}.attn_k.weight      layers.{i}.attention.wk.weight      (rows un-permuted)
    blk.{i}.attn_v.weight      layers.{i}.attention.wv.weight
    blk.{i}.attn_output.weight layers.{i}.attention.wo.weight
    blk.{i}.ffn_norm.weight    layers.{i}.ffn_norm.weight
    blk.{i}.ffn_gate.weight    layers.{i}.feed_forward.w_gate.weight
    blk.{i}.ffn_up.weight      layers.{i}.feed_forward.w_up.weight
    blk.{i}.ffn_down.weight    layers.{i}.feed_forward.w_down.weight
    output_norm.weight         norm.weight
    output.weight              lm_head.weight      (absent: the output is tied to token_embd)
"""

from __future__ import annotations

import os
import re
import struct
from typing import Any

import numpy as np

from ..models.config import ModelConfig
from ..nn.rotary import interleaved_to_half_split
from .tensors import LazyTensor

GGUF_MAGIC = b"GGUF"

# The types tinyllm dequantizes (and tests). gguf.quants knows more (K-quants, IQ...), untested here.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")

_GLOBAL_NAMES = {"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight",
                 "output.weight": "lm_head.weight"}
_LAYER_NAMES = {
    "attn_norm.weight": "attention_norm.weight",
    "attn_q.weight": "attention.wq.weight",
    "attn_k.weight": "attention.wk.weight",
    "attn_v.weight": "attention.wv.weight",
    "attn_output.weight": "attention.wo.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "ffn_gate.weight": "feed_forward.w_gate.weight",
    "ffn_up.weight": "feed_forward.w_up.weight",
    "ffn_down.weight": "feed_forward.w_down.weight",
}


def gguf_to_tinyllm_name(name: str) -> str | None:
    """tinyllm's parameter name for a GGUF tensor name, or None if tinyllm has no such parameter.

    >>> gguf_to_tinyllm_name("blk.3.attn_q.weight")
    'layers.3.attention.wq.weight'
    """
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    return None


def tinyllm_to_gguf_name(name: str) -> str | None:
    """The GGUF tensor name of a tinyllm parameter (the inverse of ``gguf_to_tinyllm_name``), or None.

    >>> tinyllm_to_gguf_name("layers.3.attention.wq.weight")
    'blk.3.attn_q.weight'
    """
    for gguf_name, ours in _GLOBAL_NAMES.items():
        if name == ours:
            return gguf_name
    match = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
    if match:
        for gguf_name, ours in _LAYER_NAMES.items():
            if match.group(2) == ours:
                return f"blk.{match.group(1)}.{gguf_name}"
    return None


def open_gguf(path: str | os.PathLike) -> Any:
    """A ``gguf.GGUFReader`` for ``path`` (the file is memory-mapped, not read)."""
    from gguf import GGUFReader

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file: it starts with {magic!r}, not {GGUF_MAGIC!r}")
    try:
        reader = GGUFReader(path, "r")
    except (ValueError, IndexError, KeyError, OverflowError, struct.error, UnicodeDecodeError) as error:
        # The reader maps the file and slices it at the offsets its header gives: a short file fails deep inside it.
        raise ValueError(
            f"{path} is truncated or damaged: the gguf reader failed on it ({type(error).__name__}: {error}); "
            f"download or convert it again"
        ) from None
    size = os.path.getsize(path)
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size:
            raise ValueError(f"{path} is truncated: tensor {tensor.name} ends at byte {end}, the file has {size} bytes; "
                             f"download or convert it again")
    return reader


def metadata_value(reader: Any, key: str, default: Any = None) -> Any:
    """One scalar or string metadata value of a GGUF file, or ``default`` if the key is absent."""
    from gguf import GGUFValueType

    field = reader.fields.get(key)
    if field is None:
        return default
    vtype = field.types[0]
    if vtype == GGUFValueType.ARRAY:
        raise ValueError(f"GGUF metadata {key!r} is an array, expected a single value")
    part = field.parts[field.data[0]]
    if vtype == GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    return part[0].item()


def config_from_gguf(reader: Any) -> ModelConfig:
    """Build the ``ModelConfig`` from the ``llama.*`` metadata; other architectures raise, naming what was found."""
    architecture = metadata_value(reader, "general.architecture")
    if architecture != "llama":
        raise NotImplementedError(
            f"GGUF architecture {architecture!r} is not supported: tinyllm loads general.architecture == 'llama' "
            f"(LLaMA, SmolLM, Mistral-style models converted by llama.cpp)"
        )

    def get(key: str, default: Any = None) -> Any:
        value = metadata_value(reader, f"llama.{key}", default)
        if value is None:
            raise ValueError(f"the GGUF file has no 'llama.{key}', which tinyllm needs to build the model")
        return value

    n_heads = int(get("attention.head_count"))
    dim = int(get("embedding_length"))
    head_dim = int(get("attention.key_length", dim // n_heads))
    if int(get("rope.dimension_count", head_dim)) != head_dim:
        raise NotImplementedError(
            f"partial RoPE (rope.dimension_count={get('rope.dimension_count')} < head_dim={head_dim}) is not supported"
        )
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}  # ggml: innermost first
    scaling = metadata_value(reader, "llama.rope.scaling.type", "none")
    if scaling not in ("none", None) or "rope_freqs.weight" in shapes:
        raise NotImplementedError(f"RoPE scaling ({scaling!r} or rope_freqs.weight) is not supported, only plain RoPE")
    if "token_embd.weight" not in shapes:
        raise ValueError("the GGUF file has no token_embd.weight: not a complete llama model")
    return ModelConfig(
        vocab_size=int(get("vocab_size", shapes["token_embd.weight"][0])),
        dim=dim,
        n_layers=int(get("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(get("attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        ffn_hidden_dim=int(get("feed_forward_length")),
        max_seq_len=int(get("context_length", 2048)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="output.weight" not in shapes,
        extra={"source": "gguf", "name": metadata_value(reader, "general.name")},
    )


def _dequantize(tensor: Any) -> np.ndarray:
    """The float32 values of one GGUF tensor, shape (out_features, in_features) for a matrix."""
    from gguf.quants import dequantize

    values = dequantize(tensor.data, tensor.tensor_type)
    shape = tuple(int(n) for n in reversed(tensor.shape))  # ggml lists dimensions innermost first
    return np.asarray(values, dtype=np.float32).reshape(shape)


def gguf_lazy_tensors(reader: Any, config: ModelConfig, unpermute_qk: bool = True) -> dict[str, LazyTensor]:
    """tinyllm name -> ``LazyTensor`` (float32 when loaded) for every tensor of a GGUF file.

    Tensors tinyllm has no name for keep their GGUF name, so that a loader reports them.
    ``unpermute_qk=False`` keeps llama.cpp's row order of Q and K, which is wrong for
    tinyllm's RoPE; it exists so that a test can show what that error does.
    """
    unsupported = [f"{t.name} ({t.tensor_type.name})" for t in reader.tensors if t.tensor_type.name not in SUPPORTED_TYPES]
    if unsupported:
        raise NotImplementedError(
            f"GGUF tensor type not supported: {', '.join(unsupported[:3])}"
            f"{f' and {len(unsupported) - 3} more' if len(unsupported) > 3 else ''}; "
            f"tinyllm dequantizes {', '.join(SUPPORTED_TYPES)}"
        )
    tensors = {}
    for tensor in reader.tensors:
        shape = tuple(int(n) for n in reversed(tensor.shape))  # ggml lists dimensions innermost first
        name = gguf_to_tinyllm_name(tensor.name) or tensor.name

        # llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute) reorders the rows of
        # every Q and K projection, head by head: Hugging Face pairs feature i of a head with feature
        # i + head_dim/2 for RoPE ("half-split", rotate_half), llama.cpp rotates consecutive features
        # 2i, 2i+1 ("interleaved"), so the converter moves row i + head_dim/2 next to row i. tinyllm's
        # RotaryEmbedding is half-split, so we undo that move. Without it the model still runs and
        # even answers easy prompts, but attention sees positions wrongly: SmolLM2's perplexity on
        # an ordinary English passage goes from 16.6 to 76. K has n_kv_heads heads (fewer than Q with GQA).
        heads = None
        if name.endswith("attention.wq.weight"):
            heads = config.n_heads
        elif name.endswith("attention.wk.weight"):
            heads = config.n_kv_heads

        def load(tensor: Any = tensor, heads: int | None = heads) -> np.ndarray:
            weight = _dequantize(tensor)
            if heads is not None and unpermute_qk:
                weight = interleaved_to_half_split(weight, heads)
            return weight

        tensors[name] = LazyTensor(shape, tensor.tensor_type.name, load)
    return tensors
