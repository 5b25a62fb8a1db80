"""Normalisation layers: ``RMSNorm`` (LLaMA, Qwen) and ``LayerNorm`` (GPT-2), over the last axis."""

from __future__ import annotations

from typing import Any

import numpy as np

from .fused.layer_norm import layer_norm
from .fused.rms_norm import rms_norm
from .module import Module, Parameter


class RMSNorm(Module):
    """y = x / sqrt(mean(x^2) + eps) * weight; ``weight`` starts at ones."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(dim, dtype=np.float32))  # (dim,)

    def forward(self, x: Any) -> Any:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias; weight ones, bias zeros."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(dim, dtype=np.float32))
        self.bias = Parameter(np.zeros(dim, dtype=np.float32))

    def forward(self, x: Any) -> Any:
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
