"""``Linear``: y = x W^T (+ b), weight stored (out_features, in_features) as in PyTorch and Hugging Face."""

from __future__ import annotations

from typing import Any

import numpy as np

from .fused.linear import linear
from .init import normal_, zeros_
from .module import Module, Parameter


class Linear(Module):
    """A fully connected layer. Bias is off by default (LLaMA-style models use none).

    >>> import tinyllm as tl
    >>> layer = Linear(4, 3)
    >>> layer(tl.tensor(np.ones((2, 4), dtype=np.float32))).shape
    (2, 3)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, std: float = 0.02) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = normal_(Parameter(np.zeros((out_features, in_features), dtype=np.float32)), std)  # (out, in)
        self.bias = zeros_(Parameter(np.zeros(out_features, dtype=np.float32))) if bias else None

    def forward(self, x: Any) -> Any:
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
