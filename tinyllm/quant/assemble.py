"""Building a Transformer from named weights, some of them quantized, one layer at a time.

``Transformer(config)`` allocates every weight in float32 (and fills it with random numbers)
before anything is loaded: 538 MB for SmolLM2-135M. A quantized model must not pass through
that, or its peak memory would be the float model's. ``assemble_transformer`` instead

1. builds a small shell, ``Transformer`` of the same config with one layer and a one-token
   vocabulary: it supplies the RoPE tables, the final norm and one template block;
2. for each layer, copies the template block and swaps each of its ``Linear`` layers for a
   ``QuantizedLinear`` (or a float ``Linear``) made from the loaded weight, so at most one
   block of float32 (14 MB for SmolLM2) exists at a time;
3. sets the token table (``QuantizedEmbedding`` or float ``Embedding``), the final norm and the
   output projection (tied or not), then the real config.

The weights come from ``load(name)``, called with the parameter names of ``Transformer``
(``layers.3.attention.wq.weight``, ``tok_embeddings.weight``, ...), which returns either a
float array or a ``QuantizedWeight``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from ..backends import get_backend
from ..models.config import ModelConfig
from ..models.transformer import Transformer
from ..nn.embedding import Embedding
from ..nn.init import no_init
from ..nn.linear import Linear
from ..nn.module import Module, ModuleList, Parameter
from .convert import replace_module, tie_output_projection
from .embedding import QuantizedEmbedding
from .linear import QuantizedLinear
from .weight import QuantizedWeight

Loader = Callable[[str], Any]  # parameter name -> float array or QuantizedWeight


def _float_parameter(name: str, value: Any, shape: tuple[int, ...]) -> Parameter:
    if isinstance(value, QuantizedWeight):
        raise ValueError(f"{name}: a quantized weight was given for a parameter that must stay float")
    array = get_backend().asarray(value, dtype="float32")
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{name}: the checkpoint has shape {tuple(array.shape)}, the model expects {tuple(shape)}")
    return Parameter(array)


def _linear_from(name: str, value: Any, bias: Parameter | None, expected: tuple[int, int]) -> Module:
    """A ``QuantizedLinear`` for a quantized weight, else a float ``Linear`` holding the array itself."""
    if isinstance(value, QuantizedWeight):
        if tuple(value.shape) != tuple(expected):
            raise ValueError(f"{name}: the checkpoint has shape {value.shape}, the model expects {tuple(expected)}")
        return QuantizedLinear(value, bias)
    with no_init():
        layer = Linear(1, 1)  # a 1x1 placeholder whose weight is replaced at once
    layer.weight = _float_parameter(name, value, expected)
    layer.out_features, layer.in_features = expected
    layer.bias = bias
    return layer


def _fill(module: Module, prefix: str, load: Loader) -> None:
    """Load every weight of ``module`` (whose parameters are named ``prefix + name``), swapping its Linears."""
    done: set[str] = set()
    for parent_name, parent in list(module.named_modules()):
        for child_name, child in list(parent._modules.items()):
            if not isinstance(child, Linear):
                continue
            name = prefix + (f"{parent_name}.{child_name}" if parent_name else child_name)
            bias = None
            if child.bias is not None:
                bias = _float_parameter(f"{name}.bias", load(f"{name}.bias"), child.bias.shape)
            expected = (child.out_features, child.in_features)
            replace_module(parent, child_name, _linear_from(f"{name}.weight", load(f"{name}.weight"), bias, expected))
            done.update({f"{name}.weight", f"{name}.bias"})
    for name, param in module.named_parameters():
        if prefix + name not in done:
            param.data = _float_parameter(prefix + name, load(prefix + name), param.shape).data


def assemble_transformer(config: ModelConfig, load: Loader) -> Transformer:
    """A ``Transformer`` of ``config`` with every weight taken from ``load(name)``, in eval mode."""
    with no_init():  # every weight is replaced: draw no random numbers (and leave the RNG stream alone)
        model = Transformer(dataclasses.replace(config, n_layers=1, vocab_size=1, tie_embeddings=True))
    template = model.layers[0]
    blocks = []
    for i in range(config.n_layers):
        block = copy.deepcopy(template)
        _fill(block, f"layers.{i}.", load)
        blocks.append(block)
    replace_module(model, "layers", ModuleList(blocks))

    embeddings = load("tok_embeddings.weight")
    if isinstance(embeddings, QuantizedWeight):
        if embeddings.shape != (config.vocab_size, config.dim):
            raise ValueError(f"tok_embeddings.weight: the checkpoint has shape {embeddings.shape}, "
                             f"the model expects {(config.vocab_size, config.dim)}")
        replace_module(model, "tok_embeddings", QuantizedEmbedding(embeddings))
    else:
        with no_init():
            table = Embedding(1, config.dim)  # placeholder, replaced at once
        table.weight = _float_parameter("tok_embeddings.weight", embeddings, (config.vocab_size, config.dim))
        table.num_embeddings = config.vocab_size
        replace_module(model, "tok_embeddings", table)
    if getattr(model, "pos_embeddings", None) is not None:
        _fill(model.pos_embeddings, "pos_embeddings.", load)
    _fill(model.norm, "norm.", load)

    model.config = config
    if not config.tie_embeddings:
        expected = (config.vocab_size, config.dim)
        replace_module(model, "lm_head", _linear_from("lm_head.weight", load("lm_head.weight"), None, expected))
    tie_output_projection(model)
    return model.eval()
