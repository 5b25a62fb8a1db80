"""Exercise 8: overfit one batch, the first test of any training code.

Write ``overfit(model, x, y, steps, lr)``: train ``model`` on the one batch (x, y) for ``steps``
optimizer steps with AdamW at learning rate ``lr``, and return the list of the losses (a float
per step, measured before that step's update). A model that cannot drive the loss of a single
batch towards 0 has a bug in its forward, backward or optimizer.

Each step: forward (``logits, loss = model(x, y)``), ``loss.backward()``, ``optimizer.step()``,
``optimizer.zero_grad()`` (why: gradients add up across backward calls until cleared).

Run ``python exercises/08_overfit_one_batch.py``. Read first: tinyllm/train.py::train_step,
docs/walkthrough.md. The library's answer: a loop over tinyllm/train.py::train_step.
"""

from __future__ import annotations

from typing import Any

EXERCISE = "overfit"


def overfit(model: Any, x: Any, y: Any, steps: int, lr: float) -> list[float]:
    # YOUR CODE HERE: this only measures the loss; make it train.
    losses = []
    for _ in range(steps):
        _, loss = model(x, y)
        losses.append(loss.item())
    return losses


def library_solution() -> Any:
    from tinyllm.optim import AdamW
    from tinyllm.train import train_step

    def overfit(model: Any, x: Any, y: Any, steps: int, lr: float) -> list[float]:
        optimizer = AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        return [train_step(model, optimizer, [(x, y)], lr)[0] for _ in range(steps)]

    return overfit


def check(candidate: Any) -> None:
    import math

    import numpy as np

    import tinyllm as tl
    from tinyllm.models import ModelConfig, Transformer

    tl.set_backend("numpy", seed=0)
    model = Transformer(ModelConfig(vocab_size=32, dim=32, n_layers=1, n_heads=2, max_seq_len=16))
    tokens = np.random.default_rng(0).integers(0, 32, size=(2, 17))
    x, y = tokens[:, :-1], tokens[:, 1:]  # (2, 16) each
    losses = candidate(model, x, y, steps=40, lr=1e-2)
    assert len(losses) == 40, f"expected 40 losses, one per step, got {len(losses)}"
    assert abs(losses[0] - math.log(32)) < 0.3, f"the first loss {losses[0]:.3f} should be about ln 32 = 3.466"
    assert losses[-1] < 0.5, f"after 40 steps the loss is still {losses[-1]:.3f}: the model is not learning the batch"


if __name__ == "__main__":
    check(overfit)
    print("exercise 8 passed")
