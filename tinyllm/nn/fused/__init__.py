"""Fused Functions for the hot paths of a transformer, each one op with a hand-derived backward.

Composing these from primitive ops would work (``tinyllm.nn.reference`` does exactly
that, and the tests check every fused op against it), but every primitive allocates its
output and saves its inputs; one fused op does the same math with a few arrays and one backward.
"""

from .attention import ScaledDotProductAttention, scaled_dot_product_attention
from .layer_norm import LayerNormFunction, layer_norm
from .linear import LinearFunction, linear
from .rms_norm import RMSNormFunction, rms_norm
from .rope import ApplyRope, apply_rope
from .swiglu import SwiGLUFunction, swiglu
