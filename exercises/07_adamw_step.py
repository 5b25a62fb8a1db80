"""Exercise 7: one AdamW step.

Write ``adamw_step``: one update of one parameter on plain NumPy arrays, returning the new
(param, m, v). ``t`` counts steps from 1; m and v start at zero. In order:

    decoupled weight decay:  param shrinks by lr * weight_decay * param
    m = beta1 m + (1 - beta1) g          v = beta2 v + (1 - beta2) g^2
    bias correction:         m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)
    update:                  param -= lr * m_hat / (sqrt(v_hat) + eps)

Run ``python exercises/07_adamw_step.py``: it compares five steps with tinyllm.optim.AdamW.
Read first: docs/backprop.md#adamw-bias-correction.
The library's plain answer: tinyllm/nn/reference.py::adamw_step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EXERCISE = "adamw_step"


def adamw_step(
    param: Any, grad: Any, m: Any, v: Any, t: int, lr: float, betas: tuple[float, float], eps: float,
    weight_decay: float,
) -> tuple[Any, Any, Any]:
    # YOUR CODE HERE: this is plain gradient descent; make it AdamW.
    return param - lr * grad, m, v


def library_solution() -> Any:
    from tinyllm.nn.reference import adamw_step

    return adamw_step


def check(candidate: Any) -> None:
    import tinyllm as tl
    from tinyllm.nn import Parameter
    from tinyllm.optim import AdamW

    rng = np.random.default_rng(0)
    settings = {"lr": 0.01, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    start = rng.standard_normal((2, 3))
    p = Parameter(start.copy())
    optimizer = AdamW([p], **settings)
    param, m, v = start.copy(), np.zeros((2, 3)), np.zeros((2, 3))
    for t in range(1, 6):
        g = rng.standard_normal((2, 3))
        p.grad = tl.get_backend().asarray(g.copy())
        optimizer.step()
        param, m, v = candidate(param, g, m, v, t, **settings)
        np.testing.assert_allclose(param, p.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"the parameter after step {t}")


if __name__ == "__main__":
    check(adamw_step)
    print("exercise 7 passed")
