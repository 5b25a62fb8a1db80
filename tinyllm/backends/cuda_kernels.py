"""Fused CUDA kernels for the CuPy backend: the hot ops of a training step, each in one or two launches.

The NumPy versions in ``tinyllm.nn.fused``, ``tinyllm.autograd.ops`` and ``tinyllm.optim`` stay the
readable reference: each kernel here computes exactly the formula of the Function it fuses (named
in its docstring), and ``tests/test_cuda_kernels.py`` checks that the two agree within float32
rounding: on a GPU, and in CI on a CPU, where the simulated CuPy of the tests compiles this C with g++.
A Function asks its backend for ``kernels`` and uses them when they apply::

    kernels = get_backend().kernels          # None on NumPy; this module on CuPy
    if kernels is not None and kernels.usable(x, weight):
        y, xhat, r = kernels.rms_norm_forward(x, weight, eps)
    else:
        ...the NumPy code, unchanged...

Why fuse: written with array operations, ``y = x * r * w`` allocates and writes a temporary per
operator, so a few lines of math pass over the (B, T, D) activations five to ten times. Each kernel
reads its inputs once and writes its outputs once. float32 is fused, and float16 and bfloat16 where a kernel
says so (RMSNorm, SwiGLU, RoPE, the attention softmax and the tiled attention: 16-bit in and out, float
arithmetic inside; the mixed precision bookkeeping); other dtypes (the float64 of the gradient checks) take
the NumPy path. ``TINYLLM_KERNELS=0`` turns them all off.

This module imports CuPy; only ``CupyBackend`` imports it, so nothing here is loaded on the NumPy path.
Kernels compile on first use (seconds) and are cached on disk by CuPy (``~/.cupy/kernel_cache``).
"""

from __future__ import annotations

import functools
from typing import Any

import cupy
import numpy as np


def usable(*arrays: Any, half: bool = False) -> bool:
    """True when every array is float32 (what these kernels are written for); with ``half``, also when
    every array is float16, or every one bfloat16 (for the kernels written for 16-bit floats too: RMSNorm's,
    SwiGLU's, RoPE's, the attention softmax's and the tiled attention's)."""
    name = arrays[0].dtype.name
    if name != "float32" and not (half and name in ("float16", "bfloat16")):
        return False
    if name == "bfloat16" and not bfloat16_views_work():
        return False  # this CuPy cannot hand bfloat16 over as bits: the array code, as before these kernels
    return all(a.dtype.name == name for a in arrays)


@functools.cache
def bfloat16_views_work() -> bool:
    """Whether this CuPy views a bfloat16 array as uint16 and back (how bfloat16 reaches the kernels): asked
    once. CuPy's bfloat16 is experimental (CuPy 14); where it cannot, bfloat16 activations run the array code."""
    try:
        import ml_dtypes

        a = cupy.zeros(2, dtype=ml_dtypes.bfloat16)
        return a.view(cupy.uint16).dtype == np.uint16 and a.view(cupy.uint16).view(a.dtype).dtype == a.dtype
    except Exception:  # noqa: BLE001 - any failure means: do not use the views
        return False


def is_16bit(*arrays: Any) -> bool:
    """True when every array is float16, or every one bfloat16 (the mixed-precision kernels take either)."""
    name = arrays[0].dtype.name
    return name in ("float16", "bfloat16") and all(a.dtype.name == name for a in arrays)


# ---------------------------------------------------------------------------------------- shared pieces
# 16-bit floats in a RawKernel: held as their bits (unsigned short) and converted with the GPU's own
# instructions, so no header is needed: float16 by PTX's cvt (round to nearest even, as NumPy's astype),
# bfloat16 by float32's top 16 bits (rounded to nearest even, as ml_dtypes). load/store overload on the
# pointer type, so one template body serves float32, float16 (unsigned short) and bfloat16 (bfloat16_bits).
_HALF_CVT_SOURCE = r"""
__device__ __forceinline__ float half_to_float(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short float_to_half(float f) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
"""
_BF16_SOURCE = r"""
__device__ __forceinline__ float bf16_to_float(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ unsigned short float_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x0040u);   // NaN stays a NaN
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);                   // round to nearest even
}
"""
_HALF_SOURCE = _HALF_CVT_SOURCE + _BF16_SOURCE + r"""
struct bfloat16_bits { unsigned short bits; };   // a bfloat16, as its bits: its own type, so load/store can tell
__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const unsigned short* p) { return half_to_float(*p); }   // float16
__device__ __forceinline__ float load(const bfloat16_bits* p) { return bf16_to_float(p->bits); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(unsigned short* p, float v) { *p = float_to_half(v); }
__device__ __forceinline__ void store(bfloat16_bits* p, float v) { p->bits = float_to_bf16(v); }
"""

# The kernels written with a type T (ElementwiseKernel, ReductionKernel) read a T with as_float and write one
# with assign. T is float32 or CuPy's float16 class, converted as C++ converts them; or unsigned short, which in
# these kernels always holds a bfloat16's bits: the wrappers hand a bfloat16 array over as a uint16 view of the
# same memory (_bits), so the kernels do not depend on CuPy's own (experimental) bfloat16 type.
_SCALAR_PREAMBLE = _BF16_SOURCE + r"""
template <typename X> __device__ __forceinline__ float as_float(X x) { return (float)x; }
__device__ __forceinline__ float as_float(unsigned short x) { return bf16_to_float(x); }
template <typename X> __device__ __forceinline__ void assign(X& out, float v) { out = X(v); }
__device__ __forceinline__ void assign(unsigned short& out, float v) { out = float_to_bf16(v); }
"""


def _bits(x: Any) -> Any:
    """A bfloat16 array as its bits (a uint16 view of the same memory), as the T-typed kernels take it;
    any other array as it is."""
    return x.view(cupy.uint16) if x.dtype.name == "bfloat16" else x


def _as_dtype(dtype: Any, *arrays: Any) -> Any:
    """The kernel's outputs in the inputs' dtype: uint16 bits viewed as bfloat16 again; others as they are."""
    viewed = tuple(a.view(dtype) for a in arrays) if dtype.name == "bfloat16" else arrays
    return viewed[0] if len(viewed) == 1 else viewed

# Reductions over a thread block, for the kernels that give one block to each row (RMSNorm, softmax).
_BLOCK_REDUCE_SOURCE = r"""
#define NEG_INF __int_as_float(0xff800000)
__device__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, offset));
    return v;
}
__device__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffff, v, offset);
    return v;
}
// The max (or sum) of v over the whole block, returned to every thread.
__device__ float block_reduce(float v, float* shared, bool is_max) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
    v = is_max ? warp_max(v) : warp_sum(v);
    __syncthreads();                       // shared may still be read from the previous call
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = threadIdx.x < n_warps ? shared[threadIdx.x] : (is_max ? NEG_INF : 0.0f);
        v = is_max ? warp_max(v) : warp_sum(v);
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    return shared[0];
}
"""


# ---------------------------------------------------------------------------------------- RMSNorm
# Fuses tinyllm.nn.fused.rms_norm.RMSNormFunction:
#   r = 1 / sqrt(mean(x^2) + eps);  xhat = x * r;  y = xhat * w
#   dw = sum over rows of dy * xhat;  dx = r * (dy * w - xhat * mean(dy * w * xhat))
# T is float32, float16 or bfloat16: the statistics r and the sums are float32 either way, the arithmetic is
# float (a 16-bit value converts to float when read, and back, rounded, when written).

