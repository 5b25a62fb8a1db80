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
"""

from __future__ import annotations

from typing import Any

from ...autograd.function import Function


class LinearFunction(Function):
    def forward(self, x: Any, weight: Any, bias: Any = None) -> Any:
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input of shape {x.shape} has {x.shape[-1]} features but the weight {weight.shape} "
                f"expects {weight.shape[1]} (weight is (out_features, in_features))"
            )
        self.x_shape = x.shape
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        y = x2 @ weight.T  # (N, out)
        if bias is not None:
            y += bias
        self.has_bias = bias is not None
        self.save(x2, weight)
        return y.reshape(*x.shape[:-1], weight.shape[0])

    def backward(self, gy: Any) -> tuple[Any, ...]:
        x2, weight = self.saved
        gy2 = gy.reshape(-1, weight.shape[0])  # (N, out)
        gx = (gy2 @ weight).reshape(self.x_shape)  # (..., in)
        gw = gy2.T @ x2  # (out, in)
        if self.has_bias:
            return gx, gw, gy2.sum(axis=0)
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
