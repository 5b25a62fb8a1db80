"""``Attention``: causal multi-head attention with grouped-query heads, RoPE and optional QK-norm.

    x (B, T, dim)
      -> q = x Wq^T (B, T, n_heads * head_dim),  k, v = x Wk^T, x Wv^T (B, T, n_kv_heads * head_dim)
      -> split heads: q (B, n_heads, T, head_dim), k, v (B, n_kv_heads, T, head_dim)
      -> [QK-norm: RMSNorm over head_dim of q and k, as Qwen3]
      -> RoPE on q and k at positions start .. start+T-1 (or each row's own, see row_positions.py)
      -> [KV cache: append k, v; attend over every cached position]
      -> fused causal scaled-dot-product attention (GQA without repeating k, v)
      -> merge heads (B, T, n_heads * head_dim) -> Wo -> (B, T, dim)

MHA when n_kv_heads == n_heads, MQA when n_kv_heads == 1, GQA in between.
"""

from __future__ import annotations

from ..autograd import Tensor
from .fused.attention import scaled_dot_product_attention
from .fused.rope import apply_rope
from .kv_cache import KVCache
from .linear import Linear
from .module import Module
from .normalization import RMSNorm
from .rotary import RotaryEmbedding
from .row_positions import RowPositions


class Attention(Module):
    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        dropout: float = 0.0,
        bias: bool = False,
        out_std: float = 0.02,
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim if head_dim is not None else dim // n_heads
        self.dropout = dropout
        self.wq = Linear(dim, n_heads * self.head_dim, bias=bias)
        self.wk = Linear(dim, n_kv_heads * self.head_dim, bias=bias)
        self.wv = Linear(dim, n_kv_heads * self.head_dim, bias=bias)
        self.wo = Linear(n_heads * self.head_dim, dim, bias=bias, std=out_std)
        self.q_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else None

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        rows: RowPositions | None = None,
    ) -> Tensor:
        """``rows``: per-row positions and masks when the rows differ (padding, caches of different lengths)."""
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.wq(x).reshape(B, T, H, D)  # (B, T, n_heads, head_dim)
        k = self.wk(x).reshape(B, T, Hkv, D)  # (B, T, n_kv_heads, head_dim)
        v = self.wv(x).reshape(B, T, Hkv, D)
        if self.q_norm is not None:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q = q.transpose(0, 2, 1, 3)  # (B, n_heads, T, head_dim)
        k = k.transpose(0, 2, 1, 3)  # (B, n_kv_heads, T, head_dim)
        v = v.transpose(0, 2, 1, 3)
        if rope is not None:
            if rows is None:
                cos, sin = rope.tables(cache.length if cache is not None else 0, T)  # (T, head_dim/2) each
            else:
                cos, sin = rows.rope_tables(rope)  # (B, 1, T, head_dim/2) each, built once per forward
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
        if cache is not None:
            # The cache is inference-only: keys/values become constants of the graph.
            k_all, v_all = cache.update(layer, k.data, v.data)  # (B, n_kv_heads, start+T, head_dim)
            k, v = Tensor(k_all), Tensor(v_all)
        dropout_p = self.dropout if self.training else 0.0
        if rows is None:
            out = scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)  # (B, n_heads, T, head_dim)
        else:
            mask = rows.attention_mask(k.shape[2], q.dtype)  # (B, 1, 1, T, S), causal, built once per forward
            out = scaled_dot_product_attention(q, k, v, is_causal=False, dropout_p=dropout_p, attn_mask=mask)
        out = out.transpose(0, 2, 1, 3).reshape(B, T, H * D)  # (B, T, n_heads * head_dim)
        return self.wo(out)

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, head_dim={self.head_dim}"
