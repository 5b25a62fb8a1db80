"""Fused CUDA kernels for the CuPy backend: the hot ops of a training step, each in one or two launches.

The NumPy versions in ``tinyllm.nn.fused``, ``tinyllm.autograd.ops`` and ``tinyllm.optim`` stay the
readable reference: each kernel here computes exactly the formula of the Function it fuses (named
in its docstring), and ``tests/test_cuda_kernels.py`` checks on a GPU that the two agree within
float32 rounding. A Function asks its backend for ``kernels`` and uses them when they apply::

    kernels = get_backend().kernels          # None on NumPy; this module on CuPy
    if kernels is not None and kernels.usable(x, weight):
        y, xhat, r = kernels.rms_norm_forward(x, weight, eps)
    else:
        ...the NumPy code, unchanged...

Why fuse: written with array operations, ``y = x * r * w`` allocates and writes a temporary per
operator, so a few lines of math pass over the (B, T, D) activations five to ten times. Each kernel
reads its inputs once and writes its outputs once. float32 is fused, and float16 where a kernel says so
(RMSNorm and SwiGLU: 16-bit in and out, float32 arithmetic inside, as the NumPy code does for 16-bit
inputs); other dtypes (bfloat16, the float64 of the gradient checks) take the NumPy path.
``TINYLLM_KERNELS=0`` turns them all off.

This module imports CuPy; only ``CupyBackend`` imports it, so nothing here is loaded on the NumPy path.
Kernels compile on first use (seconds) and are cached on disk by CuPy (``~/.cupy/kernel_cache``).
"""

from __future__ import annotations

from typing import Any

import cupy
import numpy as np


def usable(*arrays: Any, half: bool = False) -> bool:
    """True when every array is float32 (what these kernels are written for); with ``half``, also when
    every array is float16 (for the kernels written with a type ``T``: RMSNorm's and SwiGLU's)."""
    dtype = arrays[0].dtype
    if dtype != np.float32 and not (half and dtype == np.float16):
        return False
    return all(a.dtype == dtype for a in arrays)


# ---------------------------------------------------------------------------------------- RMSNorm
# Fuses tinyllm.nn.fused.rms_norm.RMSNormFunction:
#   r = 1 / sqrt(mean(x^2) + eps);  xhat = x * r;  y = xhat * w
#   dw = sum over rows of dy * xhat;  dx = r * (dy * w - xhat * mean(dy * w * xhat))
# T is float32 or float16: the statistics r and the sums are float32 either way, the arithmetic is float
# (a float16 value converts to float when read, and back, rounded, when written).

_sum_squares = cupy.ReductionKernel(
    "T x", "float32 total", "(float)x * (float)x", "a + b", "total = a", "0", "tinyllm_sum_squares"
)
_inverse_rms = cupy.ElementwiseKernel(
    "float32 total, float32 inv_d, float32 eps", "float32 r", "r = 1.0f / sqrtf(total * inv_d + eps)",
    "tinyllm_inverse_rms",
)
_rms_apply = cupy.ElementwiseKernel(
    "T x, float32 r, T w", "T xhat, T y", "float v = (float)x * r; xhat = v; y = v * (float)w", "tinyllm_rms_apply"
)
_sum_products = cupy.ReductionKernel(  # (in a reduction, a and b name the partial results: not for inputs)
    "T x1, T x2", "float32 total", "(float)x1 * (float)x2", "a + b", "total = a", "0", "tinyllm_sum_products"
)
_sum_products3 = cupy.ReductionKernel(
    "T x1, T x2, T x3", "float32 total", "(float)x1 * (float)x2 * (float)x3", "a + b", "total = a", "0",
    "tinyllm_sum_products3",
)
_rms_backward = cupy.ElementwiseKernel(
    "T gy, T w, T xhat, float32 r, float32 dot, float32 inv_d",
    "T gx",
    "gx = r * ((float)gy * (float)w - (float)xhat * (dot * inv_d))",
    "tinyllm_rms_backward",
)


def rms_norm_forward(x: Any, weight: Any, eps: float) -> tuple[Any, Any, Any]:
    """(y, xhat, r) of RMSNorm over the last axis: two launches (sum of squares, then everything else)."""
    inv_d = np.float32(1.0 / x.shape[-1])
    r = _inverse_rms(_sum_squares(x, axis=x.ndim - 1, keepdims=True), inv_d, np.float32(eps))  # (..., 1)
    xhat, y = _rms_apply(x, r, weight)  # (..., D) each
    return y, xhat, r


