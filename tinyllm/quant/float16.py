"""``float16_to_float32``: widening float16 scales by moving bits, because NumPy's own cast is slow.

Quantized weights keep their scales in float16 (as GGUF does) and widen a block of them to
float32 every time the block is used. NumPy converts float16 one value at a time in C (about
1.4 ns a value on the CPU this was measured on), which for a q4 model is a sizeable share of a
decoding step. Rearranging the bits with integer operations, which NumPy runs vectorised, is
about twice as fast, and exact:

    float16:  sign (1 bit) | exponent (5 bits, bias 15)  | mantissa (10 bits)
    float32:  sign (1 bit) | exponent (8 bits, bias 127) | mantissa (23 bits)

1. Shift the 15 exponent+mantissa bits left by 13: the mantissa lands in the top of float32's
   mantissa and the exponent in float32's exponent field, which now reads 127 - 15 = 112 too low.
2. Multiply by 2^112 (a float multiplication), which adds exactly 112 to the exponent. A float16
   subnormal (exponent 0) becomes a float32 subnormal times 2^112, normalised by the hardware:
   also exact.
3. Put the sign bit back (bit 15 -> bit 31).

Infinities and NaNs come out wrong (finite), which is fine for scales: quantizing never writes them.

    >>> float16_to_float32(np.array([1.0, -2.5, 6e-08, 65504.0], dtype=np.float16)).tolist()
    [1.0, -2.5, 5.960464477539063e-08, 65504.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import get_backend


def float16_to_float32(half: Any) -> Any:
    """The float32 values of a finite float16 array, exactly (see the module docstring)."""
    xp = get_backend().xp
    bits = half.view(xp.uint16).astype(xp.uint32)
    single = ((bits & 0x7FFF) << 13).view(xp.float32)  # exponent 112 too low
    single *= np.float32(2.0**112)
    bits &= 0x8000
    bits <<= 16  # the sign, in float32's place
    single.view(xp.uint32)[...] |= bits
    return single


FAST_PATH_MIN_SIZE = 8192  # below this, the six small operations cost more than NumPy's one cast


def as_float(array: Any, dtype: Any) -> Any:
    """``array.astype(dtype)``, taking the faster path above for large float16 -> float32 conversions."""
    if array.dtype == np.float16 and np.dtype(dtype) == np.float32 and array.size >= FAST_PATH_MIN_SIZE:
        return float16_to_float32(array)
    return array.astype(dtype)
