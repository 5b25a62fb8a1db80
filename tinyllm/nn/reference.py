"""The plain versions: every fused op of a transformer written from primitive ops in the most obvious way.

Read these first. Each function here is the definition a fused op must agree with, built
from the small autograd ops of ``tinyllm.autograd.ops`` (matmul, exp, sum, rsqrt, sigmoid,
masked_fill, concatenate, ...), so its backward comes for free from theirs and needs no
derivation. The fused ops in ``tinyllm.nn.fused`` (and ``tinyllm.autograd.ops.cross_entropy``)
compute the same thing with fewer arrays and one hand-derived backward; ``tests/test_fused.py``
checks, for random shapes, that each fused op equals its plain version here in value and in
every gradient, so the two cannot drift apart. ``docs/backprop.md`` derives each backward.

| plain version here      | fused op                                             |
|-------------------------|------------------------------------------------------|
| ``linear``              | ``tinyllm.nn.fused.linear.LinearFunction``           |
| ``rms_norm``            | ``tinyllm.nn.fused.rms_norm.RMSNormFunction``        |
| ``layer_norm``          | ``tinyllm.nn.fused.layer_norm.LayerNormFunction``    |
| ``rope``                | ``tinyllm.nn.fused.rope.ApplyRope``                  |
| ``swiglu``              | ``tinyllm.nn.fused.swiglu.SwiGLUFunction``           |
| ``attention``           | ``tinyllm.nn.fused.attention.ScaledDotProductAttention`` |
| ``cross_entropy``       | ``tinyllm.autograd.ops.cross_entropy.CrossEntropy``  |
| ``adamw_step``          | ``tinyllm.optim.adamw.AdamW.step``                   |

Nothing here is fast: the point is that every line is the formula.

    >>> import numpy as np, tinyllm as tl
    >>> q = k = v = tl.tensor(np.ones((1, 1, 2, 4)))     # (B, H, T, D)
    >>> attention(q, k, v).shape
    (1, 1, 2, 4)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..autograd import Tensor, tensor
from ..autograd.ops import concatenate


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b for x (..., in), W (out, in), b (out,).

    >>> import tinyllm as tl
    >>> linear(tl.tensor([[1.0, 2.0]]), tl.tensor([[1.0, 0.0], [1.0, 1.0]]), tl.tensor([0.5, 0.5])).tolist()
    [[1.5, 3.5]]
    """
    y = x @ weight.T  # (..., out)
    return y if bias is None else y + bias


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """y = x / sqrt(mean(x^2) + eps) * w over the last axis (x (..., D), w (D,)).

    >>> import tinyllm as tl
    >>> rms_norm(tl.tensor([[3.0, 4.0]]), tl.tensor([1.0, 1.0]), eps=0.0).numpy().astype(float).round(4).tolist()
    [[0.8485, 1.1314]]
    """
    mean_square = (x * x).mean(axis=-1, keepdims=True)  # (..., 1)
    return x * (mean_square + eps).rsqrt() * weight  # (..., D)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """y = (x - mean(x)) / sqrt(var(x) + eps) * w + b over the last axis (GPT-2's norm; LLaMA uses RMSNorm)."""
    centered = x - x.mean(axis=-1, keepdims=True)  # (..., D)
    variance = (centered * centered).mean(axis=-1, keepdims=True)  # (..., 1)
    return centered * (variance + eps).rsqrt() * weight + bias