def rms_norm_backward(gy: Any, xhat: Any, r: Any, weight: Any) -> tuple[Any, Any]:
    """(dx, dw) of RMSNorm: two reductions and one elementwise pass."""
    lead = tuple(range(gy.ndim - 1))
    gw = _sum_products(gy, xhat, axis=lead).astype(gy.dtype, copy=False)  # (D,), summed in float32
    dot = _sum_products3(gy, weight, xhat, axis=gy.ndim - 1, keepdims=True)  # (..., 1): sum(dy * w * xhat)
    gx = _rms_backward(gy, weight, xhat, r, dot, np.float32(1.0 / gy.shape[-1]))
    return gx, gw


# ---------------------------------------------------------------------------------------- SwiGLU
# Fuses tinyllm.nn.fused.swiglu.SwiGLUFunction: s = sigmoid(a) (as (1 + tanh(a/2)) / 2, no overflow),
#   y = a * s * b;  da = dy * b * (s + a * s * (1 - s));  db = dy * a * s

# T is float32 or float16; the arithmetic is float either way.

_swiglu_forward = cupy.ElementwiseKernel(
    "T a, T b", "T y, T s",
    "float af = a; float sf = 0.5f * (1.0f + tanhf(0.5f * af)); s = sf; y = af * sf * (float)b",
    "tinyllm_swiglu_forward",
)
_swiglu_backward = cupy.ElementwiseKernel(
    "T gy, T a, T b, T s", "T ga, T gb",
    "float g = gy, sf = s, silu = (float)a * sf; gb = g * silu; ga = g * (float)b * (sf + silu * (1.0f - sf))",
    "tinyllm_swiglu_backward",
)


def swiglu_forward(a: Any, b: Any) -> tuple[Any, Any]:
    """(y, s): silu(a) * b and the sigmoid s that backward needs, in one pass."""
    return _swiglu_forward(a, b)


def swiglu_backward(gy: Any, a: Any, b: Any, s: Any) -> tuple[Any, Any]:
    """(da, db) in one pass."""
    return _swiglu_backward(gy, a, b, s)


# ---------------------------------------------------------------------------------------- RoPE
# Fuses tinyllm.nn.fused.rope.ApplyRope (half-split pairs x1 = x[..., :D/2], x2 = x[..., D/2:]):
#   forward  y1 = x1 cos - x2 sin,   y2 = x2 cos + x1 sin
#   backward the same rotation with -sin.
# The kernel writes straight into the two halves of the output (strided views): one launch.

_rotate = cupy.ElementwiseKernel(
    "float32 x1, float32 x2, float32 c, float32 s, float32 sign", "float32 y1, float32 y2",
    "float sn = sign * s; y1 = x1 * c - x2 * sn; y2 = x2 * c + x1 * sn",
    "tinyllm_rope",
)


def rope(x: Any, cos: Any, sin: Any, inverse: bool = False) -> Any:
    """Rotate x (..., T, D) by the tables (T, D/2); ``inverse``: by the opposite angles (the backward)."""
    half = x.shape[-1] // 2
    y = cupy.empty_like(x)
    _rotate(x[..., :half], x[..., half:], cos, sin, np.float32(-1.0 if inverse else 1.0), y[..., :half], y[..., half:])
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

_SOFTMAX_SOURCE = r"""
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
extern "C" __global__ void tinyllm_causal_softmax(float* scores, long long n_rows, int S, int T, int causal) {
    __shared__ float shared[32];
    long long row = blockIdx.x;
    if (row >= n_rows) return;             // the whole block leaves together: no barrier is skipped
    float* x = scores + row * (long long)S;
    int visible = causal ? (int)(row % T) + (S - T) + 1 : S;   // keys [0, visible) may be attended to
    float m = NEG_INF;
    for (int j = threadIdx.x; j < visible; j += blockDim.x) m = fmaxf(m, x[j]);
    m = block_reduce(m, shared, true);
    float total = 0.0f;
    for (int j = threadIdx.x; j < visible; j += blockDim.x) {
        float e = expf(x[j] - m);
        x[j] = e;
        total += e;
    }
    total = block_reduce(total, shared, false);
    float inv = 1.0f / total;
    for (int j = threadIdx.x; j < S; j += blockDim.x) x[j] = j < visible ? x[j] * inv : 0.0f;
}
"""
_causal_softmax = cupy.RawKernel(_SOFTMAX_SOURCE, "tinyllm_causal_softmax")
_SOFTMAX_THREADS = 128

_softmax_backward = cupy.ElementwiseKernel(
    "float32 p, float32 g, float32 d", "float32 gs", "gs = p * (g - d)", "tinyllm_softmax_backward"
)


