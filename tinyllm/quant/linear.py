"""``QuantizedLinear``: y = x W^T (+ b) with W kept quantized (int8 or q4); gradients flow to x, never to W.

The weight is a ``QuantizedWeight`` (weight.py): int8 values and scales, or packed 4-bit values,
scales and minimums. The schemes, for each group of ``group_size`` inputs of one output row:

    int8 (symmetric):      W[o, k] = d[o, g] * q[o, k]           q in [-127, 127]   (int8.py)
    q4   (scale and min):  W[o, k] = d[o, g] * q[o, k] + m[o, g]  q in [0, 15]       (q4.py)

The forward never builds the float W: it dequantizes one block of rows at a time (or, for a
single token, applies the scales after each group's dot product; see weight.py).

The weight is frozen: rounding to 255 or 16 levels has no useful gradient, and these layers
exist to hold a model in less memory. But the layer passes gradients through to its input,

    dx = dy W          (N, in), again a block of rows of W at a time (``QuantizedWeight.input_grad``)

which is what training a LoRA adapter on a quantized base needs (QLoRA's idea, Dettmers et al.
2023): the adapters before and after this layer learn while W stays in its few bits. The bias,
when there is one, is an ordinary float parameter.
"""

from __future__ import annotations

from typing import Any

from ..autograd import Tensor, is_grad_enabled
from ..autograd.function import Function
from ..backends import get_backend
from ..nn.linear import Linear
from ..nn.module import Module, Parameter
from .weight import QuantizedWeight


class QuantizedLinearFunction(Function):
    """y = x W^T with W quantized;  dx = dy W, W itself gets no gradient (it is not an input of the op).

    x (..., in) -> y (..., out). Nothing is saved for backward but the weight's reference.
    """

    def __init__(self, weight: QuantizedWeight) -> None:
        self.weight = weight

    def forward(self, x: Any) -> Any:
        self.x_shape = x.shape
        y = self.weight.matmul(x.reshape(-1, x.shape[-1]))  # (N, out)
        return y.reshape(*x.shape[:-1], self.weight.shape[0])

    def backward(self, gy: Any) -> Any:
        gx = self.weight.input_grad(gy.reshape(-1, gy.shape[-1]))  # (N, in)
        return gx.reshape(self.x_shape)


class QuantizedLinear(Module):
    """A ``Linear`` whose weight is stored quantized. Build one with ``from_linear`` or from a ``QuantizedWeight``.

    >>> import numpy as np, tinyllm as tl
    >>> layer = QuantizedLinear.from_linear(Linear(64, 8), "q4", group_size=32)
    >>> with tl.no_grad():
    ...     layer(tl.tensor(np.ones((2, 64), dtype=np.float32))).shape
    (2, 8)
    """

    def __init__(self, weight: QuantizedWeight, bias: Parameter | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = weight  # a plain attribute, not a Parameter: nothing here is trained
        self.bias = bias

    @classmethod
    def from_linear(cls, linear: Linear, scheme: str = "int8", group_size: int | None = 32) -> QuantizedLinear:
        """Quantize ``linear.weight`` with ``scheme`` ("int8" or "q4", see ``quantize_weight``); the bias stays float."""
        from .convert import quantize_weight

        return cls(quantize_weight(linear.weight.data, scheme, group_size), linear.bias)

    def forward(self, x: Any) -> Tensor:
        if is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in (x, self.bias)):
            y = QuantizedLinearFunction(self.weight)(x)  # (..., out), recorded: dx = dy W in backward
            return y if self.bias is None else y + self.bias
        # Nothing to record for autograd: the product runs on the raw arrays, x (..., in) -> y (..., out).
        x = x.data if isinstance(x, Tensor) else get_backend().asarray(x)
        y = self.weight.matmul(x.reshape(-1, self.in_features))  # (N, out)
        if self.bias is not None:
            y += self.bias.data
        return Tensor(y.reshape(*x.shape[:-1], self.out_features))  # a constant: nothing to train

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"scheme={self.weight.scheme}, group_size={self.weight.group_size}")
