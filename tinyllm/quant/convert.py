"""``quantize(model, scheme)``: swap a model's float layers for quantized ones, in place.

    >>> import tinyllm as tl
    >>> from tinyllm.models import ModelConfig, Transformer
    >>> model = Transformer(ModelConfig(vocab_size=64, dim=64, n_layers=1, n_heads=2))
    >>> quantize(model, "q4", include_embeddings=True).layers[0].attention.wq
    QuantizedLinear(in_features=64, out_features=64, bias=False, scheme=q4, group_size=32)

What is replaced:

- every ``Linear`` inside the model (attention and feed-forward projections) -> ``QuantizedLinear``;
- with ``include_embeddings=True`` also every ``Embedding`` -> ``QuantizedEmbedding`` and the
  output projection: an untied ``lm_head`` is quantized like any Linear; a tied one (the
  embedding matrix reused as the output projection) becomes a ``QuantizedLinear`` that shares
  the embedding's quantized weight, so the tied matrix is stored once.

Norm weights and biases stay float: they are a few thousand numbers. The float arrays of the
replaced layers are released (unless something else still refers to them).
"""

from __future__ import annotations

from typing import Any

from ..nn.embedding import Embedding
from ..nn.linear import Linear
from ..nn.module import Module
from .embedding import QuantizedEmbedding
from .int8 import Int8Weight
from .linear import QuantizedLinear
from .q4 import Q4Weight
from .weight import QuantizedWeight

SCHEMES = ("int8", "q4")


def quantize_weight(weight: Any, scheme: str, group_size: int | None = 32) -> QuantizedWeight:
    """A float (out, in) matrix as an ``Int8Weight`` or ``Q4Weight``, a scale per ``group_size`` inputs.

    ``group_size=None``: one scale per output row (int8 only; q4 needs groups).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}: choose one of {SCHEMES}")
    data = weight.data if hasattr(weight, "requires_grad") else weight  # a Parameter or a plain array
    if scheme == "int8":
        return Int8Weight.from_float(data, group_size)
    if group_size is None:
        raise ValueError("q4 needs groups (group_size=32, say): one scale per row is for int8 only")
    return Q4Weight.from_float(data, group_size)


def quantize(model: Module, scheme: str = "int8", group_size: int | None = 32,
             include_embeddings: bool = False) -> Module:
    """Replace the model's Linear layers (and optionally embeddings and output projection) by quantized ones.

    In place; returns the model. The quantized weights are frozen (see ``QuantizedLinear``); LoRA can train on them.
    ``scheme``: "int8" (symmetric) or "q4" (4-bit with a scale and a minimum), each with one scale
    per ``group_size`` consecutive inputs of a row (32: llama.cpp's Q8_0 and Q4_1 blocks).
    ``group_size=None`` gives int8 one scale per output row: slightly smaller and faster, less exact.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}: choose one of {SCHEMES}")
    replacements = []  # (parent, attribute name, float module); collected first, then swapped
    for _, parent in model.named_modules():
        for name, child in parent._modules.items():
            if isinstance(child, Linear) and (include_embeddings or name != "lm_head"):
                replacements.append((parent, name, child))
            elif isinstance(child, Embedding) and include_embeddings:
                replacements.append((parent, name, child))
    for parent, name, child in replacements:
        if isinstance(child, Linear):
            replace_module(parent, name, QuantizedLinear.from_linear(child, scheme, group_size))
        else:
            replace_module(parent, name, QuantizedEmbedding(quantize_weight(child.weight, scheme, group_size)))
    tie_output_projection(model)
    return model


def replace_module(parent: Module, name: str, module: Module) -> None:
    """``setattr(parent, name, module)``, keeping the child's place in the registration order.

    (``Module.__setattr__`` re-registers a name at the end, which would move, say, the token
    table after the layers in ``named_modules()`` and ``state_dict()``.)
    """
    if name in parent._modules:
        parent._modules[name] = module  # same key: a dict keeps its position
        object.__setattr__(parent, name, module)
    else:
        setattr(parent, name, module)


def tie_output_projection(model: Module) -> None:
    """A tied Transformer whose token table is quantized gets ``lm_head`` sharing that table's quantized weight.

    ``Transformer.forward`` computes ``x @ E^T`` from ``tok_embeddings.weight`` when ``lm_head`` is
    None, which needs a float E; a ``QuantizedLinear`` over the same ``QuantizedWeight`` computes
    the same logits a block at a time, and stores nothing twice.
    """
    config = getattr(model, "config", None)
    embeddings = getattr(model, "tok_embeddings", None)
    if config is not None and config.tie_embeddings and isinstance(embeddings, QuantizedEmbedding):
        replace_module(model, "lm_head", QuantizedLinear(embeddings.weight))


def weight_bytes(model: Module) -> int:
    """Bytes of every weight the model holds: float parameters plus quantized arrays, each counted once.

    Buffers (RoPE tables) and the KV cache are not weights and are not counted.
    """
    seen: set[int] = set()
    total = 0
    for _, module in model.named_modules():
        arrays = [p.data for p in module._parameters.values() if p is not None]
        weight = getattr(module, "weight", None)
        if isinstance(weight, QuantizedWeight):
            arrays += weight.held_arrays()
        for array in arrays:
            if id(array) not in seen:
                seen.add(id(array))
                total += int(array.nbytes)
    return total
