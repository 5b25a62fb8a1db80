"""Cross-entropy of logits against integer targets, fused: log-softmax and negative log-likelihood in one op.

For one row of logits x (V classes) and target t:

    loss = logsumexp(x) - x[t] = log(sum(exp(x - m))) - (x[t] - m),  m = max(x)
    dloss/dx = softmax(x) - onehot(t)

With ``reduction="mean"`` the loss is averaged over the rows whose target is
not ``ignore_index``; ignored rows contribute nothing to loss or gradient.

Memory: forward keeps only the per-row logsumexp (N values), not the (N, V)
probabilities; backward recomputes softmax(x) = exp(x - lse) from the logits,
which are alive anyway as this op's input. So at most one extra (N, V) array
exists at a time, and only while backward runs.

Half-precision logits (float16, bfloat16; tinyllm.amp) are computed in float32 and the loss is
float32, as under PyTorch's autocast: a float16 loss times a loss scale of 2**16 would overflow,
and sums over a vocabulary lose too many bits in 11. The gradient goes back in the logits' dtype.

Read the plain version first: ``tinyllm.nn.reference.cross_entropy`` (log-softmax, then pick
the target with a one-hot product). Why the gradient is softmax minus one-hot:
docs/backprop.md#cross-entropy.
"""

from __future__ import annotations

from typing import Any

from ...backends import get_backend
from ...backends.deferred import check
from ..function import Function
from .embedding import outside_range
from .indexing import _raw_index
from .softmax import shifted_logsumexp

IGNORE_INDEX = -100  # the target that counts for nothing (padding, a prompt's tokens): PyTorch's default too


class CrossEntropy(Function):
    def __init__(self, targets: Any, ignore_index: int = IGNORE_INDEX, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"cross_entropy reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
        self.targets = _raw_index(targets)
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, logits: Any) -> Any:
        xp = self.xp
        targets = self.targets
        if logits.ndim < 1 or targets.shape != logits.shape[:-1]:
            raise ValueError(
                f"cross_entropy: logits {logits.shape} need targets of shape {logits.shape[:-1]} "
                f"(one class id per row), got {targets.shape}"
            )
        if targets.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy targets must be integer class ids, not {targets.dtype}")
        self.input_shape, self.input_dtype = logits.shape, logits.dtype
        if logits.dtype.itemsize < 4:  # half precision: the loss in float32 (module docstring)
            logits = logits.astype(xp.float32)
        n_classes = logits.shape[-1]
        x = logits.reshape(-1, n_classes)  # (N, V)
        t = targets.reshape(-1)  # (N,)
        keep = t != self.ignore_index  # (N,)
        bad = keep & outside_range(t, n_classes)  # (N,)
        check(bad.any(), lambda: IndexError(  # read now, or with the training step's one read (backends.deferred)
            f"cross_entropy: target id {int(t[bad][0])} is out of range for {n_classes} classes "
            f"(valid ids are 0..{n_classes - 1}, or ignore_index={self.ignore_index})"
        ))
        safe_t = xp.where(keep, t, 0)
        kernels = get_backend().kernels  # on CuPy: the same two numbers in two passes, no (N, V) temporary
        if kernels is not None and kernels.usable(x):
            m, log_sum = kernels.shifted_logsumexp_rows(x)
        else:
            m, log_sum = shifted_logsumexp(xp, x, axis=-1)  # (N, 1) each
        m, log_sum = m[:, 0], log_sum[:, 0]
        # (x[t] - m) before adding log_sum: exact when x[t] is the max, however large the logits.
        losses = (log_sum - (x[xp.arange(x.shape[0]), safe_t] - m)) * keep  # (N,)
        lse = m + log_sum  # (N,)
        # The count stays an array in the logits' dtype (float32 counts exactly to 2**24), as int() would make
        # the GPU wait here; float16 counts exactly only to 2048, so there the host counts.
        if self.reduction == "mean":
            self.n_kept = keep.sum(dtype=x.dtype) if x.dtype.itemsize >= 4 else int(keep.sum())
        else:
            self.n_kept = None
        self.save(x, lse, safe_t, keep)
        if self.reduction == "none":
            return losses.reshape(targets.shape)
        total = losses.sum()
        return total / self.n_kept if self.reduction == "mean" else total

    def backward(self, gy: Any) -> Any:
        xp = self.xp
        x, lse, safe_t, keep = self.saved
        if self.reduction == "none":
            scale = gy.reshape(-1) * keep  # (N,)
        else:
            scale = keep * (gy / self.n_kept if self.reduction == "mean" else gy)
        kernels = get_backend().kernels  # on CuPy: the four lines below in one pass over (N, V)
        if kernels is not None and kernels.usable(x, lse, scale):
            grad = kernels.cross_entropy_backward(x, lse, safe_t, scale)
        else:
            grad = x - lse[:, None]  # (N, V)
            xp.exp(grad, out=grad)  # softmax(x)
            grad[xp.arange(x.shape[0]), safe_t] -= 1  # - onehot(t)
            grad *= scale[:, None].astype(grad.dtype)
        return grad.reshape(self.input_shape).astype(self.input_dtype, copy=False)


def cross_entropy(logits: Any, targets: Any, ignore_index: int = IGNORE_INDEX, reduction: str = "mean") -> Any:
    """Mean (or summed, or per-row) cross-entropy of ``logits`` (..., V) against integer ``targets`` (...).

    >>> import tinyllm as tl
    >>> from tinyllm.nn import functional as F
    >>> logits = tl.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> round(F.cross_entropy(logits, tl.tensor([0, 1])).item(), 4)   # log(1 + e^-2)
    0.1269
    """
    return CrossEntropy(targets, ignore_index, reduction)(logits)
