"""The learning-rate schedule: linear warmup, then cosine decay to a floor (as nanoGPT's ``get_lr``)."""

from __future__ import annotations

import math


def get_lr(step: int, max_lr: float, warmup_steps: int, max_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based).

    - steps 0 .. warmup_steps-1: rise linearly, reaching ``max_lr`` at the end of warmup;
    - up to ``max_steps``: cosine from ``max_lr`` down to ``min_lr``;
    - after: ``min_lr``.

    >>> [round(get_lr(s, 1.0, warmup_steps=2, max_steps=6, min_lr=0.0), 3) for s in range(8)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
