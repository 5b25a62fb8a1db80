"""``ModelConfig``: every number that defines a model's shape, validated, saved as JSON.

A dataclass, as nanoGPT's ``GPTConfig``, plus checks that fail early with a message
that says what to change. Defaults describe a small LLaMA-style model.

    >>> cfg = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2)
    >>> cfg.head_dim
    16
    >>> ModelConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils import dataclass_from_dict

NORMS = ("rmsnorm", "layernorm")
MLPS = ("swiglu", "gelu")
POSITIONS = ("rope", "learned", "sinusoidal")
INT_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_hidden_dim", "max_seq_len")
DERIVED_WHEN_NONE = ("n_kv_heads", "head_dim", "ffn_hidden_dim")
FLOAT_FIELDS = ("rope_theta", "norm_eps", "dropout")
BOOL_FIELDS = ("tie_embeddings", "qk_norm", "bias")


@dataclass
class ModelConfig:
    vocab_size: int = 512
    dim: int = 128  # width of the residual stream
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: same as n_heads (MHA); 1: MQA; between: GQA
    head_dim: int | None = None  # None: dim // n_heads (Qwen3 sets it explicitly)
    ffn_hidden_dim: int | None = None  # None: LLaMA's rule, 8/3 * dim rounded up to a multiple of 32 (below)
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3)
    dropout: float = 0.0
    norm: str = "rmsnorm"  # rmsnorm | layernorm
    mlp: str = "swiglu"  # swiglu | gelu
    positions: str = "rope"  # rope | learned | sinusoidal
    bias: bool = False  # biases in every Linear (GPT-2 style)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (source model, ...), not used by the code

    def __post_init__(self) -> None:
        self._check_types()  # before deriving anything: "64" % 4 would fail with a message about strings
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            if self.dim % self.n_heads:
                raise ValueError(
                    f"dim={self.dim} is not divisible by n_heads={self.n_heads}: choose n_heads dividing dim "
                    f"(or set head_dim explicitly)"
                )
            self.head_dim = self.dim // self.n_heads
        if self.ffn_hidden_dim is None:
            # LLaMA's rule. A GELU MLP has 2 matrices of dim x 4*dim; SwiGLU has 3 (gate, up, down),
            # so a hidden width of 2/3 * 4*dim = 8/3 * dim keeps the parameters and FLOPs the same
            # (3 * 8/3 = 2 * 4). Rounded up to a multiple of 32 for tidy matmul shapes: 128 -> 341 -> 352.
            hidden = int(2 * (4 * self.dim) / 3)
            self.ffn_hidden_dim = 32 * ((hidden + 31) // 32)
        self.validate()

    def _check_types(self, allow_none: bool = True) -> None:
        """Each field has the kind of value it needs (a hand-edited JSON file may say "64" or "false")."""
        for name in INT_FIELDS:
            value = getattr(self, name)
            if value is None and allow_none and name in DERIVED_WHEN_NONE:
                continue
            # bool is a subclass of int in Python; True is not a width.
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
        for name in BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")

    def validate(self) -> None:
        self._check_types(allow_none=False)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}: each key/value head "
                f"serves n_heads/n_kv_heads query heads"
            )
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE rotates pairs of features, so head_dim must be even, got {self.head_dim}")
        if self.positions == "sinusoidal" and self.dim % 2:
            raise ValueError(f"sinusoidal positions need an even dim, got {self.dim}")
        for name, allowed in (("norm", NORMS), ("mlp", MLPS), ("positions", POSITIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {allowed}")
        if not 0.0 <= self.dropout < 1.0:  # also false for NaN
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("rope_theta", "norm_eps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):  # NaN fails every comparison, so test finiteness first
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")

    # -- serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict; unknown keys are an error that lists the known ones."""
        return dataclass_from_dict(cls, data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); expected a ModelConfig written by save()") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object of ModelConfig fields")
        return cls.from_dict(data)
