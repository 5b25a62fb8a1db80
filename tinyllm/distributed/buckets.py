"""Averaging gradients over the ranks in a few flat buckets, and broadcasting the initial parameters.

After backward, rank r holds g_r, the gradient of the mean loss over its own share of the
global batch. Every rank needs the same update, computed from the whole batch::

    g = (g_0 + g_1 + ... + g_{N-1}) / N          (the all-reduce, then a division)

which is the gradient of the mean loss over all N shares (docs/distributed.md derives it).

Why buckets: every collective pays a fixed start-up cost (a latency of some microseconds
through MPI's shared memory, more across machines) on top of bytes / bandwidth. One collective
per parameter tensor would pay it for each of the model's dozens of tensors; PyTorch's DDP
instead copies the gradients into flat buffers of up to 25 MiB (its ``bucket_cap_mb``) and
reduces each buffer with one collective. We do the same::

    parameters, in definition order        wq.weight | wk.weight | ... | norm.weight | ...
    bucket 0 (<= bucket_bytes), float32    [ flags | g(wq) | g(wk) | ... ]   -> one all-reduce
    bucket 1                               [ g(...) | ... ]                  -> one all-reduce

Each bucket holds one dtype, the one the sum is computed in: float32 for float32, float16 and
bfloat16 gradients (adding N half-precision numbers would round after every addition, with
only 8 to 11 bits of mantissa), float64 for float64. The first bucket also carries one flag per
parameter, 1 where this rank has a gradient: a parameter without a gradient on every rank
keeps ``grad = None`` (so the optimizer skips it), and one that has a gradient on some ranks
only counts zeros for the others.

    >>> import tinyllm as tl
    >>> w = tl.tensor([1.0, 2.0], requires_grad=True); w.grad = w.data * 3
    >>> all_reduce_gradients([w])       # one process: the mean over one rank is the gradient itself
    >>> w.grad
    array([3., 6.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..backends import get_backend
from .process_group import init

BUCKET_BYTES = 25 * 2**20  # PyTorch DDP's default bucket_cap_mb = 25


@dataclass
class Bucket:
    """One flat buffer's worth of parameters: their indices, and the dtype the sum is computed in."""

    dtype: np.dtype
    indices: list[int] = field(default_factory=list)
    size: int = 0  # elements of gradient (the flags of bucket 0 come on top)


def reduce_dtype(dtype: Any) -> np.dtype:
    """The dtype a gradient is summed in: float64 stays float64, everything else (float16, bfloat16, float32) float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def plan_buckets(parameters: list[Tensor], bucket_bytes: int = BUCKET_BYTES) -> list[Bucket]:
    """Group parameters into buckets of one reduce dtype and at most ``bucket_bytes`` (a larger tensor gets its own).

    The plan depends only on the shapes and dtypes, so every rank computes the same one.

        >>> import tinyllm as tl
        >>> params = [tl.tensor(np.zeros(n, np.float32), requires_grad=True) for n in (300, 300, 500)]
        >>> [b.indices for b in plan_buckets(params, bucket_bytes=2400)]    # 600 float32 fit in 2400 bytes
        [[0, 1], [2]]
    """
    buckets: list[Bucket] = []
    open_bucket: dict[np.dtype, Bucket] = {}  # the bucket still being filled, per reduce dtype
    for i, p in enumerate(parameters):
        dtype = reduce_dtype(p.dtype)
        bucket = open_bucket.get(dtype)
        if bucket is None or (bucket.size and (bucket.size + p.size) * dtype.itemsize > bucket_bytes):
            bucket = open_bucket[dtype] = Bucket(dtype)
            buckets.append(bucket)
        bucket.indices.append(i)
        bucket.size += p.size
    return buckets


def all_reduce_gradients(parameters: Iterable[Tensor], bucket_bytes: int = BUCKET_BYTES) -> None:
    """Replace every parameter's ``.grad`` by its mean over the ranks, in place, one collective per bucket.

    Call it on every rank after the backward passes of a step and before clipping and the
    optimizer step; in a plain run it returns at once. Parameters that do not require a gradient
    (frozen ones) are left out.
    """
    communicator = init()
    if communicator.world_size == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    xp = get_backend().xp
    present = None  # (n_params,) after bucket 0: on how many ranks each parameter had a gradient
    for b, bucket in enumerate(plan_buckets(params, bucket_bytes)):
        n_flags = len(params) if b == 0 else 0
        flat = _buffer(b, bucket.dtype, n_flags + bucket.size)  # (n_flags + bucket.size,)
        if n_flags:
            flat[:n_flags] = xp.asarray([p.grad is not None for p in params], dtype=bucket.dtype)
        offset = n_flags
        for i in bucket.indices:  # pack: copy (and up-cast) each gradient into its slice
            p = params[i]
            if p.grad is None:
                flat[offset : offset + p.size] = 0
            else:
                flat[offset : offset + p.size] = p.grad.reshape(-1)
            offset += p.size
        communicator.all_reduce_sum_(flat)  # the one collective of this bucket: flat = sum over ranks
        if n_flags:
            present = get_backend().to_host(flat[:n_flags]) > 0
        flat[n_flags:] /= communicator.world_size  # sum -> mean (exact when N is a power of two)
        offset = n_flags
        for i in bucket.indices:  # unpack: copy (and down-cast) each slice back into the gradient
            p = params[i]
            mean = flat[offset : offset + p.size].reshape(p.shape)
            if p.grad is not None:
                p.grad[...] = mean
            elif present[i]:
                p.grad = mean.astype(p.dtype)  # a copy: the buffer is reused next step
            offset += p.size


def broadcast_parameters(parameters: Iterable[Tensor], root: int = 0) -> None:
    """Give every rank rank ``root``'s parameter values, so all start from the same weights.

    Built from the same seed, the ranks' models are already equal; the broadcast makes it true
    whatever the seed, and costs one collective per tensor, once per run.
    """
    communicator = init()
    if communicator.world_size == 1:
        return
    xp = get_backend().xp
    for p in parameters:
        if p.data.flags.c_contiguous:
            communicator.broadcast_(p.data, root)
        else:
            buffer = xp.ascontiguousarray(p.data)
            communicator.broadcast_(buffer, root)
            p.data[...] = buffer


_buffers: dict[tuple[int, str, int], Any] = {}


def _buffer(index: int, dtype: np.dtype, size: int) -> Any:
    """The flat buffer of bucket ``index``, allocated once and reused every step (allocating
    tens of MB afresh each step costs page faults)."""
    key = (index, dtype.str, size)
    buffer = _buffers.get(key)
    if buffer is None or not get_backend().is_array(buffer):  # none yet, or made by the other backend
        buffer = _buffers[key] = get_backend().xp.empty(size, dtype=dtype)
    return buffer
