"""Scaled dot-product attention as one op, causal and grouped-query (GQA) aware.

Shapes: q (B, H, T, D) for H query heads; k, v (B, Hkv, S, D) for Hkv key/value
heads, where Hkv divides H (MHA: Hkv = H; MQA: Hkv = 1). Query head h reads
key/value head h // G, with G = H / Hkv (as Hugging Face's ``repeat_kv``).

Read the plain version first: ``tinyllm.nn.reference.attention`` (repeat k/v, scores, mask,
softmax, times v, in five obvious lines). The backward is derived in docs/backprop.md#attention.
This op computes the same thing with these optimisations:

- GQA groups folded into rows: no repeated copy of k and v (below);
- the offset causal mask: one (T, S) additive mask shifted by S - T for a KV cache, broadcast
  over batch, heads and groups;
- in-place softmax: the scores buffer becomes the probabilities, no second (G*T, S) array;
- the moved scale: 1/sqrt(D) multiplies q (T*D values) and dq/dk, not the (T, S) scores;
- rowsum(dP * P) = rowsum(dout * out): the softmax backward's row sum from (T, D) arrays.

GQA without copies: the G query heads that share a key/value head are folded
into the rows, q -> (B, Hkv, G*T, D), so one batched matmul against the
unrepeated k (B, Hkv, S, D) serves them all, in forward and backward alike.

Forward (per batch and kv head; s = scale = 1/sqrt(D)):

    scores = s * q k^T                  (G*T, S), -inf where a query may not look
    P      = softmax(scores)            rows sum to 1
    out    = P v                        (G*T, D)

Backward (dP's row-softmax Jacobian collapses to a row sum):

    dv = P^T dout                       (S, D)   sums over the G heads for free
    dP = dout v^T                       (G*T, S)
    dscores = P * (dP - rowsum(dP * P))  with rowsum(dP * P) = rowsum(dout * out)
    dq = s * dscores k                  (G*T, D)
    dk = s * dscores^T q                (S, D)

Causal with a cache: when S > T the T queries are the last T positions, so query
i (0-based within the T) may look at keys 0 .. i + (S - T).

Rows of different lengths (padded batches, continuous batching). Two optional inputs,
both constants of the graph (no gradient):

    key_padding_mask (B, S) bool   True where key j of row b is a real token, False for padding
    query_start      (B,)   int    the key index of row b's first query (default S - T for every row)

Query i of row b may look at key j only if ``key_padding_mask[b, j]`` and, when causal,
``j <= query_start[b] + i``. Both become one additive mask (B, 1, 1, T, S) of 0 and -inf,
broadcast over the heads (``row_mask`` builds it). A model with many layers builds that mask
once per forward and hands it to every layer as ``attn_mask`` instead (as PyTorch's
``attn_mask``, a float mask added to the scores; it already holds the causal part).

A masked key gets probability exactly 0 (exp(-inf) = 0), so a padded key or value never
changes a real query's output, and the backward above needs no change: dscores = P * (...)
is 0 wherever P is. A query that may look at no key at all (a padding query on the left of
its row) gets all-zero probabilities, output 0, gradient 0.

Attention dropout zeroes entries of P with probability p and scales the rest by
1/(1-p) before multiplying by v; the backward applies the same mask to dP.
"""

from __future__ import annotations

import math
from typing import Any

from ...autograd.function import Function
from ...backends import get_backend


def row_mask(B: int, T: int, S: int, is_causal: bool, query_start: Any, key_padding_mask: Any, dtype: Any) -> Any:
    """The additive mask (B, 1, 1, T, S): 0 where query i of row b may look at key j, -inf elsewhere.

    ``query_start`` (B,) ints or None (every row's first query at key S - T), ``key_padding_mask``
    (B, S) bool or None; see the module docstring. On the backend's device.

    >>> row_mask(2, 1, 3, True, [0, 2], None, "float32")[:, 0, 0, 0].tolist()
    [[0.0, -inf, -inf], [0.0, 0.0, 0.0]]
    """
    xp = get_backend().xp
    allowed = xp.ones((B, T, S), dtype=bool)
    if is_causal:
        start = xp.asarray(query_start if query_start is not None else [S - T] * B).reshape(-1, 1, 1)
        if start.shape[0] != B:
            raise ValueError(f"attention: query_start has {start.shape[0]} rows, the batch has B={B}")
        allowed &= xp.arange(S).reshape(1, 1, S) <= start + xp.arange(T).reshape(1, T, 1)  # j <= start_b + i
    if key_padding_mask is not None:
        keep = xp.asarray(key_padding_mask)
        if keep.shape != (B, S) or keep.dtype != bool:
            raise ValueError(
                f"attention: key_padding_mask must be a bool array (B, S) = {(B, S)} (True = a real key), "
                f"got {keep.dtype} {keep.shape}"
            )
        allowed &= keep[:, None, :]  # (B, 1, S) over the queries
    mask = xp.where(allowed, 0.0, -xp.inf).astype(dtype)  # (B, T, S)
    return mask.reshape(B, 1, 1, T, S)