_sum_squares = cupy.ReductionKernel(
    "T x", "float32 total", "as_float(x) * as_float(x)", "a + b", "total = a", "0", "tinyllm_sum_squares",
    preamble=_SCALAR_PREAMBLE,
)
_inverse_rms = cupy.ElementwiseKernel(
    "float32 total, float32 inv_d, float32 eps", "float32 r", "r = 1.0f / sqrtf(total * inv_d + eps)",
    "tinyllm_inverse_rms",
)
_rms_apply = cupy.ElementwiseKernel(
    "T x, float32 r, T w", "T xhat, T y", "float v = as_float(x) * r; assign(xhat, v); assign(y, v * as_float(w))",
    "tinyllm_rms_apply", preamble=_SCALAR_PREAMBLE,
)
_sum_products = cupy.ReductionKernel(  # (in a reduction, a and b name the partial results: not for inputs)
    "T x1, T x2", "T total", "as_float(x1) * as_float(x2)", "a + b", "assign(total, a)", "0",
    "tinyllm_sum_products",
    reduce_type="float",  # the partial sums a, b in float (a C type); the total rounded once to T
    preamble=_SCALAR_PREAMBLE,
)
_sum_products3 = cupy.ReductionKernel(
    "T x1, T x2, T x3", "float32 total", "as_float(x1) * as_float(x2) * as_float(x3)", "a + b", "total = a", "0",
    "tinyllm_sum_products3", preamble=_SCALAR_PREAMBLE,
)
_rms_backward = cupy.ElementwiseKernel(
    "T gy, T w, T xhat, float32 r, float32 dot, float32 inv_d",
    "T gx",
    "assign(gx, r * (as_float(gy) * as_float(w) - as_float(xhat) * (dot * inv_d)))",
    "tinyllm_rms_backward", preamble=_SCALAR_PREAMBLE,
)


# The same two passes over a row in ONE launch, for C-contiguous arrays: a thread block per row sums its
# squares (block_reduce), then every thread writes its share of xhat and y; the backward's row sum
# sum(dy * w * xhat) and dx likewise (dw, a sum over rows, stays a reduction). A decoded token runs 61 RMSNorms
# of one row each in a SmolLM2-sized model: launches, not arithmetic, are their cost.
_RMS_ROWS_SOURCE = _HALF_SOURCE + _BLOCK_REDUCE_SOURCE + r"""
template <typename Scalar>
__device__ void rms_norm_row(const Scalar* x, const Scalar* w, Scalar* xhat, Scalar* y, float* r, int D,
                             float inv_d, float eps) {
    __shared__ float shared[32];
    const long long row = blockIdx.x;
    x += row * D; xhat += row * D; y += row * D;
    float total = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) { const float v = load(x + j); total += v * v; }
    total = block_reduce(total, shared, false);
    const float rr = 1.0f / sqrtf(total * inv_d + eps);
    if (threadIdx.x == 0) r[row] = rr;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const float v = load(x + j) * rr;
        store(xhat + j, v);
        store(y + j, v * load(w + j));
    }
}
template <typename Scalar>
__device__ void rms_norm_backward_row(const Scalar* gy, const Scalar* w, const Scalar* xhat, const float* r,
                                      Scalar* gx, int D, float inv_d) {
    __shared__ float shared[32];
    const long long row = blockIdx.x;
    gy += row * D; xhat += row * D; gx += row * D;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) dot += load(gy + j) * load(w + j) * load(xhat + j);
    dot = block_reduce(dot, shared, false);
    const float rr = r[row];
    for (int j = threadIdx.x; j < D; j += blockDim.x)
        store(gx + j, rr * (load(gy + j) * load(w + j) - load(xhat + j) * (dot * inv_d)));
}
extern "C" __global__ void tinyllm_rms_norm_rows(const float* x, const float* w, float* xhat, float* y, float* r,
                                                 int D, float inv_d, float eps) {
    rms_norm_row(x, w, xhat, y, r, D, inv_d, eps);
}
extern "C" __global__ void tinyllm_rms_norm_rows_f16(const unsigned short* x, const unsigned short* w,
        unsigned short* xhat, unsigned short* y, float* r, int D, float inv_d, float eps) {
    rms_norm_row(x, w, xhat, y, r, D, inv_d, eps);
}
extern "C" __global__ void tinyllm_rms_norm_backward_rows(const float* gy, const float* w, const float* xhat,
                                                          const float* r, float* gx, int D, float inv_d) {
    rms_norm_backward_row(gy, w, xhat, r, gx, D, inv_d);
}
extern "C" __global__ void tinyllm_rms_norm_backward_rows_f16(const unsigned short* gy, const unsigned short* w,
        const unsigned short* xhat, const float* r, unsigned short* gx, int D, float inv_d) {
    rms_norm_backward_row(gy, w, xhat, r, gx, D, inv_d);
}
extern "C" __global__ void tinyllm_rms_norm_rows_bf16(const bfloat16_bits* x, const bfloat16_bits* w,
        bfloat16_bits* xhat, bfloat16_bits* y, float* r, int D, float inv_d, float eps) {
    rms_norm_row(x, w, xhat, y, r, D, inv_d, eps);
}
extern "C" __global__ void tinyllm_rms_norm_backward_rows_bf16(const bfloat16_bits* gy, const bfloat16_bits* w,
        const bfloat16_bits* xhat, const float* r, bfloat16_bits* gx, int D, float inv_d) {
    rms_norm_backward_row(gy, w, xhat, r, gx, D, inv_d);
}
"""
# An entry point per dtype (by name): "float32" -> the kernel's name, "float16" -> _f16, "bfloat16" -> _bf16.
_TAGS = {"float32": "", "float16": "_f16", "bfloat16": "_bf16"}
_rms_rows = {dtype: cupy.RawKernel(_RMS_ROWS_SOURCE, "tinyllm_rms_norm_rows" + tag) for dtype, tag in _TAGS.items()}
_rms_backward_rows = {dtype: cupy.RawKernel(_RMS_ROWS_SOURCE, "tinyllm_rms_norm_backward_rows" + tag)
                      for dtype, tag in _TAGS.items()}
_ROW_THREADS = 128


def _rows_fit(*arrays: Any) -> bool:
    return all(a.flags.c_contiguous for a in arrays) and arrays[0].size > 0


