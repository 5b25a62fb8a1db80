"""Small tools around a model: seeding, the device in use, parameter counts, memory estimates, summaries.

    >>> from tinyllm.models import ModelConfig
    >>> smollm2 = ModelConfig(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3,
    ...                       ffn_hidden_dim=1536, tie_embeddings=True)
    >>> count_parameters(smollm2)          # from the config alone, nothing allocated
    134515008

``estimate_memory`` counts what a training step of *this* implementation keeps
alive: parameters, gradients, optimizer state, and the activations the fused
Functions save for backward (listed in ``activation_floats_per_token``).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from .backends import get_backend
from .logger import TrainingLogger

__all__ = [
    "TrainingLogger",
    "benchmark_model",
    "count_parameters",
    "dataclass_from_dict",
    "estimate_memory",
    "get_device",
    "load_config",
    "print_model_summary",
    "save_config",
    "set_seed",
]


def set_seed(seed: int) -> None:
    """Seed every random generator tinyllm uses: the backend's (init, dropout, batches) and Python's."""
    get_backend().seed(seed)
    random.seed(seed)


def get_device() -> str:
    """The backend and device in use, e.g. ``"numpy (cpu)"`` or ``"cupy (NVIDIA H100 ...)"``."""
    backend = get_backend()
    return f"{backend.name} ({backend.device_name()})"


def dataclass_from_dict(cls: Any, data: dict[str, Any]) -> Any:
    """``cls(**data)`` for a dataclass, but unknown keys are an error that lists the valid ones.

    >>> from tinyllm.models import ModelConfig
    >>> dataclass_from_dict(ModelConfig, {"dimm": 64})
    Traceback (most recent call last):
    ...
    ValueError: Unknown ModelConfig keys ['dimm']; valid keys are [...]
    """
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} needs a dict (a JSON object) of fields, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} keys {unknown}; valid keys are {sorted(known)}")
    return cls(**data)


def save_config(config: Any, path: str | Path) -> None:
    """Write a config dataclass (``ModelConfig``, ``TrainConfig``) as indented JSON."""
    Path(path).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def load_config(path: str | Path, cls: Any = None) -> Any:
    """Read a config written by ``save_config`` (``cls`` defaults to ``ModelConfig``)."""
    if cls is None:
        from .models.config import ModelConfig as cls  # noqa: N813
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); expected a {cls.__name__} written by save_config") from None
    return dataclass_from_dict(cls, data)


# -- sizes ------------------------------------------------------------------------------------------
def _config_of(model_or_config: Any) -> Any:
    return getattr(model_or_config, "config", model_or_config)


def count_parameters(model_or_config: Any) -> int:
    """Number of trainable numbers: counted on a model, or computed from a ``ModelConfig`` alone."""
    if hasattr(model_or_config, "num_parameters"):
        return model_or_config.num_parameters()
    c = model_or_config
    q_dim, kv_dim = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    norm = 2 * c.dim if c.norm == "layernorm" else c.dim  # weight (+ bias)
    attention = c.dim * q_dim + 2 * c.dim * kv_dim + q_dim * c.dim
    n_ffn_in = 2 if c.mlp == "swiglu" else 1  # gate and up, or up only
    ffn = n_ffn_in * c.dim * c.ffn_hidden_dim + c.ffn_hidden_dim * c.dim
    biases = (q_dim + 2 * kv_dim + c.dim + n_ffn_in * c.ffn_hidden_dim + c.dim) if c.bias else 0
    qk_norm = 2 * c.head_dim if c.qk_norm else 0
    per_layer = 2 * norm + attention + ffn + biases + qk_norm
    total = c.vocab_size * c.dim + c.n_layers * per_layer + norm
    if c.positions == "learned":
        total += c.max_seq_len * c.dim
    if not c.tie_embeddings:
        total += c.vocab_size * c.dim  # lm_head, never with a bias
    return total


def activation_floats_per_token(config: Any, seq_len: int) -> int:
    """Floats saved for backward per token of a training batch (dropout 0), by the fused ops of tinyllm.

    Per layer: the attention RMSNorm keeps its normalised input and the projections their input
    (2 x dim); RoPE'd q and k, and v (dim + 2 kv_dim); attention probabilities (n_heads x seq_len)
    and output (dim); the merged heads for wo (dim); the same two for the feed-forward norm
    (2 x dim); SwiGLU's gate, up and sigmoid (3 x ffn) and its output for w_down (ffn), or
    GELU's input and tanh (2 x ffn) and its output (ffn).
    After the layers: the final norm (2 x dim) and the logits kept by cross-entropy (vocab).
    """
    c = config
    kv_dim = c.n_kv_heads * c.head_dim
    ffn = (4 if c.mlp == "swiglu" else 3) * c.ffn_hidden_dim
    per_layer = 7 * c.dim + 2 * kv_dim + c.n_heads * seq_len + ffn
    return c.n_layers * per_layer + 2 * c.dim + c.vocab_size


def estimate_memory(
    model_or_config: Any, batch_size: int = 1, seq_len: int | None = None, optimizer: str = "adamw", bytes_per_float: int = 4
) -> dict[str, int]:
    """Bytes of a training step: parameters, gradients, optimizer state, saved activations, and their total.

    ``optimizer``: "adamw" (two moments per parameter), "sgd" (none), "sgd_momentum" (one).
    """
    config = _config_of(model_or_config)
    seq_len = seq_len or config.max_seq_len
    n_params = count_parameters(model_or_config)
    states = {"adamw": 2, "sgd": 0, "sgd_momentum": 1}
    if optimizer not in states:
        raise ValueError(f"optimizer must be one of {sorted(states)}, got {optimizer!r}")
    sizes = {
        "parameters": n_params * bytes_per_float,
        "gradients": n_params * bytes_per_float,
        "optimizer": states[optimizer] * n_params * bytes_per_float,
        "activations": batch_size * seq_len * activation_floats_per_token(config, seq_len) * bytes_per_float,
    }
    sizes["total"] = sum(sizes.values())
    return sizes


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB"


def print_model_summary(model: Any, batch_size: int = 1, seq_len: int | None = None) -> None:
    """Print each top-level part with its parameter count, then the training-memory estimate."""
    print(f"{type(model).__name__} on {get_device()}")
    for name, child in model._modules.items():
        n = sum(p.size for p in child.parameters())
        print(f"  {name:<16s} {n:>14,d} parameters")
    sizes = estimate_memory(model, batch_size, seq_len)
    print(f"  {'total':<16s} {count_parameters(model):>14,d} parameters")
    print(
        f"  training memory for batch {batch_size} x {seq_len or model.config.max_seq_len}: "
        + ", ".join(f"{k} {_mib(v)}" for k, v in sizes.items())
    )


def benchmark_model(model: Any, batch_size: int = 8, seq_len: int | None = None, steps: int = 3) -> dict[str, float]:
    """Median tokens/s of a forward pass (no grad) and of forward + backward, on random ids."""
    from .autograd import no_grad

    config = model.config
    seq_len = seq_len or config.max_seq_len
    backend = get_backend()
    ids = backend.asarray(np.random.default_rng(0).integers(0, config.vocab_size, (batch_size, seq_len)))
    forward_times, train_times = [], []
    for _ in range(steps):
        start = time.perf_counter()
        with no_grad():
            model(ids)
        backend.synchronize()
        forward_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        _, loss = model(ids, ids)
        loss.backward()
        backend.synchronize()
        train_times.append(time.perf_counter() - start)
    model.zero_grad()
    tokens = batch_size * seq_len
    return {
        "forward_tokens_per_second": tokens / float(np.median(forward_times)),
        "train_tokens_per_second": tokens / float(np.median(train_times)),
    }