def causal_softmax_(scores: Any, T: int, causal: bool) -> Any:
    """In place: the row softmax of scores (..., S) (C-contiguous), with the causal mask when ``causal``."""
    if not scores.flags.c_contiguous:
        raise ValueError("causal_softmax_ works in place on a C-contiguous array")
    S = scores.shape[-1]
    n_rows = scores.size // S
    _causal_softmax((n_rows,), (_SOFTMAX_THREADS,), (scores, np.int64(n_rows), np.int32(S), np.int32(T),
                                                     np.int32(1 if causal else 0)))
    return scores


def softmax_backward(probs: Any, gprobs: Any, rowdot: Any) -> Any:
    """In place in gprobs: dscores = probs * (gprobs - rowdot), rowdot (..., 1) broadcast; one pass."""
    return _softmax_backward(probs, gprobs, rowdot, gprobs)  # each element reads its own g, then overwrites it


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
        long long n, int d) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n * d) return;
    long long i = t / d;                    // a position in the sorted ids
    int col = (int)(t - i * d);
    long long id = sorted_ids[i];
    if (i > 0 && sorted_ids[i - 1] == id) return;   // not the first of its id: the first one adds for all
    float total = 0.0f;
    for (long long j = i; j < n && sorted_ids[j] == id; ++j) total += rows[order[j] * d + col];
    grad[id * d + col] += total;            // one thread per (id, column): no two threads write one place
}
"""
_scatter_add_rows = cupy.RawKernel(_SCATTER_ROWS_SOURCE, "tinyllm_scatter_add_rows")


def scatter_add_rows(grad: Any, ids: Any, rows: Any) -> None:
    """In place: ``grad[ids[i]] += rows[i]`` with repeated ids adding up, the same bits every run.

    grad (V, D) float32 C-contiguous, ids (N,) integers in 0..V-1, rows (N, D) float32.
    """
    n, d = rows.shape
    if n == 0 or d == 0:
        return
    ids = ids.astype(cupy.int64, copy=False)
    order = cupy.argsort(ids)  # (N,): positions in sorted order; CuPy's sort is stable: ties keep their order
    sorted_ids = cupy.ascontiguousarray(ids[order])
    rows = cupy.ascontiguousarray(rows)
    threads = 256
    _scatter_add_rows(((n * d + threads - 1) // threads,), (threads,),
                      (grad, rows, sorted_ids, order, np.int64(n), np.int32(d)))


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


# The same update for every parameter of a step in ONE launch ("multi-tensor", as PyTorch's fused AdamW): a
# model has dozens of parameters, and one launch each costs more than the arithmetic of the small ones.
# Device tables say where parameter k's p, g, m, v start (pointers) and where its elements begin in one
# running count over all parameters (offsets, n + 1 of them); each thread takes elements i of that count,
# finds k by binary search (offsets[k] <= i < offsets[k + 1]) and updates element i - offsets[k] of k.
# hyper holds each parameter's (decay, step_size, sqrt_bias2, beta1, beta2, eps): parameters of different
# groups, or with different step counts, differ there.
_ADAMW_MULTI_SOURCE = r"""
extern "C" __global__ void tinyllm_adamw_multi(
    float* const* p, const float* const* g, float* const* m, float* const* v,
    const long long* offsets, const float* hyper, const int n_tensors)
{
    const long long total = offsets[n_tensors];
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int lo = 0, hi = n_tensors;  // offsets[lo] <= i < offsets[hi]
        while (hi - lo > 1) {
            const int mid = (lo + hi) / 2;
            if (offsets[mid] <= i) lo = mid; else hi = mid;
        }
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


def adamw_update_many(updates: list[tuple[Any, ...]]) -> None:
    """Every (p, g, m, v, decay, beta1, beta2, eps, step_size, sqrt_bias2) of ``updates`` as ``adamw_update``
    does it, in place, in one launch for the C-contiguous ones (the rest, rare, one launch each)."""
    flat = []
    for u in updates:
        if all(a.flags.c_contiguous for a in u[:4]):
            flat.append(u)
        else:
            adamw_update(*u)
    if not flat:
        return
    n = len(flat)
    pointers = np.array([[u[k].data.ptr for u in flat] for k in range(4)], dtype=np.uint64)  # (4, n): p, g, m, v
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([u[0].size for u in flat])
    hyper = np.array([(u[4], u[8], u[9], u[5], u[6], u[7]) for u in flat], dtype=np.float32)  # (n, 6)
    # Host-to-device copies of a few hundred bytes, queued on the stream (no wait for the GPU).
    table, offsets_d, hyper_d = cupy.asarray(pointers), cupy.asarray(offsets), cupy.asarray(hyper)
    threads = 256
    blocks = int(min((offsets[-1] + threads - 1) // threads, 65535))
    _adamw_multi((blocks,), (threads,), (table[0], table[1], table[2], table[3], offsets_d, hyper_d, np.int32(n)))
