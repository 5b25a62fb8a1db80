"""What an exported file holds: the model's weights by tinyllm name, float or still quantized.

Both targets (Hugging Face directories and GGUF files) describe one architecture: a LLaMA-style
decoder (RMSNorm, SwiGLU, RoPE, no biases), optionally with Qwen3's per-head QK-norm. A model
built with other options (LayerNorm, GELU, learned positions, biases) has weights neither
``LlamaForCausalLM`` nor llama.cpp's ``llama`` graph would run, so ``check_exportable`` refuses
it before anything is written, naming the option.

``model_weights(model)`` walks the model in parameter order and yields each weight once:

    tok_embeddings.weight                (vocab_size, dim)    float32 array or QuantizedWeight
    layers.0.attention_norm.weight       (dim,)               float32 array
    layers.0.attention.wq.weight         (n_heads * head_dim, dim)
    ...
    norm.weight                          (dim,)
    lm_head.weight                       (vocab_size, dim)    only when the output is not tied

A weight that ``tinyllm.quantize`` (or a GGUF loaded with ``keep_quantized=True``) replaced is
yielded as its ``QuantizedWeight``, so a quantized export can write the blocks as they are; a
float target calls ``as_float`` on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..backends import get_backend
from ..models.config import ModelConfig
from ..nn.module import Module
from ..quant.weight import QuantizedWeight


class ExportError(ValueError):
    """A model, tokenizer, dtype or output path that cannot be exported as asked; the message says why and what to do."""


def check_exportable(config: ModelConfig, target: str) -> None:
    """Raise ``ExportError`` if ``config`` is not a model ``target`` ("Hugging Face" or "GGUF") can describe.

    >>> try:
    ...     check_exportable(ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, mlp="gelu"), "GGUF")
    ... except ExportError as error:
    ...     print(str(error)[:68])
    cannot export to GGUF: mlp='gelu' (LLaMA-style models use 'swiglu').
    """
    wanted = {"norm": "rmsnorm", "mlp": "swiglu", "positions": "rope", "bias": False}
    problems = [
        f"{name}={getattr(config, name)!r} (LLaMA-style models use {value!r})"
        for name, value in wanted.items()
        if getattr(config, name) != value
    ]
    if config.qk_norm and target == "GGUF":
        problems.append("qk_norm=True (a Qwen3-style model: tinyllm writes GGUF for the 'llama' architecture only; "
                        "export it with format 'hf', as Qwen3ForCausalLM)")
    if problems:
        raise ExportError(
            f"cannot export to {target}: {'; '.join(problems)}. Only LLaMA-style models (RMSNorm, SwiGLU, RoPE, "
            f"no biases) have a {target} form that transformers and llama.cpp run."
        )


def model_weights(model: Module) -> Iterator[tuple[str, Any]]:
    """(tinyllm name, float32 NumPy array or ``QuantizedWeight``) for every weight a file stores, each once.

    The tied output projection (the token table reused) is not yielded: files store it once, as
    the token table.
    """
    config = model.config
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        weight = getattr(module, "weight", None)
        if isinstance(weight, QuantizedWeight):
            if id(weight) not in seen:  # a tied lm_head shares the token table's QuantizedWeight
                seen.add(id(weight))
                if not (config.tie_embeddings and prefix == "lm_head."):
                    yield f"{prefix}weight", weight
        for name, param in module._parameters.items():
            if param is None or id(param) in seen:
                continue
            seen.add(id(param))
            yield f"{prefix}{name}", np.asarray(get_backend().to_host(param.data), dtype=np.float32)


def as_float(value: Any) -> np.ndarray:
    """A weight as a float32 NumPy array: a ``QuantizedWeight`` is dequantized (exactly, d * q (+ m))."""
    if isinstance(value, QuantizedWeight):
        return np.asarray(get_backend().to_host(value.dequantize(np.float32)), dtype=np.float32)
    return value