def rms_norm_forward(x: Any, weight: Any, eps: float) -> tuple[Any, Any, Any]:
    """(y, xhat, r) of RMSNorm over the last axis: one launch (a block per row) for C-contiguous arrays, else two
    (sum of squares, then everything else)."""
    D = x.shape[-1]
    inv_d = np.float32(1.0 / D)
    if _rows_fit(x, weight):
        xhat, y = cupy.empty_like(x), cupy.empty_like(x)
        r = cupy.empty(x.shape[:-1] + (1,), dtype=cupy.float32)  # (..., 1)
        _rms_rows[x.dtype.name]((x.size // D,), (_ROW_THREADS,),
                                (_bits(x), _bits(weight), _bits(xhat), _bits(y), r, np.int32(D), inv_d, np.float32(eps)))
        return y, xhat, r
    r = _inverse_rms(_sum_squares(_bits(x), axis=x.ndim - 1, keepdims=True), inv_d, np.float32(eps))  # (..., 1)
    xhat, y = _as_dtype(x.dtype, *_rms_apply(_bits(x), r, _bits(weight)))  # (..., D) each
    return y, xhat, r


def rms_norm_backward(gy: Any, xhat: Any, r: Any, weight: Any) -> tuple[Any, Any]:
    """(dx, dw) of RMSNorm: dw a reduction over the rows; dx one launch (a block per row) for C-contiguous arrays,
    else a reduction and an elementwise pass."""
    D = gy.shape[-1]
    inv_d = np.float32(1.0 / D)
    gy_, xhat_, weight_ = _bits(gy), _bits(xhat), _bits(weight)
    gw = _as_dtype(gy.dtype, _sum_products(gy_, xhat_, axis=tuple(range(gy.ndim - 1))))  # (D,) summed in float32
    if _rows_fit(gy, xhat, r, weight):
        gx = cupy.empty_like(gy)
        _rms_backward_rows[gy.dtype.name]((gy.size // D,), (_ROW_THREADS,),
                                          (gy_, weight_, xhat_, r, _bits(gx), np.int32(D), inv_d))
        return gx, gw
    dot = _sum_products3(gy_, weight_, xhat_, axis=gy.ndim - 1, keepdims=True)  # (..., 1): sum(dy * w * xhat)
    gx = _as_dtype(gy.dtype, _rms_backward(gy_, weight_, xhat_, r, dot, inv_d))
    return gx, gw


# ---------------------------------------------------------------------------------------- SwiGLU
# Fuses tinyllm.nn.fused.swiglu.SwiGLUFunction: s = sigmoid(a) (as (1 + tanh(a/2)) / 2, no overflow),
#   y = a * s * b;  da = dy * b * (s + a * s * (1 - s));  db = dy * a * s

# T is float32, float16 or bfloat16; the arithmetic is float either way.

_swiglu_forward = cupy.ElementwiseKernel(
    "T a, T b", "T y, T s",
    "float af = as_float(a); float sf = 0.5f * (1.0f + tanhf(0.5f * af)); assign(s, sf);"
    "assign(y, af * sf * as_float(b))",
    "tinyllm_swiglu_forward", preamble=_SCALAR_PREAMBLE,
)
_swiglu_backward = cupy.ElementwiseKernel(
    "T gy, T a, T b, T s", "T ga, T gb",
    "float g = as_float(gy), sf = as_float(s), silu = as_float(a) * sf; assign(gb, g * silu);"
    "assign(ga, g * as_float(b) * (sf + silu * (1.0f - sf)))",
    "tinyllm_swiglu_backward", preamble=_SCALAR_PREAMBLE,
)


def swiglu_forward(a: Any, b: Any) -> tuple[Any, Any]:
    """(y, s): silu(a) * b and the sigmoid s that backward needs, in one pass."""
    return _as_dtype(a.dtype, *_swiglu_forward(_bits(a), _bits(b)))


def swiglu_backward(gy: Any, a: Any, b: Any, s: Any) -> tuple[Any, Any]:
    """(da, db) in one pass."""
    return _as_dtype(a.dtype, *_swiglu_backward(_bits(gy), _bits(a), _bits(b), _bits(s)))


# ---------------------------------------------------------------------------------------- RoPE
# Fuses tinyllm.nn.fused.rope.ApplyRope (half-split pairs x1 = x[..., :D/2], x2 = x[..., D/2:]):
#   forward  y1 = x1 cos - x2 sin,   y2 = x2 cos + x1 sin
#   backward the same rotation with -sin.
# The kernel writes straight into the two halves of the output (strided views): one launch.
# T (x and y) is float32, float16 or bfloat16, C (the tables) any of those; the arithmetic is float either way,
# so a 16-bit x rotated by float32 tables is rounded once, when y is written.

_rotate = cupy.ElementwiseKernel(
    "T x1, T x2, C c, C s, float32 sign", "T y1, T y2",
    "float a = as_float(x1), b = as_float(x2), cf = as_float(c), sn = sign * as_float(s);"
    "assign(y1, a * cf - b * sn); assign(y2, b * cf + a * sn)",
    "tinyllm_rope", preamble=_SCALAR_PREAMBLE,
)


def rope(x: Any, cos: Any, sin: Any, inverse: bool = False) -> Any:
    """Rotate x (..., T, D) by the tables (T, D/2) (or per row (B, 1, T, D/2)); ``inverse``: by the opposite
    angles (the backward). x float32, float16 or bfloat16; the tables any of those, whatever x is."""
    half = x.shape[-1] // 2
    y = cupy.empty_like(x)
    xb, yb = _bits(x), _bits(y)
    _rotate(xb[..., :half], xb[..., half:], _bits(cos), _bits(sin), np.float32(-1.0 if inverse else 1.0),
            yb[..., :half], yb[..., half:])
    return y


# ---------------------------------------------------------------------------------------- cross-entropy
# Fuses tinyllm.autograd.ops.cross_entropy.CrossEntropy:
#   forward  m = max(x), log_sum = log(sum(exp(x - m)))    (shifted_logsumexp: two passes, no (N, V) temporary)
#   backward dx = (exp(x - lse) - onehot(t)) * scale[row]   (one pass, was four)

_sum_exp_shifted = cupy.ReductionKernel(
    "float32 x, float32 m", "float32 total", "expf(x - m)", "a + b", "total = logf(a)", "0", "tinyllm_log_sum_exp"
)
_cross_entropy_backward = cupy.ElementwiseKernel(
    "float32 x, raw float32 lse, raw I t, raw float32 scale, int64 V",
    "float32 g",
    "long long row = i / V; long long col = i % V;"
    "g = (expf(x - lse[row]) - (col == (long long)t[row] ? 1.0f : 0.0f)) * scale[row]",
    "tinyllm_cross_entropy_backward",
)


def shifted_logsumexp_rows(x: Any) -> tuple[Any, Any]:
    """(m, log(sum(exp(x - m)))) over the last axis of x (N, V), keepdims: as ``shifted_logsumexp``."""
    m = x.max(axis=-1, keepdims=True)  # (N, 1)
    return m, _sum_exp_shifted(x, m, axis=x.ndim - 1, keepdims=True)  # (N, 1) each


def cross_entropy_backward(x: Any, lse: Any, targets: Any, scale: Any) -> Any:
    """dx (N, V) = (softmax(x) - onehot(targets)) * scale[:, None], computed in one pass over x."""
    x = cupy.ascontiguousarray(x)  # the kernel's linear index i must be row * V + col
    grad = cupy.empty_like(x)
    _cross_entropy_backward(x, cupy.ascontiguousarray(lse), cupy.ascontiguousarray(targets),
                            cupy.ascontiguousarray(scale, dtype=np.float32), np.int64(x.shape[-1]), grad)
    return grad


# ---------------------------------------------------------------------------------------- attention softmax
# Fuses the causal mask and row softmax of tinyllm.nn.fused.attention.ScaledDotProductAttention.forward
# (mask add, max, subtract, exp, sum, scale: six passes over the (B, Hkv, G*T, S) scores) into one
# kernel, one thread block per row, in place. Row r of the scores is query i = r % T (rows are ordered
# (b, kv head, g, i)); with the causal mask it sees keys 0 .. i + S - T, the rest get probability 0.
# And its backward's dscores = P * (dP - rowsum(dout * out)) in one pass.

_SOFTMAX_SOURCE = _HALF_SOURCE + _BLOCK_REDUCE_SOURCE + r"""
// Scalar is float (float32 scores), unsigned short (float16 scores, as bits) or bfloat16_bits: the arithmetic
// is float.
template <typename Scalar>
__device__ void causal_softmax_row(Scalar* scores, long long n_rows, int S, int T, int causal, float scale) {
    __shared__ float shared[32];
    long long row = blockIdx.x;
    if (row >= n_rows) return;             // the whole block leaves together: no barrier is skipped
    Scalar* x = scores + row * (long long)S;
    int visible = causal ? (int)(row % T) + (S - T) + 1 : S;   // keys [0, visible) may be attended to
    float m = NEG_INF;
    for (int j = threadIdx.x; j < visible; j += blockDim.x) m = fmaxf(m, load(x + j) * scale);
    m = block_reduce(m, shared, true);
    float total = 0.0f;
    for (int j = threadIdx.x; j < visible; j += blockDim.x) {
        float e = expf(load(x + j) * scale - m);
        store(x + j, e);
        total += e;
    }
    total = block_reduce(total, shared, false);
    float inv = 1.0f / total;
    for (int j = threadIdx.x; j < S; j += blockDim.x) store(x + j, j < visible ? load(x + j) * inv : 0.0f);
}
extern "C" __global__ void tinyllm_causal_softmax(float* scores, long long n_rows, int S, int T, int causal,
                                                   float scale) {
    causal_softmax_row(scores, n_rows, S, T, causal, scale);
}
extern "C" __global__ void tinyllm_causal_softmax_f16(unsigned short* scores, long long n_rows, int S, int T,
                                                      int causal, float scale) {
    causal_softmax_row(scores, n_rows, S, T, causal, scale);
}
extern "C" __global__ void tinyllm_causal_softmax_bf16(bfloat16_bits* scores, long long n_rows, int S, int T,
                                                       int causal, float scale) {
    causal_softmax_row(scores, n_rows, S, T, causal, scale);
}
"""
# one source, compiled once, an entry point per dtype
_causal_softmax = {dtype: cupy.RawKernel(_SOFTMAX_SOURCE, "tinyllm_causal_softmax" + tag) for dtype, tag in _TAGS.items()}
_SOFTMAX_THREADS = 128

_softmax_backward = cupy.ElementwiseKernel(
    "T p, T g, T d, float32 scale", "T gs", "assign(gs, scale * (as_float(p) * (as_float(g) - as_float(d))))",
    "tinyllm_softmax_backward", preamble=_SCALAR_PREAMBLE,
)


def causal_softmax_(scores: Any, T: int, causal: bool, scale: float = 1.0) -> Any:
    """In place: the row softmax of ``scale * scores`` (..., S) (C-contiguous, float32, float16 or bfloat16), with the causal
    mask when ``causal``. The attention hands it the unscaled q k^T: the scale costs no launch of its own."""
    if not scores.flags.c_contiguous:
        raise ValueError("causal_softmax_ works in place on a C-contiguous array")
    S = scores.shape[-1]
    n_rows = scores.size // S
    _causal_softmax[scores.dtype.name]((n_rows,), (_SOFTMAX_THREADS,),
                                       (_bits(scores), np.int64(n_rows), np.int32(S), np.int32(T),
                                        np.int32(1 if causal else 0), np.float32(scale)))
    return scores


def row_dot(a: Any, b: Any) -> Any:
    """sum(a * b) over the last axis, keepdims: (..., D), (..., D) -> (..., 1), in one reduction (summed in float,
    rounded once to the inputs' dtype); the attention backward's rowdot = dout . out."""
    return _as_dtype(a.dtype, _sum_products(_bits(a), _bits(b), axis=a.ndim - 1, keepdims=True))


def softmax_backward(probs: Any, gprobs: Any, rowdot: Any, scale: float = 1.0) -> Any:
    """In place in gprobs: dscores = scale * probs * (gprobs - rowdot), rowdot (..., 1) broadcast; one pass.
    float32, float16 or bfloat16 (float arithmetic inside). With the attention's scale here, dq = dscores k and
    dk = dscores^T q need no multiplication of their own."""
    g = _bits(gprobs)
    _softmax_backward(_bits(probs), g, _bits(rowdot), np.float32(scale), g)  # reads its own g, then overwrites it
    return gprobs


# ---------------------------------------------------------------------------------------- tiled attention
# ScaledDotProductAttention without the (G*T, S) matrix (FlashAttention, Dao et al. 2022; its version 2's
# loop order): the same outputs and gradients as the array code above, computed tile by tile, so memory
# grows with T, not T^2. Off by default (TINYLLM_FLASH_ATTENTION=1 turns it on) until measured on a GPU:
# these loops run on CUDA cores, where the array code's matrix products use cuBLAS and tensor cores.
#
# Forward, one thread per query row r (a block holds FLASH_ROWS rows of one (batch, kv head)), keys in tiles
# of FLASH_KEYS staged in shared memory. The online softmax keeps, per row, the largest score m seen so far,
# l = sum over seen keys of exp(s_j - m) and o = sum of exp(s_j - m) v_j; a new tile with largest score m_t:
#     m' = max(m, m_t);  l = l e^(m - m') + sum_j e^(s_j - m');  o = o e^(m - m') + sum_j e^(s_j - m') v_j
# and at the end out = o / l, softmax's exact value, never having stored a row of scores. lse = m + log l is
# kept (one float a row) for the backward, which recomputes P = exp(s - lse) tile by tile:
#     dv_j = sum_r P_rj do_r;  dP_rj = do_r . v_j;  dS_rj = P_rj (dP_rj - delta_r),  delta_r = do_r . out_r
#     dk_j = sum_r dS_rj (scale q_r);  dq_r = scale sum_j dS_rj k_j
# in two kernels: one thread per key for dk, dv (summing over every query row: GQA's groups fold in for free),
# one thread per query row for dq. Row r is query i = r % T of its head; it sees keys j <= i + S - T if causal.
# D (head_dim) is a template parameter, so the per-thread arrays live in registers: 32, 64 and 128 are built.

FLASH_HEAD_DIMS = (32, 64, 128)
_FLASH_ROWS, _FLASH_KEYS = 64, 32

_FLASH_SOURCE = _HALF_SOURCE + r"""
#define NEG_INF __int_as_float(0xff800000)
#define FLASH_ROWS 64
#define FLASH_KEYS 32
// The keys a row may see, and the most any row of rows [r0, r0 + n) may see (how far the block's tiles go).
__device__ __forceinline__ int visible_keys(int r, int S, int T, int causal) { return causal ? r % T + S - T + 1 : S; }
__device__ __forceinline__ int block_keys(int r0, int n, int S, int T, int causal) {
    if (!causal) return S;
    int i0 = r0 % T;
    int last = i0 + n - 1 < T ? i0 + n - 1 : T - 1;   // rows wrap to i = 0 when a block spans two heads
    return last + S - T + 1;
}

template <int D, typename Scalar>
__device__ void flash_forward(const Scalar* q, const Scalar* k, const Scalar* v, Scalar* out, float* lse,
                              int R, int S, int T, int causal, float scale) {
    __shared__ float ks[FLASH_KEYS][D];
    __shared__ float vs[FLASH_KEYS][D];
    const long long head = blockIdx.y;                       // (batch, kv head)
    const int r0 = blockIdx.x * FLASH_ROWS, r = r0 + threadIdx.x;
    const bool active = r < R;
    const int visible = active ? visible_keys(r, S, T, causal) : 0;
    const int keys = block_keys(r0, R - r0 < FLASH_ROWS ? R - r0 : FLASH_ROWS, S, T, causal);
    q += head * R * D; k += head * S * D; v += head * S * D;
    float qr[D], o[D];
    for (int d = 0; d < D; ++d) { qr[d] = active ? load(q + (long long)r * D + d) * scale : 0.0f; o[d] = 0.0f; }
    float m = NEG_INF, l = 0.0f;
    for (int start = 0; start < keys; start += FLASH_KEYS) {
        __syncthreads();                                     // every thread is done with the previous tile
        for (int e = threadIdx.x; e < FLASH_KEYS * D; e += blockDim.x) {
            const int c = e / D, d = e % D, j = start + c;
            ks[c][d] = j < S ? load(k + (long long)j * D + d) : 0.0f;
            vs[c][d] = j < S ? load(v + (long long)j * D + d) : 0.0f;
        }
        __syncthreads();
        float s[FLASH_KEYS], tile_max = NEG_INF;
        for (int c = 0; c < FLASH_KEYS; ++c) {
            float dot = 0.0f;
            for (int d = 0; d < D; ++d) dot += qr[d] * ks[c][d];
            s[c] = start + c < visible ? dot : NEG_INF;
            tile_max = fmaxf(tile_max, s[c]);
        }
        if (tile_max == NEG_INF) continue;                   // nothing this row may see in the tile
        const float m_new = fmaxf(m, tile_max), alpha = expf(m - m_new);   // alpha = 0 on the first tile
        l *= alpha;
        for (int d = 0; d < D; ++d) o[d] *= alpha;
        for (int c = 0; c < FLASH_KEYS; ++c) {
            const float p = expf(s[c] - m_new);              // 0 for a key the row may not see
            l += p;
            for (int d = 0; d < D; ++d) o[d] += p * vs[c][d];
        }
        m = m_new;
    }
    if (!active) return;
    const float inv = 1.0f / l;
    for (int d = 0; d < D; ++d) store(out + head * R * D + (long long)r * D + d, o[d] * inv);
    lse[head * R + r] = m + logf(l);
}

// dk, dv: one thread per key j (a block holds FLASH_KEYS keys), query rows in tiles of FLASH_KEYS.
template <int D, typename Scalar>
__device__ void flash_backward_kv(const Scalar* q, const Scalar* k, const Scalar* v, const Scalar* gout,
                                  const float* lse, const float* delta, Scalar* gk, Scalar* gv,
                                  int R, int S, int T, int causal, float scale) {
    __shared__ float qs[FLASH_KEYS][D];                      // scale * q of the tile's rows
    __shared__ float gs[FLASH_KEYS][D];                      // their gout
    __shared__ float lse_s[FLASH_KEYS], delta_s[FLASH_KEYS];
    const long long head = blockIdx.y;
    const int j = blockIdx.x * FLASH_KEYS + threadIdx.x;
    const bool active = j < S;
    q += head * R * D; gout += head * R * D; lse += head * R; delta += head * R;
    float kj[D], vj[D], dk[D], dv[D];
    for (int d = 0; d < D; ++d) {
        kj[d] = active ? load(k + head * S * D + (long long)j * D + d) : 0.0f;
        vj[d] = active ? load(v + head * S * D + (long long)j * D + d) : 0.0f;
        dk[d] = 0.0f; dv[d] = 0.0f;
    }
    for (int start = 0; start < R; start += FLASH_KEYS) {
        __syncthreads();
        for (int e = threadIdx.x; e < FLASH_KEYS * D; e += blockDim.x) {
            const int c = e / D, d = e % D, r = start + c;
            qs[c][d] = r < R ? load(q + (long long)r * D + d) * scale : 0.0f;
            gs[c][d] = r < R ? load(gout + (long long)r * D + d) : 0.0f;
        }
        for (int c = threadIdx.x; c < FLASH_KEYS; c += blockDim.x) {
            lse_s[c] = start + c < R ? lse[start + c] : 0.0f;
            delta_s[c] = start + c < R ? delta[start + c] : 0.0f;
        }
        __syncthreads();
        if (!active) continue;
        for (int c = 0; c < FLASH_KEYS && start + c < R; ++c) {
            if (j >= visible_keys(start + c, S, T, causal)) continue;
            float s = 0.0f, dp = 0.0f;
            for (int d = 0; d < D; ++d) { s += qs[c][d] * kj[d]; dp += gs[c][d] * vj[d]; }
            const float p = expf(s - lse_s[c]), ds = p * (dp - delta_s[c]);
            for (int d = 0; d < D; ++d) { dv[d] += p * gs[c][d]; dk[d] += ds * qs[c][d]; }
        }
    }
    if (!active) return;
    for (int d = 0; d < D; ++d) {
        store(gk + head * S * D + (long long)j * D + d, dk[d]);
        store(gv + head * S * D + (long long)j * D + d, dv[d]);
    }
}

// dq: one thread per query row, keys in tiles of FLASH_KEYS.
template <int D, typename Scalar>
__device__ void flash_backward_q(const Scalar* q, const Scalar* k, const Scalar* v, const Scalar* gout,
                                 const float* lse, const float* delta, Scalar* gq,
                                 int R, int S, int T, int causal, float scale) {
    __shared__ float ks[FLASH_KEYS][D];
    __shared__ float vs[FLASH_KEYS][D];
    const long long head = blockIdx.y;
    const int r0 = blockIdx.x * FLASH_ROWS, r = r0 + threadIdx.x;
    const bool active = r < R;
    const int visible = active ? visible_keys(r, S, T, causal) : 0;
    const int keys = block_keys(r0, R - r0 < FLASH_ROWS ? R - r0 : FLASH_ROWS, S, T, causal);
    k += head * S * D; v += head * S * D;
    float qr[D], gr[D], dq[D];
    for (int d = 0; d < D; ++d) {
        qr[d] = active ? load(q + head * R * D + (long long)r * D + d) * scale : 0.0f;
        gr[d] = active ? load(gout + head * R * D + (long long)r * D + d) : 0.0f;
        dq[d] = 0.0f;
    }
    const float lse_r = active ? lse[head * R + r] : 0.0f, delta_r = active ? delta[head * R + r] : 0.0f;
    for (int start = 0; start < keys; start += FLASH_KEYS) {
        __syncthreads();
        for (int e = threadIdx.x; e < FLASH_KEYS * D; e += blockDim.x) {
            const int c = e / D, d = e % D, j = start + c;
            ks[c][d] = j < S ? load(k + (long long)j * D + d) : 0.0f;
            vs[c][d] = j < S ? load(v + (long long)j * D + d) : 0.0f;
        }
        __syncthreads();
        for (int c = 0; c < FLASH_KEYS && start + c < visible; ++c) {
            float s = 0.0f, dp = 0.0f;
            for (int d = 0; d < D; ++d) { s += qr[d] * ks[c][d]; dp += gr[d] * vs[c][d]; }
            const float ds = expf(s - lse_r) * (dp - delta_r);
            for (int d = 0; d < D; ++d) dq[d] += ds * ks[c][d];
        }
    }
    if (!active) return;
    for (int d = 0; d < D; ++d) store(gq + head * R * D + (long long)r * D + d, dq[d] * scale);
}
"""


def _flash_source(head_dim: int, tag: str) -> str:
    """The templates above and the three entry points for one head_dim and dtype (f32, f16, bf16): each
    variant is compiled on its first use, alone (all of them at once would be a megabyte of PTX)."""
    c = {"f32": "float", "f16": "unsigned short", "bf16": "bfloat16_bits"}[tag]
    d = head_dim
    return _FLASH_SOURCE + f"""
extern "C" __global__ void tinyllm_flash_forward_{d}_{tag}(const {c}* q, const {c}* k, const {c}* v, {c}* out,
        float* lse, int R, int S, int T, int causal, float scale) {{
    flash_forward<{d}>(q, k, v, out, lse, R, S, T, causal, scale);
}}
extern "C" __global__ void tinyllm_flash_backward_kv_{d}_{tag}(const {c}* q, const {c}* k, const {c}* v,
        const {c}* gout, const float* lse, const float* delta, {c}* gk, {c}* gv, int R, int S, int T, int causal,
        float scale) {{
    flash_backward_kv<{d}>(q, k, v, gout, lse, delta, gk, gv, R, S, T, causal, scale);
}}
extern "C" __global__ void tinyllm_flash_backward_q_{d}_{tag}(const {c}* q, const {c}* k, const {c}* v,
        const {c}* gout, const float* lse, const float* delta, {c}* gq, int R, int S, int T, int causal,
        float scale) {{
    flash_backward_q<{d}>(q, k, v, gout, lse, delta, gq, R, S, T, causal, scale);
}}
"""


_flash_kernels: dict[tuple[str, int, str], Any] = {}


FLASH_TAGS = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def _flash(part: str, head_dim: int, dtype: Any) -> Any:
    tag = FLASH_TAGS[dtype.name]
    key = (part, head_dim, tag)
    if key not in _flash_kernels:  # one source, compiled once; each entry point looked up on first use
        _flash_kernels[key] = cupy.RawKernel(_flash_source(head_dim, tag), f"tinyllm_flash_{part}_{head_dim}_{tag}")
    return _flash_kernels[key]


def flash_usable(q: Any, k: Any, v: Any) -> bool:
    """Whether the tiled kernels take these (B, Hkv, rows, D) arrays: float32, float16 or bfloat16, a head_dim built
    for (FLASH_HEAD_DIMS)."""
    return q.shape[-1] in FLASH_HEAD_DIMS and usable(q, k, v, half=True)


def flash_attention_forward(q: Any, k: Any, v: Any, scale: float, T: int, causal: bool) -> tuple[Any, Any]:
    """(out, lse) of softmax(scale q k^T, causal) v without the scores: q (B, Hkv, R = G*T, D), k, v
    (B, Hkv, S, D); out like q, lse (B, Hkv, R) float32, the log of each row's softmax denominator.
    (Arrays that are not C-contiguous are copied: the kernels index rows of D consecutive values.)"""
    q, k, v = (cupy.ascontiguousarray(a) for a in (q, k, v))
    B, Hkv, R, D = q.shape
    S = k.shape[2]
    out = cupy.empty_like(q)
    lse = cupy.empty((B, Hkv, R), dtype=cupy.float32)
    _flash("forward", D, q.dtype)(((R + _FLASH_ROWS - 1) // _FLASH_ROWS, B * Hkv), (_FLASH_ROWS,),
                                  (*map(_bits, (q, k, v, out)), lse, np.int32(R), np.int32(S), np.int32(T),
                                   np.int32(causal), np.float32(scale)))
    return out, lse


def flash_attention_backward(q: Any, k: Any, v: Any, out: Any, lse: Any, gout: Any, scale: float, T: int,
                             causal: bool) -> tuple[Any, Any, Any]:
    """(dq, dk, dv) of flash_attention_forward, recomputing the probabilities tile by tile from lse."""
    q, k, v, gout = (cupy.ascontiguousarray(a) for a in (q, k, v, gout))
    B, Hkv, R, D = q.shape
    S = k.shape[2]
    delta = (gout.astype(cupy.float32, copy=False) * out.astype(cupy.float32, copy=False)).sum(axis=-1)  # do_r . out_r
    gq, gk, gv = cupy.empty_like(q), cupy.empty_like(k), cupy.empty_like(v)
    args = (np.int32(R), np.int32(S), np.int32(T), np.int32(causal), np.float32(scale))
    q_, k_, v_, gout_ = map(_bits, (q, k, v, gout))
    _flash("backward_kv", D, q.dtype)(((S + _FLASH_KEYS - 1) // _FLASH_KEYS, B * Hkv), (_FLASH_KEYS,),
                                      (q_, k_, v_, gout_, lse, delta, _bits(gk), _bits(gv), *args))
    _flash("backward_q", D, q.dtype)(((R + _FLASH_ROWS - 1) // _FLASH_ROWS, B * Hkv), (_FLASH_ROWS,),
                                     (q_, k_, v_, gout_, lse, delta, _bits(gq), *args))
    return gq, gk, gv


# ---------------------------------------------------------------------------------------- embedding backward
# Fuses the scatter-add of tinyllm.autograd.ops.embedding.Embedding.backward, deterministically:
#   grad[ids[i]] += rows[i] for every i, repeated ids adding up (NumPy: np.add.at(grad, ids, rows))
# cupyx.scatter_add does this with atomic adds, whose order (and so float32 rounding) changes from run to
# run: a resumed training run then drifts from the uninterrupted one by an ulp (seen on an H200). Here the
# ids are sorted (a stable sort: equal ids keep their order), and for each distinct id and column one
# thread adds that id's rows in that fixed order: the same bits every run.

_SCATTER_ROWS_SOURCE = r"""
extern "C" __global__ void tinyllm_scatter_add_rows(
        float* grad, const float* rows, const long long* sorted_ids, const long long* order,
        long long n, int d, long long n_rows) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n * d) return;
    long long i = t / d;                    // a position in the sorted ids
    int col = (int)(t - i * d);
    long long id = sorted_ids[i];
    if (id < 0 || id >= n_rows) return;     // an id its check will report (backends.deferred): never write outside
    if (i > 0 && sorted_ids[i - 1] == id) return;   // not the first of its id: the first one adds for all
    float total = 0.0f;
    for (long long j = i; j < n && sorted_ids[j] == id; ++j) total += rows[order[j] * d + col];
    grad[id * d + col] += total;            // one thread per (id, column): no two threads write one place
}
"""
_scatter_add_rows = cupy.RawKernel(_SCATTER_ROWS_SOURCE, "tinyllm_scatter_add_rows")
_SCATTER_THREADS = 256


def scatter_add_rows(grad: Any, ids: Any, rows: Any) -> None:
    """In place: ``grad[ids[i]] += rows[i]`` with repeated ids adding up, the same bits every run.

    grad (V, D) float32 C-contiguous, ids (N,) integers, rows (N, D) float32. An id outside 0..V-1 adds
    nothing (its check, which may be read later, reports it: backends.deferred).
    """
    n, d = rows.shape
    if n == 0 or d == 0:
        return
    ids = ids.astype(cupy.int64, copy=False)
    order = cupy.argsort(ids)  # (N,): positions in sorted order; CuPy's sort is stable: ties keep their order
    sorted_ids = cupy.ascontiguousarray(ids[order])
    rows = cupy.ascontiguousarray(rows)
    threads = _SCATTER_THREADS
    _scatter_add_rows(((n * d + threads - 1) // threads,), (threads,),
                      (grad, rows, sorted_ids, order, np.int64(n), np.int32(d), np.int64(grad.shape[0])))


# ---------------------------------------------------------------------------------------- AdamW
# Fuses the per-parameter update of tinyllm.optim.adamw.AdamW.step (ten array operations, one launch):
#   p = p * decay;  v = b2 v + (1 - b2) g^2;  m = b1 m + (1 - b1) g;  p -= step_size * m / (sqrt(v) / sqrt_bias2 + eps)
# with decay = 1 - lr * weight_decay and step_size = lr / (1 - b1^t), sqrt_bias2 = sqrt(1 - b2^t).

_adamw = cupy.ElementwiseKernel(
    "float32 g, float32 decay, float32 beta1, float32 beta2, float32 eps, float32 step_size, float32 sqrt_bias2",
    "float32 p, float32 m, float32 v",
    "v = beta2 * v + (1.0f - beta2) * g * g;"
    "m = beta1 * m + (1.0f - beta1) * g;"
    "p = p * decay - step_size * m / (sqrtf(v) / sqrt_bias2 + eps)",
    "tinyllm_adamw",
)


def adamw_update(
    p: Any, g: Any, m: Any, v: Any, decay: float, beta1: float, beta2: float, eps: float, step_size: float,
    sqrt_bias2: float,
) -> None:
    """In place on p, m, v (float32, same shape as g): one AdamW step for one parameter."""
    f = np.float32
    _adamw(g, f(decay), f(beta1), f(beta2), f(eps), f(step_size), f(sqrt_bias2), p, m, v)


# ---------------------------------------------------------------------------------------- multi-tensor
# The same update for every parameter of a step in ONE launch ("multi-tensor", as PyTorch's fused AdamW and
# its _foreach ops): a model has dozens of parameters, and one launch each costs more than the arithmetic of
# the small ones. Device tables say where tensor k's arrays start (pointers) and where its elements begin in
# one running count over all tensors (offsets, n + 1 of them); each thread takes elements i of that count,
# finds k by binary search (offsets[k] <= i < offsets[k + 1]) and works on element i - offsets[k] of k.

_MULTI_TENSOR_SOURCE = r"""
// The tensor k that element i of the running count belongs to: offsets[k] <= i < offsets[k + 1].
__device__ __forceinline__ int find_tensor(const long long* offsets, int n_tensors, long long i) {
    int lo = 0, hi = n_tensors;  // offsets[lo] <= i < offsets[hi]
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (offsets[mid] <= i) lo = mid; else hi = mid;
    }
    return lo;
}
#define FOR_EACH_ELEMENT(i, total) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (long long)gridDim.x * blockDim.x)
"""
_MULTI_THREADS = 256


def _tables(columns: list[list[Any]], sizes: list[int], max_blocks: int = 65535) -> tuple[Any, Any, tuple[int, int]]:
    """Device tables for a multi-tensor launch: the data pointers (len(columns), n) and the element offsets
    (n + 1,), and the (blocks, threads) that cover them. Host-to-device copies of a few hundred bytes, queued
    on the stream (no wait for the GPU)."""
    pointers = np.array([[a.data.ptr for a in column] for column in columns], dtype=np.uint64)
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(sizes)
    blocks = int(min(max((offsets[-1] + _MULTI_THREADS - 1) // _MULTI_THREADS, 1), max_blocks))
    return cupy.asarray(pointers), cupy.asarray(offsets), (blocks, _MULTI_THREADS)


# Gradient clipping, tinyllm.optim.clip.clip_grad_norm_: the squared norm sum over every gradient of sum(g^2)
# (in float64, as the array code), then, when it is over the limit, every gradient times one factor. The
# sum is made without atomics, so it has the same bits every run (a resumed run must equal an uninterrupted
# one): block b adds g^2 over its elements of the running count in a fixed order (grid-stride), then a tree
# in shared memory adds its 256 threads' sums; partial[b] holds the block's total, and CuPy sums the partials.
_GRAD_NORM_SOURCE = _MULTI_TENSOR_SOURCE + r"""
extern "C" __global__ void tinyllm_sum_squares_multi(
    const float* const* grads, const long long* offsets, const int n_tensors, double* partial)
{
    __shared__ double shared[256];          // one per thread: launched with 256 threads
    double total = 0.0;
    FOR_EACH_ELEMENT(i, offsets[n_tensors]) {
        const int k = find_tensor(offsets, n_tensors, i);
        const double g = grads[k][i - offsets[k]];
        total += g * g;
    }
    shared[threadIdx.x] = total;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

// The scaling, decided on the device from the squared norm (clip_by_squared_norm_): nothing is read back.
// The factor is computed as the host computes it (a double sqrt and division, then rounded to float): same bits.
extern "C" __global__ void tinyllm_clip_multi(
    float* const* grads, const long long* offsets, const int n_tensors, const double* squares,
    const double max_norm, const double eps)
{
    const double norm = sqrt(*squares);
    if (!(norm > max_norm && norm <= 1.7976931348623157e308)) return;   // within the limit, or inf / NaN
    const float factor = (float)(max_norm / (norm + eps));
    FOR_EACH_ELEMENT(i, offsets[n_tensors]) {
        const int k = find_tensor(offsets, n_tensors, i);
        const long long j = i - offsets[k];
        grads[k][j] = __fmul_rn(grads[k][j], factor);
    }
}
"""
_sum_squares_multi = cupy.RawKernel(_GRAD_NORM_SOURCE, "tinyllm_sum_squares_multi")
_clip_multi = cupy.RawKernel(_GRAD_NORM_SOURCE, "tinyllm_clip_multi")
_NORM_BLOCKS = 1024  # partial sums: enough blocks to fill a GPU, few enough to add up in one small reduction


def sum_of_squares_many(grads: list[Any]) -> Any:
    """The sum over every float32 array of ``grads`` of sum(g^2), in float64, as a 0-d device array: two
    launches (the blocks' sums, then CuPy's sum of them) and the same bits every run."""
    strided = [g for g in grads if not g.flags.c_contiguous]  # rare: the array code
    kernel = [g for g in grads if g.flags.c_contiguous]
    total = cupy.zeros((), cupy.float64)
    if kernel:
        table, offsets, (blocks, threads) = _tables([kernel], [g.size for g in kernel], max_blocks=_NORM_BLOCKS)
        partial = cupy.empty(blocks, cupy.float64)
        _sum_squares_multi((blocks,), (threads,), (table[0], offsets, np.int32(len(kernel)), partial))
        total = partial.sum()
    for g in strided:
        total = total + (g.astype(cupy.float64) ** 2).sum()
    return total


def clip_many(grads: list[Any], squares: Any, max_norm: float, eps: float) -> None:
    """Every float32 array of ``grads`` times max_norm / (norm + eps) when norm = sqrt(squares) (a 0-d float64
    device array) is finite and over ``max_norm``: one launch, decided on the device, nothing read back."""
    strided = [g for g in grads if not g.flags.c_contiguous]  # rare: the array code
    if strided:
        norm = cupy.sqrt(squares)
        factor = cupy.where((norm > max_norm) & cupy.isfinite(norm), max_norm / (norm + eps), 1.0).astype(cupy.float32)
        for g in strided:
            g *= factor
    kernel = [g for g in grads if g.flags.c_contiguous]
    if kernel:
        table, offsets, (blocks, threads) = _tables([kernel], [g.size for g in kernel])
        _clip_multi((blocks,), (threads,), (table[0], offsets, np.int32(len(kernel)), squares, np.float64(max_norm),
                                            np.float64(eps)))


# AdamW: hyper holds each parameter's (decay, step_size, sqrt_bias2, beta1, beta2, eps): parameters of
# different groups, or with different step counts, differ there. skip: a device flag; when it is set
# (train_step found the step bad, on the device) the kernel changes nothing.
_ADAMW_MULTI_SOURCE = _MULTI_TENSOR_SOURCE + r"""
extern "C" __global__ void tinyllm_adamw_multi(
    float* const* p, const float* const* g, float* const* m, float* const* v,
    const long long* offsets, const float* hyper, const int n_tensors, const bool* skip)
{
    if (*skip) return;
    FOR_EACH_ELEMENT(i, offsets[n_tensors]) {
        const int lo = find_tensor(offsets, n_tensors, i);
        const long long j = i - offsets[lo];
        const float* h = hyper + 6 * lo;  // decay, step_size, sqrt_bias2, beta1, beta2, eps
        const float gj = g[lo][j];
        const float vj = h[4] * v[lo][j] + (1.0f - h[4]) * gj * gj;
        const float mj = h[3] * m[lo][j] + (1.0f - h[3]) * gj;
        v[lo][j] = vj;
        m[lo][j] = mj;
        p[lo][j] = p[lo][j] * h[0] - h[1] * mj / (sqrtf(vj) / h[2] + h[5]);
    }
}
"""
_adamw_multi = cupy.RawKernel(_ADAMW_MULTI_SOURCE, "tinyllm_adamw_multi")


@functools.cache
def _never() -> Any:
    """A device flag that is always false (made once): the skip of an update nothing may skip."""
    return cupy.zeros((), dtype=bool)


def adamw_update_many(updates: list[tuple[Any, ...]], skip: Any = None) -> None:
    """Every (p, g, m, v, decay, beta1, beta2, eps, step_size, sqrt_bias2) of ``updates`` as ``adamw_update``
    does it, in place, in one launch for the C-contiguous ones (the rest, rare, one launch each). ``skip``: a
    0-d boolean device array; when true nothing changes (the kernel reads it: no wait for the GPU)."""
    strided = [u for u in updates if not all(a.flags.c_contiguous for a in u[:4])]
    if strided and not (skip is not None and bool(skip)):  # rare: these read the flag (one wait)
        for u in strided:
            adamw_update(*u)
    flat = [u for u in updates if all(a.flags.c_contiguous for a in u[:4])]
    if not flat:
        return
    if skip is None:
        skip = _never()
    table, offsets, (blocks, threads) = _tables([[u[k] for u in flat] for k in range(4)],  # p, g, m, v
                                                [u[0].size for u in flat])
    hyper = cupy.asarray(np.array([(u[4], u[8], u[9], u[5], u[6], u[7]) for u in flat], dtype=np.float32))  # (n, 6)
    _adamw_multi((blocks,), (threads,), (table[0], table[1], table[2], table[3], offsets, hyper, np.int32(len(flat)),
                                         skip))


# ---------------------------------------------------------------------------------------- mixed precision
# Fuses the per-parameter loops of tinyllm.amp.MixedPrecision (three array operations per parameter each,
# a launch apiece, ~170 launches a step for the gpu preset's 57 parameters) into one launch each:
#   accumulate_grads   master.grad (float32) = [master.grad +] weight * float32(shadow.grad)   (16-bit)
#   unscale_grads      grad *= 1 / S for every master gradient, and a flag if any was inf or NaN
#   step_done          shadow = 16-bit(master), rounded to nearest even (as astype)
# The shadow is float16 or bfloat16 (a flag of the launch). __fmul_rn / __fadd_rn keep the compiler from
# fusing a multiply and an add (an FMA rounds once, the array code twice): the bits are the array code's.

_AMP_SOURCE = _MULTI_TENSOR_SOURCE + _HALF_SOURCE + r"""
__device__ __forceinline__ float to_float(unsigned short h, int bf16) { return bf16 ? bf16_to_float(h) : half_to_float(h); }

extern "C" __global__ void tinyllm_amp_accumulate(
    float* const* dst, const unsigned short* const* src, const int* add, const long long* offsets,
    const int n_tensors, const float weight, const int scaled, const int bf16)
{
    FOR_EACH_ELEMENT(i, offsets[n_tensors]) {
        const int k = find_tensor(offsets, n_tensors, i);
        const long long j = i - offsets[k];
        float g = to_float(src[k][j], bf16);
        if (scaled) g = __fmul_rn(g, weight);
        dst[k][j] = add[k] ? __fadd_rn(dst[k][j], g) : g;
    }
}

extern "C" __global__ void tinyllm_amp_unscale(
    float* const* grads, const long long* offsets, const int n_tensors, const float inverse, int* found_inf)
{
    FOR_EACH_ELEMENT(i, offsets[n_tensors]) {
        const int k = find_tensor(offsets, n_tensors, i);
        const long long j = i - offsets[k];
        const float g = grads[k][j];
        if ((__float_as_uint(g) & 0x7f800000u) == 0x7f800000u) *found_inf = 1;   // exponent all ones: inf or NaN
        grads[k][j] = __fmul_rn(g, inverse);
    }
}

extern "C" __global__ void tinyllm_amp_cast(
    unsigned short* const* dst, const float* const* src, const long long* offsets, const int n_tensors,
    const int bf16)
{
    FOR_EACH_ELEMENT(i, offsets[n_tensors]) {
        const int k = find_tensor(offsets, n_tensors, i);
        const long long j = i - offsets[k];
        const float v = src[k][j];
        dst[k][j] = bf16 ? float_to_bf16(v) : float_to_half(v);
    }
}
"""
_amp_accumulate = cupy.RawKernel(_AMP_SOURCE, "tinyllm_amp_accumulate")
_amp_unscale = cupy.RawKernel(_AMP_SOURCE, "tinyllm_amp_unscale")
_amp_cast = cupy.RawKernel(_AMP_SOURCE, "tinyllm_amp_cast")


def _contiguous(*arrays: Any) -> bool:
    return all(a.flags.c_contiguous for a in arrays)


def accumulate_grads_many(targets: list[Any], sources: list[Any], weight: float) -> list[Any]:
    """For each pair: ``target + weight * float32(source)``, or ``weight * float32(source)`` where the target is
    None, in one launch. targets: float32 arrays (updated in place) or None; sources: float16 or bfloat16
    arrays, all one dtype, each of its target's shape. Returns the float32 results (the targets, or new arrays
    where a target was None)."""
    out = [cupy.empty(src.shape, cupy.float32) if dst is None else dst for dst, src in zip(targets, sources)]
    kernel = [k for k in range(len(out)) if _contiguous(out[k], sources[k])]
    for k in set(range(len(out))) - set(kernel):  # a strided view (rare): the array code
        grad = sources[k].astype(cupy.float32)
        if weight != 1.0:
            grad *= weight
        if targets[k] is None:
            out[k][...] = grad
        else:
            out[k] += grad
    if kernel:
        table, offsets, (blocks, threads) = _tables([[out[k] for k in kernel], [sources[k] for k in kernel]],
                                                    [out[k].size for k in kernel])
        add = cupy.asarray(np.array([targets[k] is not None for k in kernel], dtype=np.int32))
        _amp_accumulate((blocks,), (threads,), (table[0], table[1], add, offsets, np.int32(len(kernel)),
                                                np.float32(weight), np.int32(weight != 1.0),
                                                np.int32(sources[0].dtype.name == "bfloat16")))
    return out


def unscale_grads_many(grads: list[Any], inverse: float) -> Any:
    """``grad *= inverse`` for every float32 array of ``grads``, in one launch; returns a device flag (1,) int32,
    1 if any gradient held an inf or NaN (read it once: the one wait of the step)."""
    found_inf = cupy.zeros(1, cupy.int32)
    kernel = [g for g in grads if g.flags.c_contiguous]
    for g in grads:
        if not g.flags.c_contiguous:  # a strided view (rare): the array code
            found_inf |= ~cupy.isfinite(g).all()
            g *= inverse
    if kernel:
        table, offsets, (blocks, threads) = _tables([kernel], [g.size for g in kernel])
        _amp_unscale((blocks,), (threads,), (table[0], offsets, np.int32(len(kernel)), np.float32(inverse), found_inf))
    return found_inf


def cast_many(targets: list[Any], sources: list[Any]) -> None:
    """``target[...] = source`` for each pair, float32 sources into float16 or bfloat16 targets (all one dtype),
    rounded to nearest even as ``astype``, in one launch."""
    kernel = [k for k in range(len(targets)) if _contiguous(targets[k], sources[k])]
    for k in set(range(len(targets))) - set(kernel):  # a strided view (rare): the array code
        targets[k][...] = sources[k]
    if kernel:
        table, offsets, (blocks, threads) = _tables([[targets[k] for k in kernel], [sources[k] for k in kernel]],
                                                    [targets[k].size for k in kernel])
        _amp_cast((blocks,), (threads,), (table[0], table[1], offsets, np.int32(len(kernel)),
                                          np.int32(targets[0].dtype.name == "bfloat16")))