class ScaledDotProductAttention(Function):
    def __init__(
        self,
        is_causal: bool = True,
        dropout_p: float = 0.0,
        scale: float | None = None,
        key_padding_mask: Any = None,
        query_start: Any = None,
        attn_mask: Any = None,
    ) -> None:
        if not 0.0 <= dropout_p < 1.0:
            raise ValueError(f"attention dropout_p must be in [0, 1), got {dropout_p}")
        if attn_mask is not None and (is_causal or key_padding_mask is not None or query_start is not None):
            raise ValueError(
                "attention: attn_mask is the whole mask (causality and padding included); pass it with "
                "is_causal=False and without key_padding_mask or query_start"
            )
        self.is_causal = is_causal
        self.dropout_p = dropout_p
        self.scale = scale
        self.key_padding_mask = key_padding_mask  # (B, S) bool or None: constants, no gradient
        self.query_start = query_start  # (B,) int or None
        self.attn_mask = attn_mask  # (B, 1, 1, T, S) additive float or None

    def forward(self, q: Any, k: Any, v: Any) -> Any:
        xp = self.xp
        B, H, T, D = q.shape
        if k.ndim != 4 or k.shape != v.shape or k.shape[0] != B or k.shape[3] != D:
            raise ValueError(
                f"attention: q {q.shape} is (B, n_heads, T, head_dim); k {k.shape} and v {v.shape} must both be "
                f"(B, n_kv_heads, S, head_dim) with the same B and head_dim"
            )
        Hkv, S = k.shape[1], k.shape[2]
        if H % Hkv:
            raise ValueError(f"attention: n_heads={H} must be a multiple of n_kv_heads={Hkv}")
        if self.is_causal and S < T and self.query_start is None:
            raise ValueError(f"causal attention needs at least as many keys as queries, got T={T} queries, S={S} keys")
        G = H // Hkv
        # The scale as a scalar of q's dtype: a Python float would make NumPy promote an ml_dtypes bfloat16
        # array to float32 (it has no "weak" Python scalars for that dtype), and the layer would leave bfloat16.
        scale = q.dtype.type(self.scale if self.scale is not None else 1.0 / math.sqrt(D))
        self.scale_used = scale

        qg = q.reshape(B, Hkv, G * T, D)  # (B, Hkv, G*T, D): the G heads of a group stacked as rows
        self.lse = None
        mask = self.attn_mask
        backend = get_backend()
        if (backend.flash_attention and backend.kernels is not None and mask is None and self.key_padding_mask is None
                and self.query_start is None and self.dropout_p == 0.0 and backend.kernels.flash_usable(qg, k, v)):
            # On CuPy with TINYLLM_FLASH_ATTENTION=1: the lines below without the (G*T, S) scores, tile by tile
            # (cuda_kernels, "tiled attention"); lse, a float per row, is all the backward needs besides q, k, v.
            k, v = backend.xp.ascontiguousarray(k), backend.xp.ascontiguousarray(v)  # the kernels read rows of D
            out, self.lse = backend.kernels.flash_attention_forward(qg, k, v, scale, T, self.is_causal)
            self.save(qg, k, v, None, None, out)  # the contiguous k, v: the backward copies nothing again
            return out.reshape(B, H, T, D)
        if mask is None and (self.key_padding_mask is not None or self.query_start is not None):
            mask = row_mask(B, T, S, self.is_causal, self.query_start, self.key_padding_mask, q.dtype)
        per_row = mask is not None
        kernels = backend.kernels
        if not per_row and kernels is not None and kernels.usable(qg, k, half=True):
            # On CuPy: the scale, the mask and the softmax below in one launch over the unscaled q k^T.
            scores = backend.xp.ascontiguousarray(qg @ k.swapaxes(-1, -2))  # (B, Hkv, G*T, S)
            kernels.causal_softmax_(scores, T, self.is_causal, scale)
        else:
            scores = (qg * scale) @ k.swapaxes(-1, -2)  # (B, Hkv, G*T, S); scaling q is cheaper than the scores
            if per_row:
                if mask.shape != (B, 1, 1, T, S):
                    raise ValueError(f"attention: attn_mask must be (B, 1, 1, T, S) = {(B, 1, 1, T, S)}, got {mask.shape}")
                scores5 = scores.reshape(B, Hkv, G, T, S)
                scores5 += mask  # (B, 1, 1, T, S) broadcast over the heads
            elif self.is_causal and T > 1:
                # Additive mask (T, S): 0 where key j <= i + S - T, -inf after; one broadcast add over the groups.
                future = xp.triu(xp.full((T, S), -xp.inf, dtype=scores.dtype), k=S - T + 1)
                scores5 = scores.reshape(B, Hkv, G, T, S)
                scores5 += future
            # Row softmax, in place.
            row_max = scores.max(axis=-1, keepdims=True)
            if per_row:  # a query that may see no key: max -inf; subtract 0 instead, so its row is exp(-inf) = 0
                row_max[row_max == -xp.inf] = 0.0
            scores -= row_max
            xp.exp(scores, out=scores)
            row_sum = scores.sum(axis=-1, keepdims=True)
            if per_row:
                row_sum[row_sum == 0.0] = 1.0  # such a row stays all zeros
            scores *= 1.0 / row_sum
        probs = scores  # (B, Hkv, G*T, S)

        keep = None
        if self.dropout_p > 0.0:
            keep = get_backend().rng.random(probs.shape, dtype=self.xp.float32) >= self.dropout_p  # (B, Hkv, G*T, S)
            dropped = probs * keep
            dropped /= 1.0 - self.dropout_p  # in place: stays in the scores' dtype
        else:
            dropped = probs
        out = dropped @ v  # (B, Hkv, G*T, D)
        self.save(qg, k, v, probs, keep, out)
        return out.reshape(B, H, T, D)

    def backward(self, gy: Any) -> tuple[Any, Any, Any]:
        qg, k, v, probs, keep, out = self.saved
        B, H, T, D = gy.shape
        gout = gy.reshape(qg.shape)  # (B, Hkv, G*T, D)
        if self.lse is not None:  # the tiled forward ran: so does the tiled backward (recomputing P from lse)
            gq, gk, gv = get_backend().kernels.flash_attention_backward(
                qg, k, v, out, self.lse, gout, self.scale_used, T, self.is_causal)
            return gq.reshape(B, H, T, D), gk, gv
        if keep is not None:
            dropped = probs * keep
            dropped /= 1.0 - self.dropout_p
        else:
            dropped = probs
        gv = dropped.swapaxes(-1, -2) @ gout  # (B, Hkv, S, D)
        gprobs = gout @ v.swapaxes(-1, -2)  # (B, Hkv, G*T, S)
        if keep is not None:  # in two steps: keep / (1 - p) alone would be a float64 array of P's size
            gprobs *= keep
            gprobs /= 1.0 - self.dropout_p
        # dscores = P * (dP - rowsum(dP * P)), in place in gprobs. The row sum needs no (G*T, S)
        # product: rowsum_j(dP_ij P_ij) = rowsum_j((dout_i . v_j) P_ij) = dout_i . out_i, (G*T, D) work.
        # (With dropout the same identity holds for the dropped P that made out.)
        kernels = get_backend().kernels
        scale = self.scale_used
        if kernels is not None and kernels.usable(probs, gprobs, gout, out, half=True):
            # On CuPy: the row sum in one reduction; the two lines below and the scale in one pass, so dq and
            # dk need no multiplication
            rowdot = kernels.row_dot(gout, out)  # (B, Hkv, G*T, 1)
            gprobs = kernels.softmax_backward(probs, gprobs, rowdot, scale)
            return (gprobs @ k).reshape(B, H, T, D), gprobs.swapaxes(-1, -2) @ qg, gv
        rowdot = (gout * out).sum(axis=-1, keepdims=True)  # (B, Hkv, G*T, 1)
        gprobs -= rowdot
        gprobs *= probs
        # The scale is applied to the small (T, D) results, not the (T, S) scores
        gq = ((gprobs @ k) * scale).reshape(B, H, T, D)  # (B, H, T, D)
        gk = gprobs.swapaxes(-1, -2) @ (qg * scale)  # (B, Hkv, S, D)
        return gq, gk, gv


def scaled_dot_product_attention(
    q: Any,
    k: Any,
    v: Any,
    is_causal: bool = True,
    dropout_p: float = 0.0,
    scale: float | None = None,
    key_padding_mask: Any = None,
    query_start: Any = None,
    attn_mask: Any = None,
) -> Any:
    """softmax(q k^T / sqrt(head_dim) + mask) v for q (B, H, T, D) and k, v (B, H_kv, S, D).

    ``H_kv`` may be smaller than ``H`` (grouped-query attention); keys and values are never repeated.
    ``key_padding_mask`` (B, S) bool, True for real keys; ``query_start`` (B,) ints, the key index
    of each row's first query (rows whose caches hold different lengths). Example: two rows, the
    second left-padded by one, ``key_padding_mask=[[True, True, True], [False, True, True]]``.
    ``attn_mask``: instead of those (and with ``is_causal=False``), the additive mask
    (B, 1, 1, T, S) that ``row_mask`` builds from them, made once and shared by every layer.
    """
    return ScaledDotProductAttention(is_causal, dropout_p, scale, key_padding_mask, query_start, attn_mask)(q, k, v)
