"""``TransformerBlock``: one pre-norm layer of a decoder-only transformer.

    h = x + dropout(attention(norm1(x)))        x, h, y: (B, T, dim)
    y = h + dropout(feed_forward(norm2(h)))

x is the *residual stream*: one dim-wide vector per position that runs from the token
embeddings to the final norm. Each sub-layer reads a normalised copy of it and *adds* its
output back; nothing overwrites it. So a layer only has to learn a correction, and in the
backward the "+" passes the gradient to x unchanged (d(x + f(x))/dx = 1 + f'(x)): every layer
gets a direct path to the loss, however deep the model. "Pre-norm": the norm is applied to
the sub-layer's input, not to the stream itself (GPT-2 and LLaMA; the 2017 paper normed after).
"""

from __future__ import annotations

from ..autograd import Tensor
from ..autograd.ops.dropout import dropout
from .attention import Attention
from .feed_forward import GeluMLP, SwiGLU
from .kv_cache import KVCache
from .module import Module
from .normalization import LayerNorm, RMSNorm
from .rotary import RotaryEmbedding
from .row_positions import RowPositions


class TransformerBlock(Module):
    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int,
        ffn_hidden_dim: int,
        head_dim: int | None = None,
        norm: str = "rmsnorm",
        mlp: str = "swiglu",
        norm_eps: float = 1e-5,
        qk_norm: bool = False,
        dropout: float = 0.0,
        bias: bool = False,
        out_std: float = 0.02,
    ) -> None:
        super().__init__()
        norm_class = RMSNorm if norm == "rmsnorm" else LayerNorm
        self.attention_norm = norm_class(dim, norm_eps)
        self.attention = Attention(
            dim, n_heads, n_kv_heads, head_dim, qk_norm=qk_norm, norm_eps=norm_eps, dropout=dropout, bias=bias,
            out_std=out_std,
        )
        self.ffn_norm = norm_class(dim, norm_eps)
        if mlp == "swiglu":
            self.feed_forward = SwiGLU(dim, ffn_hidden_dim, bias=bias, out_std=out_std)
        else:
            self.feed_forward = GeluMLP(dim, ffn_hidden_dim, bias=bias, out_std=out_std)
        self.dropout = dropout

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        rows: RowPositions | None = None,
    ) -> Tensor:
        p = self.dropout if self.training else 0.0
        a = self.attention(self.attention_norm(x), rope, cache, layer, rows)  # (B, T, dim): norm, then attention
        h = x + dropout(a, p, self.training)  # (B, T, dim): added into the residual stream
        f = self.feed_forward(self.ffn_norm(h))  # (B, T, dim): norm, then SwiGLU (hidden width inside)
        return h + dropout(f, p, self.training)  # (B, T, dim)
