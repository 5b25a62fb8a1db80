"""Exercise 2: ``sum_to``, the backward of broadcasting.

When ``a + b`` broadcasts b of shape (3,) against a of shape (2, 3), b is used once per row;
its gradient is the output's gradient summed over the rows. Write ``sum_to(grad, shape)``:
sum ``grad`` down to ``shape`` over (1) the leading axes that ``shape`` does not have and
(2) the axes where ``shape`` has size 1 but ``grad`` does not.

    sum_to(ones((2, 3)), (3,))    -> [2, 2, 2]
    sum_to(ones((2, 3)), (2, 1))  -> [[3], [3]]
    sum_to(ones((4, 2, 3)), (1, 3)) -> [[8, 8, 8]]

Run ``python exercises/02_sum_to.py``. Read first: docs/backprop.md#sum_to-broadcasting.
The library's answer: tinyllm/autograd/ops/arithmetic.py::sum_to.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EXERCISE = "sum_to"


def sum_to(grad: Any, shape: tuple[int, ...]) -> Any:
    # YOUR CODE HERE: replace the line below (hint: grad.sum(axis=..., keepdims=True), then reshape).
    return grad


def library_solution() -> Any:
    from tinyllm.autograd.ops import sum_to

    return sum_to


def check(candidate: Any) -> None:
    rng = np.random.default_rng(0)
    cases = [((2, 3), (3,)), ((2, 3), (2, 1)), ((4, 2, 3), (1, 3)), ((4, 2, 3), (2, 3)), ((2, 3), (2, 3)),
             ((5, 1, 3), (1, 1)), ((3,), ())]
    for grad_shape, shape in cases:
        grad = rng.standard_normal(grad_shape)
        # What broadcasting b (shape) to grad_shape does, undone: the gradient of sum(grad * broadcast(b)).
        expected = np.zeros(shape)
        for index in np.ndindex(*grad_shape):
            target = tuple(index[len(grad_shape) - len(shape) + i] if n != 1 else 0 for i, n in enumerate(shape))
            expected[target] += grad[index]
        got = np.asarray(candidate(grad, shape))
        assert got.shape == tuple(shape), f"sum_to(grad of shape {grad_shape}, {shape}) has shape {got.shape}"
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=f"sum_to({grad_shape} -> {shape})")


if __name__ == "__main__":
    check(sum_to)
    print("exercise 2 passed")
