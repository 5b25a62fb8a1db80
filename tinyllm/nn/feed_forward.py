"""Feed-forward blocks: ``SwiGLU`` (LLaMA) and ``GeluMLP`` (GPT-2).

SwiGLU:   y = W_down (silu(W_gate x) * (W_up x))
GeluMLP:  y = W_down gelu(W_up x)
"""

from __future__ import annotations

from typing import Any

from ..autograd.ops.unary import gelu
from .fused.swiglu import swiglu
from .linear import Linear
from .module import Module


class SwiGLU(Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool = False, out_std: float = 0.02) -> None:
        super().__init__()
        self.w_gate = Linear(dim, hidden_dim, bias=bias)  # (hidden, dim)
        self.w_up = Linear(dim, hidden_dim, bias=bias)
        self.w_down = Linear(hidden_dim, dim, bias=bias, std=out_std)

    def forward(self, x: Any) -> Any:
        return self.w_down(swiglu(self.w_gate(x), self.w_up(x)))  # (B, T, dim)


class GeluMLP(Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool = True, out_std: float = 0.02) -> None:
        super().__init__()
        self.w_up = Linear(dim, hidden_dim, bias=bias)
        self.w_down = Linear(hidden_dim, dim, bias=bias, std=out_std)

    def forward(self, x: Any) -> Any:
        return self.w_down(gelu(self.w_up(x), approximate="tanh"))
