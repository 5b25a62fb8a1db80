"""``TransformerBlock``: one pre-norm layer of a decoder-only transformer.

    h = x + dropout(attention(norm1(x)))
    y = h + dropout(feed_forward(norm2(h)))
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
        h = x + dropout(self.attention(self.attention_norm(x), rope, cache, layer, rows), p, self.training)
        return h + dropout(self.feed_forward(self.ffn_norm(h)), p, self.training)
