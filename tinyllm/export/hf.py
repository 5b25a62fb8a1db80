"""``save_pretrained``: a tinyllm model as a Hugging Face model directory that transformers loads.

    >>> import tinyllm as tl
    >>> from tinyllm.models import ModelConfig, Transformer
    >>> from tinyllm.tokenizer import BPETokenizer
    >>> model = Transformer(ModelConfig(vocab_size=300, dim=32, n_layers=1, n_heads=2))
    >>> tokenizer = BPETokenizer.train("to be or not to be " * 20, vocab_size=300)
    >>> path = save_pretrained(model, tokenizer, "tiny-hf")
    >>> sorted(p.name for p in path.iterdir())
    ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']
    >>> reloaded, _ = tl.load_pretrained("tiny-hf")

What it writes (transformers then runs ``AutoModelForCausalLM.from_pretrained(path)``)::

    config.json              LlamaForCausalLM, or Qwen3ForCausalLM for a model with QK-norm:
                             sizes, rope_theta, rms_norm_eps, tie_word_embeddings, bos/eos ids
    model.safetensors        every weight under its Hugging Face name (tinyllm.pretrained.mapping),
                             in float32, float16 or bfloat16; norms too (as transformers saves them)
    generation_config.json   bos/eos ids
    tokenizer.json, tokenizer_config.json   (hf_tokenizer.py), when a tokenizer is given

No tensor needs reordering: Hugging Face and tinyllm both store a Linear weight as
(out_features, in_features) and rotate RoPE pairs the same way (half-split, ``rotate_half``).
A quantized model (``tinyllm.quantize``, or a GGUF loaded with ``keep_quantized=True``) is written
with its weights dequantized: d * q (+ m), exactly the numbers it computes with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..models.config import ModelConfig
from ..nn.module import Module
from ..pretrained.mapping import get_llama_key_mapping
from .hf_tokenizer import tokenizer_config_json, tokenizer_json
from .output import atomic_output
from .safetensors_file import DTYPES, write_safetensors
from .vocab_text import end_of_text_ids
from .weights import ExportError, as_float, check_exportable, model_weights

DTYPE_ALIASES = {"f32": "float32", "fp32": "float32", "f16": "float16", "fp16": "float16", "bf16": "bfloat16"}


def hf_config(config: ModelConfig, dtype: str, special_ids: dict[str, int | None]) -> dict[str, Any]:
    """The ``config.json`` object of a model (Llama, or Qwen3 with QK-norm)."""
    qwen3 = config.qk_norm
    hf: dict[str, Any] = {
        "architectures": ["Qwen3ForCausalLM" if qwen3 else "LlamaForCausalLM"],
        "model_type": "qwen3" if qwen3 else "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_hidden_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,  # older transformers read this ...
        "rope_parameters": {"rope_theta": config.rope_theta, "rope_type": "default"},  # ... and 5.x this
        "tie_word_embeddings": config.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": special_ids["bos"],
        "eos_token_id": special_ids["eos"],
        "torch_dtype": dtype,
        "dtype": dtype,
    }
    if qwen3:
        hf.update({"use_sliding_window": False, "sliding_window": None, "max_window_layers": config.n_layers})
    else:
        hf.update({"mlp_bias": False, "pretraining_tp": 1})
    return hf


def save_pretrained(
    model: Module, tokenizer: Any, directory: str | os.PathLike, dtype: str = "float32", force: bool = False
) -> Path:
    """Write ``model`` (and ``tokenizer``, unless None) as a Hugging Face directory; returns its path.

    ``dtype``: "float32" (bit-exact), "float16" or "bfloat16" (f32/f16/bf16 also accepted).
    ``directory`` must not exist unless ``force=True``; it appears complete or not at all.
    """
    dtype = DTYPE_ALIASES.get(dtype, dtype)
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not supported for a Hugging Face directory: choose one of "
                          f"{sorted(DTYPES)} (quantized formats are for GGUF: save_gguf(..., dtype='q8_0'))")
    config = model.config
    check_exportable(config, "Hugging Face")
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise ExportError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size} "
                          f"embeddings: they do not belong together")
    ours_to_hf = {ours: hf for hf, ours in get_llama_key_mapping(config).items()}
    weights = list(model_weights(model))
    unknown = [name for name, _ in weights if name not in ours_to_hf]
    if unknown:
        raise ExportError(f"no Hugging Face name for {', '.join(unknown)}: not a LLaMA/Qwen3-style parameter")
    tensors = [(ours_to_hf[name], tuple(value.shape), lambda value=value: as_float(value)) for name, value in weights]
    special_ids = {"bos": None, "eos": None, "unk": None}
    files = {}  # the small files, made (and checked) before any weight is written
    if tokenizer is not None:
        special_ids = end_of_text_ids(tokenizer)
        files["tokenizer.json"] = tokenizer_json(tokenizer)
        files["tokenizer_config.json"] = tokenizer_config_json(tokenizer, config.max_seq_len)
    files["config.json"] = hf_config(config, dtype, special_ids)
    files["generation_config.json"] = {"_from_model_config": True, "bos_token_id": special_ids["bos"],
                                       "eos_token_id": special_ids["eos"]}

    with atomic_output(directory, is_dir=True, force=force) as tmp:
        write_safetensors(tmp / "model.safetensors", tensors, dtype)
        for name, data in files.items():
            (tmp / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(directory)

