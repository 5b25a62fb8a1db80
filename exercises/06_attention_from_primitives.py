"""Exercise 6: causal attention from primitive ops.

Write ``attention(q, k, v)`` for q (B, H, T, D) and k, v (B, Hkv, T, D), Hkv dividing H, with
the Tensor ops you already know (``@``, ``swapaxes``, ``reshape``, ``broadcast_to``,
``masked_fill``, ``softmax``): scores = q k^T / sqrt(D), query i may not see keys j > i,
softmax over the keys, times v. Query head h reads key/value head h // (H / Hkv).
Autograd gives you the backward for free.

Run ``python exercises/06_attention_from_primitives.py``. It compares your function with the
fused op, tinyllm/nn/fused/attention.py::ScaledDotProductAttention, in value and gradient.
The library's plain answer: tinyllm/nn/reference.py::attention.
"""

from __future__ import annotations

import numpy as np

import tinyllm as tl
from tinyllm import Tensor

EXERCISE = "attention"


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    # YOUR CODE HERE: replace the line below.
    return q


def library_solution() -> object:
    from tinyllm.nn.reference import attention

    return attention


def check(candidate: object) -> None:
    from tinyllm.nn.fused import scaled_dot_product_attention

    rng = np.random.default_rng(0)
    for H, Hkv in [(2, 2), (4, 2), (3, 1)]:  # multi-head, grouped-query, multi-query
        arrays = [rng.standard_normal((2, heads, 5, 4)) for heads in (H, Hkv, Hkv)]
        ours = [tl.tensor(a, requires_grad=True) for a in arrays]
        fused = [tl.tensor(a, requires_grad=True) for a in arrays]
        out, expected = candidate(*ours), scaled_dot_product_attention(*fused)
        assert out.shape == expected.shape, f"H={H}, Hkv={Hkv}: output shape {out.shape}, expected {expected.shape}"
        np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"H={H}, Hkv={Hkv}")
        upstream = tl.tensor(rng.standard_normal(expected.shape))
        (out * upstream).sum().backward()
        (expected * upstream).sum().backward()
        for name, a, b in zip("qkv", ours, fused):
            np.testing.assert_allclose(a.grad, b.grad, rtol=1e-10, atol=1e-12, err_msg=f"gradient of {name}")


if __name__ == "__main__":
    check(attention)
    print("exercise 6 passed")
