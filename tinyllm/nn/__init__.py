"""``tinyllm.nn``: modules (layers with parameters) and ``functional`` (the ops without state).

Files, one concept each:

- module.py        ``Module``, ``Parameter``, ``ModuleList``
- linear.py, embedding.py, normalization.py (RMSNorm, LayerNorm)
- rotary.py        RoPE tables and the weight permutation between pairing conventions
- attention.py     causal grouped-query attention with optional QK-norm
- feed_forward.py  SwiGLU and GELU MLPs
- block.py         a pre-norm transformer block
- kv_cache.py      the per-layer key/value cache used for generation
- reference.py     the plain versions of the fused ops, from primitive ops: read these first
- fused/           one Function per hot path, with hand-derived backward
- functional.py    ``F.softmax``, ``F.cross_entropy``, ``F.scaled_dot_product_attention``, ...
"""

from . import functional, init
from .attention import Attention
from .block import TransformerBlock
from .embedding import Embedding
from .feed_forward import GeluMLP, SwiGLU
from .kv_cache import KVCache
from .linear import Linear
from .module import Module, ModuleList, Parameter
from .normalization import LayerNorm, RMSNorm
from .rotary import RotaryEmbedding, half_split_to_interleaved, interleaved_to_half_split

__all__ = [
    "Attention",
    "Embedding",
    "GeluMLP",
    "KVCache",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
    "Parameter",
    "RMSNorm",
    "RotaryEmbedding",
    "SwiGLU",
    "TransformerBlock",
    "functional",
    "half_split_to_interleaved",
    "init",
    "interleaved_to_half_split",
]
