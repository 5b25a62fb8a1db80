"""Linear layer as one op: y = x @ W^T + b, with W stored (out_features, in_features) as in PyTorch.

For x (..., in), W (out, in), b (out,), folding the leading axes into N rows:

    y  = x W^T + b                  (N, out)
    dx = dy W                       (N, in)
    dW = dy^T x                     (out, in)   one matmul over all N rows
    db = sum over rows of dy        (out,)

Read the plain version first: ``tinyllm.nn.reference.linear`` (x @ W.T + b). The shapes
argument behind these formulas is in docs/backprop.md#linear-and-batched-matmul. The fused op
folds the leading axes into N rows, so dW is one (out, N) @ (N, in) matmul rather than a
batched matmul followed by a sum over the batch axes.

Each of the three is computed only for an input that needs it (``self.needs_input_grad``,
see ``Function``): a frozen weight (LoRA's base, a frozen embedding used as the tied output
projection) costs no dW matmul, and x is not even kept for backward then.
"""

from __future__ import annotations

from typing import Any

from ...autograd.function import Function
from ...backends import get_backend


class LinearFunction(Function):
    def forward(self, x: Any, weight: Any, bias: Any = None) -> Any:
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input of shape {x.shape} has {x.shape[-1]} features but the weight {weight.shape} "
                f"expects {weight.shape[1]} (weight is (out_features, in_features))"
            )
        self.x_shape = x.shape
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        y = get_backend().matmul(x2, weight.T)  # (N, out): x2 @ weight.T, see NumpyBackend.matmul
        if bias is not None:
            y += bias
        self.has_bias = bias is not None
        need_x, need_w = (self.needs_input_grad or (True, True))[:2]
        self.save(x2 if need_w else None, weight if need_x else None)  # dW needs x, dx needs W
        return y.reshape(*x.shape[:-1], weight.shape[0])

    def backward(self, gy: Any) -> tuple[Any, ...]:
        x2, weight = self.saved
        need = self.needs_input_grad or (True, True, True)  # () when backward is called without __call__
        need_x, need_w = need[:2]
        gy2 = gy.reshape(-1, gy.shape[-1])  # (N, out)
        gx = (gy2 @ weight).reshape(self.x_shape) if need_x else None  # (..., in)
        gw = gy2.T @ x2 if need_w else None  # (out, in)
        if self.has_bias:
            gb = gy2.sum(axis=0) if need[2] else None  # (out,)
            return gx, gw, gb
        return gx, gw


def linear(x: Any, weight: Any, bias: Any = None) -> Any:
    """``x @ weight.T + bias`` as one op (bias optional).

    >>> import tinyllm as tl
    >>> x = tl.tensor([[1.0, 2.0]]); w = tl.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    >>> linear(x, w).tolist()
    [[1.0, 3.0, 4.0]]
    """
    if bias is None:
        return LinearFunction()(x, weight)
    return LinearFunction()(x, weight, bias)
