"""Matrix product with NumPy's ``@`` rules: batched over leading axes, which broadcast.

For y = a @ b with a (..., M, K) and b (..., K, N):

    dL/da = gy @ b^T      (..., M, K)
    dL/db = a^T @ gy      (..., K, N)

each summed over the leading axes that broadcasting added (``sum_to``).
A 1-D operand is treated as a row (a) or a column (b) vector, as NumPy does.
"""

from __future__ import annotations

import math
from typing import Any

from ..function import Function
from .arithmetic import sum_to


class MatMul(Function):
    def forward(self, a: Any, b: Any) -> Any:
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul needs tensors with at least one dimension, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(
                f"matmul shape mismatch: {a.shape} @ {b.shape}: the last dimension of the first ({a.shape[-1]}) "
                f"must equal the {'second-to-last' if b.ndim > 1 else 'only'} dimension of the second "
                f"({b.shape[-2 if b.ndim > 1 else 0]})."
            )
        self.a_shape, self.b_shape = a.shape, b.shape
        a2 = a[None, :] if a.ndim == 1 else a  # (1, K): a row vector
        b2 = b[:, None] if b.ndim == 1 else b  # (K, 1): a column vector
        try:
            y2 = a2 @ b2
        except ValueError:
            raise ValueError(f"matmul: batch dimensions of {a.shape} and {b.shape} do not broadcast") from None
        self.save(a2, b2)
        self.y2_shape = y2.shape
        if a.ndim == 1:
            y2 = y2[..., 0, :]
        if b.ndim == 1:
            y2 = y2[..., 0]
        return y2

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a2, b2 = self.saved
        gy2 = gy.reshape(self.y2_shape)
        if b2.ndim == 2:
            # The common case (x @ W): fold every leading axis of a into the rows, so the
            # weight gradient is one (K, M*) @ (M*, N) product instead of a batch to sum.
            rows = math.prod(a2.shape[:-1])  # not reshape(-1, K): that fails when K or N is 0
            ga = gy2 @ b2.T
            gb = a2.reshape(rows, a2.shape[-1]).T @ gy2.reshape(rows, gy2.shape[-1])
        else:
            ga = gy2 @ b2.swapaxes(-1, -2)
            gb = a2.swapaxes(-1, -2) @ gy2
        ga = sum_to(ga, a2.shape).reshape(self.a_shape)
        gb = sum_to(gb, b2.shape).reshape(self.b_shape)
        return ga, gb


def matmul(a: Any, b: Any) -> Any:
    return MatMul()(a, b)
