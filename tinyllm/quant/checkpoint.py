"""Quantized checkpoints: the integer arrays and scales in safetensors, what they mean in JSON.

    out/smollm2-q4/
      quantized.json       format, version, the model config, and for every weight its scheme
      model.safetensors    the arrays: int8 / packed uint8 values, float16/32 scales, float norms
      tokenizer.json       the tokenizer, when one was given (tinyllm's tokenizer file)

``quantized.json`` describes each quantized weight by its parameter name::

    "layers.0.attention.wq.weight": {"scheme": "q4", "shape": [576, 576], "group_size": 32,
                                     "arrays": ["packed", "scales", "mins"]}

and ``model.safetensors`` holds its arrays as ``layers.0.attention.wq.weight.packed``,
``....scales``, ``....mins`` (int8: ``.qweight`` and ``.scales``). Float parameters (norms,
biases, layers left unquantized) are stored under their own names and listed in "float".
A tied output projection is not stored: it is the token table (``model_config.tie_embeddings``).

safetensors stores int8, uint8 and float16 as they are, so nothing is converted on the way in
or out: ``load_quantized(save_quantized(model))`` computes bit for bit what ``model`` did.
Files are written crash-safely (``tinyllm.fileio.atomic_write``), the JSON last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from ..backends import get_backend
from ..fileio import atomic_write
from ..models.config import ModelConfig
from ..models.transformer import Transformer
from .assemble import assemble_transformer
from .int8 import Int8Weight
from .q4 import Q4Weight
from .weight import QuantizedWeight

FORMAT_NAME = "tinyllm-quantized"
FORMAT_VERSION = 1
DESCRIPTION = "quantized.json"
TENSORS = "model.safetensors"
TOKENIZER = "tokenizer.json"
WEIGHT_CLASSES = {"int8": Int8Weight, "q4": Q4Weight}


def quantized_state(model: Transformer) -> tuple[dict[str, Any], dict[str, dict], list[str]]:
    """(arrays by name, description of each quantized weight, names of float parameters) of a model.

    A weight shared by two layers (the tied token table and output projection) is listed once,
    under its first name.
    """
    arrays, weights, floats, seen = {}, {}, [], set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        weight = getattr(module, "weight", None)
        if isinstance(weight, QuantizedWeight) and id(weight) not in seen:
            seen.add(id(weight))
            own = weight.arrays()
            weights[f"{prefix}weight"] = {**weight.describe(), "arrays": list(own)}
            arrays.update({f"{prefix}weight.{key}": value for key, value in own.items()})
        for name, param in module._parameters.items():
            if id(param) not in seen:
                seen.add(id(param))
                floats.append(f"{prefix}{name}")
                arrays[f"{prefix}{name}"] = param.data
    return arrays, weights, floats


def save_quantized(model: Transformer, directory: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Write a quantized (or partly quantized) Transformer to ``directory``; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backend = get_backend()
    arrays, weights, floats = quantized_state(model)
    host = {name: np.ascontiguousarray(backend.to_host(a)) for name, a in arrays.items()}
    atomic_write(directory / TENSORS, safetensors.numpy.save(host))
    if tokenizer is not None:
        tokenizer.save(directory / TOKENIZER)
    description = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "weights": weights,
        "float": floats,
        "tokenizer": TOKENIZER if tokenizer is not None else None,
    }
    atomic_write(directory / DESCRIPTION, (json.dumps(description, indent=1) + "\n").encode())
    return directory


def load_quantized(directory: str | os.PathLike) -> tuple[Transformer, Any]:
    """``(model, tokenizer)`` from a directory written by ``save_quantized`` (tokenizer None if none was saved).

    Arrays are read one at a time and put straight into their layers; no float32 copy of the
    quantized weights is ever made.
    """
    from ..tokenizer import BPETokenizer

    directory = Path(directory)
    try:
        description = json.loads((directory / DESCRIPTION).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory} has no {DESCRIPTION}: not a checkpoint written by save_quantized") from None
    if description.get("format") != FORMAT_NAME or description.get("version") != FORMAT_VERSION:
        raise ValueError(f"{directory / DESCRIPTION}: format {description.get('format')!r} version "
                         f"{description.get('version')!r}, expected {FORMAT_NAME!r} version {FORMAT_VERSION}")
    config = ModelConfig.from_dict(description["model_config"])
    weights = description["weights"]
    with safetensors.safe_open(directory / TENSORS, framework="numpy") as file:
        available = set(file.keys())

        def read(key: str) -> np.ndarray:
            if key not in available:
                raise ValueError(f"{directory / TENSORS} has no array {key!r}, which {DESCRIPTION} names")
            return file.get_tensor(key)

        def load(name: str) -> Any:
            if name not in weights:
                return read(name)
            entry = weights[name]
            scheme = entry["scheme"]
            if scheme not in WEIGHT_CLASSES:
                raise ValueError(f"{name}: unknown scheme {scheme!r} (known: {sorted(WEIGHT_CLASSES)})")
            weight = WEIGHT_CLASSES[scheme](**{key: read(f"{name}.{key}") for key in entry["arrays"]})
            if list(weight.shape) != list(entry["shape"]) or weight.group_size != entry["group_size"]:
                raise ValueError(f"{name}: the arrays give shape {weight.shape} and group_size {weight.group_size}, "
                                 f"{DESCRIPTION} says {entry['shape']} and {entry['group_size']}")
            return weight

        model = assemble_transformer(config, load)
    tokenizer_file = description.get("tokenizer")
    tokenizer = BPETokenizer.load(directory / tokenizer_file) if tokenizer_file else None
    return model, tokenizer
