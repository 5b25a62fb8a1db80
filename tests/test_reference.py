"""The plain versions of tinyllm.nn.reference: AdamW's against the optimizer, and known answers.

(The fused ops are checked against the other plain versions in tests/test_fused.py.)
"""

from __future__ import annotations

import math

import numpy as np
from conftest import to_numpy

import tinyllm as tl
from tinyllm.autograd import gradcheck
from tinyllm.nn import Parameter, reference
from tinyllm.optim import AdamW


def test_adamw_step_equals_the_optimizer_over_several_steps() -> None:
    rng = np.random.default_rng(0)
    start = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    settings = {"lr": 0.01, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    p = Parameter(start.copy())
    optimizer = AdamW([p], **settings)
    plain, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for t, g in enumerate(grads, start=1):
        p.grad = tl.get_backend().asarray(g.copy())
        optimizer.step()
        plain, m, v = reference.adamw_step(plain, g, m, v, t, **settings)
        np.testing.assert_allclose(to_numpy(p), plain, rtol=1e-12, atol=1e-14, err_msg=f"step {t}")


def test_plain_softmax_and_cross_entropy_known_answers() -> None:
    probs = reference.softmax(tl.tensor(np.array([[1.0, 2.0, 3.0]])))
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(to_numpy(probs), [e / e.sum()], rtol=1e-12)
    loss = reference.cross_entropy(tl.tensor(np.zeros((2, 3, 7))), np.array([[1, 2, -100], [0, 6, 5]]))
    assert abs(loss.item() - math.log(7)) < 1e-12  # uniform logits: ln V whatever the targets


def test_plain_versions_have_correct_gradients_by_construction() -> None:
    """Built from primitive ops, their backward is the chain rule through those ops: gradcheck agrees."""
    rng = np.random.default_rng(1)
    q, k, v = (tl.tensor(rng.standard_normal(s), requires_grad=True) for s in [(1, 4, 3, 2), (1, 2, 3, 2), (1, 2, 3, 2)])
    assert gradcheck(reference.attention, [q, k, v])
    logits = tl.tensor(rng.standard_normal((4, 5)), requires_grad=True)
    assert gradcheck(lambda x: reference.cross_entropy(x, np.array([0, 4, -100, 2])), [logits])
