"""``tinyllm.quant``: weight-only quantization for inference (int8 and 4-bit), GGUF blocks loaded as they are.

    import tinyllm as tl
    model, tokenizer = tl.load_pretrained(path)
    tl.quantize(model, "q4", include_embeddings=True)   # in place; 0.16x the weight bytes
    with tl.no_grad():
        logits, _ = model(ids)

Files, one concept each:

- weight.py     ``QuantizedWeight``: a matrix kept quantized, multiplied a block of rows at a time
- int8.py       ``Int8Weight``: symmetric int8, in groups (GGUF Q8_0) or one scale per output row
- q4.py         ``Q4Weight``: 4-bit with scale and minimum per group, two values a byte (GGUF Q4_1, Q4_0)
- linear.py     ``QuantizedLinear``: gradients flow to its input (for LoRA on a quantized base), never to W
- embedding.py  ``QuantizedEmbedding``
- convert.py    ``quantize(model, scheme)``, ``weight_bytes(model)``
- assemble.py   building a quantized Transformer without ever holding all its float weights
- checkpoint.py ``save_quantized`` / ``load_quantized`` (safetensors + a JSON description)
- gguf.py       ``load_gguf_quantized``: GGUF Q8_0/Q4_0/Q4_1 blocks straight into these layers

What quantization buys, by backend (docs/quantization.md has the measurements and the reasons):

- Memory, everywhere: int8 keeps 0.25-0.27x of the float32 weight bytes, q4 0.16x.
- CPU (NumPy): float32 decoding streams every weight once per token, so it is bound by memory
  bandwidth. NumPy has no int8 or 4-bit matrix product, so each block of weights is converted to
  float32 (in cache) before BLAS multiplies it: the bytes read shrink 4-6x, but the conversion and
  the per-group scales cost CPU time. Measured on SmolLM2 (1 thread): int8 in groups of 32 (the
  default) decodes 1.1x as fast as float32, int8 with one scale per row 1.45x, q4 0.83x. Prompts
  (many rows at once) share each block's dequantization: 0.9-1.1x of float32.
- GPU (CuPy): the same code runs through ``xp``. Without a fused dequantize-and-multiply kernel
  (tinyllm has none yet; no GPU was available to build and time one) a GPU gains memory, not speed.
"""

from .convert import quantize, quantize_weight, weight_bytes
from .embedding import QuantizedEmbedding
from .int8 import Int8Weight, quantize_int8
from .linear import QuantizedLinear, QuantizedLinearFunction
from .q4 import Q4Weight, pack_nibbles, quantize_q4, unpack_nibbles
from .weight import QuantizedWeight

__all__ = [
    "Int8Weight",
    "Q4Weight",
    "QuantizedEmbedding",
    "QuantizedLinear",
    "QuantizedLinearFunction",
    "QuantizedWeight",
    "pack_nibbles",
    "quantize",
    "quantize_int8",
    "quantize_q4",
    "quantize_weight",
    "unpack_nibbles",
    "weight_bytes",
]
