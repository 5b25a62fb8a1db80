"""``Transformer``: a decoder-only language model (LLaMA-style by default, GPT-2-style by config).

    idx (B, T) token ids
      -> tok_embeddings                         (B, T, dim)   [+ learned or sinusoidal positions]
      -> n_layers x TransformerBlock            (B, T, dim)   pre-norm attention + feed-forward
      -> norm                                   (B, T, dim)
      -> lm_head (or the embedding, tied)       (B, T, vocab_size) logits
      -> with targets: mean cross-entropy

Parameter names (what ``state_dict`` and checkpoints use)::

    tok_embeddings.weight                       (vocab_size, dim)
    layers.{i}.attention_norm.weight            (dim,)
    layers.{i}.attention.wq.weight              (n_heads * head_dim, dim)
    layers.{i}.attention.wk.weight, .wv.weight  (n_kv_heads * head_dim, dim)
    layers.{i}.attention.wo.weight              (dim, n_heads * head_dim)
    layers.{i}.attention.q_norm.weight, .k_norm.weight  (head_dim,)   with qk_norm
    layers.{i}.ffn_norm.weight                  (dim,)
    layers.{i}.feed_forward.w_gate.weight, .w_up.weight  (ffn_hidden_dim, dim)
    layers.{i}.feed_forward.w_down.weight       (dim, ffn_hidden_dim)
    norm.weight                                 (dim,)
    lm_head.weight                              (vocab_size, dim)   absent when tied

Initialisation follows GPT-2 / LLaMA practice: N(0, 0.02) for every matrix, and
N(0, 0.02 / sqrt(2 * n_layers)) for the projections that write into the residual
stream (wo, w_down), so the residual's variance does not grow with depth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..autograd.ops.cross_entropy import cross_entropy
from ..backends import get_backend
from ..nn.block import TransformerBlock
from ..nn.embedding import Embedding
from ..nn.fused.linear import linear
from ..nn.kv_cache import KVCache
from ..nn.linear import Linear
from ..nn.module import Module, ModuleList
from ..nn.normalization import LayerNorm, RMSNorm
from ..nn.rotary import RotaryEmbedding
from ..nn.row_positions import row_positions
from .config import ModelConfig


def sinusoidal_table(max_seq_len: int, dim: int) -> np.ndarray:
    """The fixed position table of "Attention Is All You Need": sin on even features, cos on odd."""
    positions = np.arange(max_seq_len, dtype=np.float64)[:, None]  # (T, 1)
    frequencies = 10000.0 ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)  # (dim/2,)
    table = np.zeros((max_seq_len, dim))
    table[:, 0::2] = np.sin(positions * frequencies)
    table[:, 1::2] = np.cos(positions * frequencies)
    return table.astype(np.float32)


class Transformer(Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config
        out_std = 0.02 / math.sqrt(2 * c.n_layers)
        self.tok_embeddings = Embedding(c.vocab_size, c.dim)
        if c.positions == "learned":
            self.pos_embeddings = Embedding(c.max_seq_len, c.dim)
        elif c.positions == "sinusoidal":
            self.register_buffer("pos_table", get_backend().asarray(sinusoidal_table(c.max_seq_len, c.dim)))
        self.rope = RotaryEmbedding(c.head_dim, c.max_seq_len, c.rope_theta) if c.positions == "rope" else None
        self.layers = ModuleList(
            TransformerBlock(
                c.dim, c.n_heads, c.n_kv_heads, c.ffn_hidden_dim, c.head_dim, norm=c.norm, mlp=c.mlp,
                norm_eps=c.norm_eps, qk_norm=c.qk_norm, dropout=c.dropout, bias=c.bias, out_std=out_std,
            )
            for _ in range(c.n_layers)
        )
        self.norm = RMSNorm(c.dim, c.norm_eps) if c.norm == "rmsnorm" else LayerNorm(c.dim, c.norm_eps)
        self.lm_head = None if c.tie_embeddings else Linear(c.dim, c.vocab_size)

    def forward(
        self,
        idx: Any,
        targets: Any = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        attention_mask: Any = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, vocab_size) and, given targets (B, T), the mean cross-entropy loss.

        ``cache``: a ``KVCache`` from ``new_cache``; positions continue from ``cache.lengths`` (each row its own).
        ``last_only``: compute logits for the last position only, (B, 1, vocab_size) (generation); with an
        ``attention_mask``, each row's last real token.
        ``attention_mask`` (B, T): 1 for real tokens, 0 for padding (left or right; right only with a cache).
        Padding never changes a real token's logits: each row gets what it would get alone.
        Target ids equal to -100 are ignored by the loss (give them to the padding).
        """
        idx = idx if isinstance(idx, Tensor) else Tensor(get_backend().asarray(idx))
        c = self.config
        if idx.ndim != 2:
            raise ValueError(f"token ids must have shape (batch, time), got {idx.shape}")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got {idx.dtype}")
        B, T = idx.shape
        if B == 0 or T == 0:
            raise ValueError(f"token ids of shape {idx.shape} hold no tokens: the model needs at least one per row")
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"the KV cache has {cache.batch_size} rows but the token ids {B}; use model.new_cache({B})")
        start = int(cache.lengths.max(initial=0)) if cache is not None else 0
        if start + T > c.max_seq_len:
            raise ValueError(
                f"sequence of {start + T} tokens ({start} cached + {T} new) is longer than max_seq_len="
                f"{c.max_seq_len}; shorten the input or build the model with a larger max_seq_len"
            )
        # Rows that differ (padding, or cache rows of different lengths) need per-row positions and masks.
        rows = None
        if attention_mask is not None or (cache is not None and not cache.uniform):
            rows = row_positions(B, T, attention_mask, cache.lengths if cache is not None else None)
        xp = get_backend().xp
        # The table checks the ids (once; on a GPU the answer waits for the step's read), in the model's words.
        x = self.tok_embeddings(idx, message=lambda bad: f"token id {bad} is out of range for vocab_size="
                                                         f"{c.vocab_size} (valid: 0..{c.vocab_size - 1})")  # (B, T, dim)
        if c.positions != "rope" and rows is not None:
            positions = xp.asarray(rows.positions)  # (B, T)
            if int(rows.positions.max()) >= c.max_seq_len:
                raise ValueError(f"positions reach {int(rows.positions.max())}, beyond max_seq_len={c.max_seq_len}")
            pos = self.pos_embeddings(Tensor(positions)) if c.positions == "learned" else Tensor(self.pos_table[positions])
            x = x + pos  # (B, T, dim)
        elif c.positions == "learned":
            x = x + self.pos_embeddings(Tensor(xp.arange(start, start + T)))
        elif c.positions == "sinusoidal":
            x = x + Tensor(self.pos_table[start : start + T])
        for i, layer in enumerate(self.layers):
            x = layer(x, self.rope, cache, i, rows)  # (B, T, dim)
        if cache is not None:
            cache.advance(T if rows is None else rows.n_real)
        if last_only and attention_mask is not None:
            mask = np.asarray(attention_mask)
            last = xp.asarray(T - 1 - np.argmax(mask[:, ::-1], axis=1))  # (B,) index of each row's last real token
            x = x[xp.arange(B)[:, None], last[:, None]]  # (B, 1, dim)
        elif last_only:
            x = x[:, -1:, :]  # (B, 1, dim)
        x = self.norm(x)
        if self.lm_head is None:
            logits = linear(x, self.tok_embeddings.weight)  # tied: x E^T (B, T, vocab_size)
        else:
            logits = self.lm_head(x)  # (B, T, vocab_size); a Linear, or a QuantizedLinear (tinyllm.quant)
        loss = None
        if targets is not None:
            loss = cross_entropy(logits, targets)
        return logits, loss

    def new_cache(self, batch_size: int = 1, max_seq_len: int | None = None) -> KVCache:
        """An empty KV cache for this model (n_kv_heads per layer, preallocated)."""
        c = self.config
        dtype = self.tok_embeddings.weight.dtype
        return KVCache(c.n_layers, batch_size, c.n_kv_heads, max_seq_len or c.max_seq_len, c.head_dim, dtype)

    def extra_repr(self) -> str:
        return f"{self.num_parameters():,} parameters"
