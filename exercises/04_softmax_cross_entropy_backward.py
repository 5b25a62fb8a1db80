"""Exercise 4: the backward of softmax + cross-entropy, fused.

For logits x (N, V) and integer targets t (N,), the loss is the mean over rows of
-log softmax(x)[t]. Forward is written; it keeps the softmax probabilities. Write ``backward``:
dL/dx for the upstream gradient gy (a scalar, 1 when the loss is the end of the graph).
Hint: for one row the gradient is softmax(x) - onehot(t); the mean divides by N.

Run ``python exercises/04_softmax_cross_entropy_backward.py``. Read first:
docs/backprop.md#softmax and docs/backprop.md#cross-entropy.
The library's answer: tinyllm/autograd/ops/cross_entropy.py::CrossEntropy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tinyllm as tl
from tinyllm.autograd import Function, gradcheck

EXERCISE = "SoftmaxCrossEntropy"


class SoftmaxCrossEntropy(Function):
    def __init__(self, targets: Any) -> None:
        self.targets = np.asarray(targets)  # (N,) class ids

    def forward(self, x: Any) -> Any:
        xp = self.xp
        shifted = x - x.max(axis=-1, keepdims=True)  # (N, V), exp cannot overflow
        probs = xp.exp(shifted)
        probs /= probs.sum(axis=-1, keepdims=True)  # softmax, rows sum to 1
        self.save(probs)
        rows = xp.arange(x.shape[0])
        return -xp.log(probs[rows, self.targets]).mean()

    def backward(self, gy: Any) -> Any:
        (probs,) = self.saved
        # YOUR CODE HERE: replace the line below with dL/dx, shape (N, V).
        return gy * probs


def library_solution() -> type[Function]:
    from tinyllm.autograd.ops import CrossEntropy

    return CrossEntropy


def check(candidate: type[Function]) -> None:
    rng = np.random.default_rng(0)
    targets = np.array([0, 3, 3, 1])
    x = tl.tensor(rng.standard_normal((4, 5)) * 2, requires_grad=True)
    loss = candidate(targets)(x)
    probs = np.exp(x.numpy()) / np.exp(x.numpy()).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loss.item(), -np.log(probs[np.arange(4), targets]).mean(), rtol=1e-12)
    assert gradcheck(lambda t: candidate(targets)(t), [x])
    scaled = tl.tensor(x.numpy(), requires_grad=True)
    (candidate(targets)(scaled) * 3.0).backward()  # the upstream gradient gy = 3 must scale dL/dx
    np.testing.assert_allclose(scaled.grad, 3 * (probs - np.eye(5)[targets]) / 4, rtol=1e-10)


if __name__ == "__main__":
    check(SoftmaxCrossEntropy)
    print("exercise 4 passed")
