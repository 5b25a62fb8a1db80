"""``tinyllm.nn.functional`` (``F``): the ops layers are made of, usable without modules.

    >>> import tinyllm as tl
    >>> from tinyllm.nn import functional as F
    >>> F.softmax(tl.tensor([0.0, 0.0]), axis=-1).tolist()
    [0.5, 0.5]

Primitive ops come from ``tinyllm.autograd.ops``; the fused transformer ops
(attention, RMSNorm, RoPE, SwiGLU, linear) from ``tinyllm.nn.fused``.
"""

from __future__ import annotations

from ..autograd.ops.cross_entropy import cross_entropy
from ..autograd.ops.dropout import dropout
from ..autograd.ops.embedding import embedding
from ..autograd.ops.indexing import masked_fill, where
from ..autograd.ops.softmax import log_softmax, logsumexp, softmax
from ..autograd.ops.unary import gelu, relu, sigmoid, silu, tanh
from .fused.attention import scaled_dot_product_attention
from .fused.layer_norm import layer_norm
from .fused.linear import linear
from .fused.rms_norm import rms_norm
from .fused.rope import apply_rope
from .fused.swiglu import swiglu

__all__ = [
    "apply_rope",
    "cross_entropy",
    "dropout",
    "embedding",
    "gelu",
    "layer_norm",
    "linear",
    "log_softmax",
    "logsumexp",
    "masked_fill",
    "relu",
    "rms_norm",
    "scaled_dot_product_attention",
    "sigmoid",
    "silu",
    "softmax",
    "swiglu",
    "tanh",
    "where",
]