def rope(x: Tensor, cos: Any, sin: Any) -> Tensor:
    """Rotate each feature pair (x1, x2) = (x[..., i], x[..., i + D/2]) of x (..., T, D) by its angle.

    ``cos``/``sin`` (T, D/2) hold cos(pos * freq_i) and sin(pos * freq_i), e.g. from
    ``tinyllm.nn.rotary.RotaryEmbedding.tables``. A 2-D rotation of every pair:

        y1 = x1 cos - x2 sin
        y2 = x2 cos + x1 sin
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # (..., T, D/2) each: the pairs (i, i + D/2)
    c, s = tensor(cos, dtype=x.dtype), tensor(sin, dtype=x.dtype)  # constants, (T, D/2)
    return concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)  # (..., T, D)


def swiglu(a: Tensor, b: Tensor) -> Tensor:
    """silu(a) * b = a * sigmoid(a) * b, the gate of LLaMA's feed-forward block (a, b the same shape)."""
    return a * a.sigmoid() * b


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along ``axis``, after subtracting the row maximum so that exp cannot overflow.

    The shift changes nothing (it cancels between numerator and denominator), so it is taken
    as a constant: ``detach`` keeps it out of the graph.

    >>> import tinyllm as tl
    >>> softmax(tl.tensor([0.0, 0.0, float("-inf")])).tolist()
    [0.5, 0.5, 0.0]
    """
    shifted = x - x.max(axis=axis, keepdims=True).detach()
    e = shifted.exp()
    return e / e.sum(axis=axis, keepdims=True)


def repeat_kv(x: Tensor, n_heads: int) -> Tensor:
    """(B, Hkv, S, D) -> (B, H, S, D): each key/value head repeated for the H / Hkv query heads that read it.

    Query head h reads key/value head h // G with G = H / Hkv (grouped-query attention, as
    Hugging Face's ``repeat_kv``). The fused attention never makes this copy.
    """
    B, Hkv, S, D = x.shape
    group = n_heads // Hkv
    x = x.reshape(B, Hkv, 1, S, D).broadcast_to((B, Hkv, group, S, D))  # (B, Hkv, G, S, D)
    return x.reshape(B, n_heads, S, D)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    is_causal: bool = True,
    scale: float | None = None,
    keep: Any = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) v, for q (B, H, T, D) and k, v (B, Hkv, S, D).

    Step by step: repeat the key/value heads up to H, score every query against every key,
    forbid the future (query i is at position i + S - T, so it sees keys 0 .. i + S - T; S > T
    when earlier keys come from a KV cache), softmax each row, optionally drop entries with the
    boolean mask ``keep`` (B, H, T, S) and rescale by 1 / (1 - dropout_p), and average the values.
    """
    B, H, T, D = q.shape
    S = k.shape[2]
    k, v = repeat_kv(k, H), repeat_kv(v, H)  # (B, H, S, D)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    scores = (q @ k.swapaxes(-1, -2)) * scale  # (B, H, T, S)
    if is_causal:
        future = np.triu(np.ones((T, S), dtype=bool), k=S - T + 1)  # True where key j is after query i
        scores = scores.masked_fill(tensor(future), -np.inf)
    probs = softmax(scores, axis=-1)  # (B, H, T, S), each row sums to 1
    if keep is not None:
        probs = probs * tensor(keep / (1.0 - dropout_p), dtype=probs.dtype)
    return probs @ v  # (B, H, T, D)


def cross_entropy(logits: Tensor, targets: Any, ignore_index: int = -100) -> Tensor:
    """Mean over the kept rows of -log softmax(logits)[target], for logits (..., V) and integer targets (...).

    Rows whose target is ``ignore_index`` count neither in the sum nor in the mean.

    >>> import math, tinyllm as tl
    >>> round(cross_entropy(tl.tensor([[0.0, 0.0, 0.0, 0.0]]), [2]).item(), 4) == round(math.log(4), 4)
    True
    """
    targets = targets.numpy() if isinstance(targets, Tensor) else np.asarray(targets)
    V = logits.shape[-1]
    shifted = logits - logits.max(axis=-1, keepdims=True).detach()  # (..., V), as in softmax
    log_probs = shifted - shifted.exp().sum(axis=-1, keepdims=True).log()  # log softmax, (..., V)
    keep = targets != ignore_index  # (...)
    onehot = (np.arange(V) == np.where(keep, targets, 0)[..., None]) & keep[..., None]  # (..., V)
    picked = log_probs * tensor(onehot, dtype=log_probs.dtype)  # log p(target) in one place per row
    return -picked.sum() / int(keep.sum())


def adamw_step(
    param: Any,
    grad: Any,
    m: Any,
    v: Any,
    t: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> tuple[Any, Any, Any]:
    """One AdamW update of one parameter, on plain arrays; returns the new (param, m, v).

    ``t`` is the step number, starting at 1; ``m`` and ``v`` start as zeros. Nothing is
    updated in place (``tinyllm.optim.AdamW`` does the same in place, with one scratch buffer).

    Bias correction: m and v start at 0, so after t steps m is (1 - beta1^t) times the average
    gradient it estimates (the weights beta1^k (1 - beta1) of the past gradients sum to
    1 - beta1^t, not 1). Dividing by 1 - beta^t undoes that shrinkage; it matters only early on.

    >>> import numpy as np
    >>> p, m, v = adamw_step(np.array([1.0]), np.array([0.5]), np.zeros(1), np.zeros(1), t=1, lr=0.1, weight_decay=0.0)
    >>> p.round(6).tolist()            # the first step moves every parameter by about lr, whatever |g|
    [0.9]
    """
    beta1, beta2 = betas
    param = param - lr * weight_decay * param  # decoupled weight decay: not mixed into the gradient
    m = beta1 * m + (1 - beta1) * grad  # running mean of g
    v = beta2 * v + (1 - beta2) * grad * grad  # running mean of g^2
    m_hat = m / (1 - beta1**t)  # bias-corrected
    v_hat = v / (1 - beta2**t)
    param = param - lr * m_hat / (v_hat**0.5 + eps)
    return param, m, v
