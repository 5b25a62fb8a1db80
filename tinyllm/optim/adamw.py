"""AdamW (Loshchilov & Hutter 2019): Adam with weight decay decoupled from the gradient.

For each parameter p with gradient g, at step t (starting at 1):

    p = p * (1 - lr * weight_decay)              decoupled decay (not added to g)
    m = beta1 * m + (1 - beta1) * g              running mean of g
    v = beta2 * v + (1 - beta2) * g^2            running mean of g^2
    p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

Everything is updated in place (``*=``, ``out=``): one scratch array per parameter per step, no new
parameter or state arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..backends import get_backend
from .optimizer import Optimizer


class AdamW(Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if not (math.isfinite(value) and value >= 0):  # NaN fails every comparison: test finiteness first
                raise ValueError(f"AdamW {name} must be a finite number >= 0, got {value!r}")
        for i, beta in enumerate(betas):
            if not 0 <= beta < 1:  # also false for NaN
                raise ValueError(f"AdamW betas[{i}] must be in [0, 1), got {beta!r}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def step(self) -> None:
        self.step_count += 1
        t = self.step_count
        xp = get_backend().xp
        index = 0
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            bias1 = 1 - beta1**t
            bias2 = 1 - beta2**t
            for p in group["params"]:
                state = self.state[index]
                index += 1
                if p.grad is None:
                    continue
                g = p.grad
                if not state:
                    state["exp_avg"] = xp.zeros_like(p.data)  # m
                    state["exp_avg_sq"] = xp.zeros_like(p.data)  # v
                m, v = state["exp_avg"], state["exp_avg_sq"]
                kernels = get_backend().kernels  # on CuPy: the lines below in one CUDA launch
                if kernels is not None and kernels.usable(p.data, g):
                    kernels.adamw_update(p.data, g, m, v, 1 - lr * wd, beta1, beta2, eps, lr / bias1, math.sqrt(bias2))
                    continue
                if wd:
                    p.data *= 1 - lr * wd
                scratch = g * g  # the one temporary of this step, reused below
                scratch *= 1 - beta2
                v *= beta2
                v += scratch  # v = beta2 v + (1 - beta2) g^2
                xp.multiply(g, 1 - beta1, out=scratch)
                m *= beta1
                m += scratch  # m = beta1 m + (1 - beta1) g
                # p -= (lr / bias1) * m / (sqrt(v) / sqrt(bias2) + eps)
                xp.sqrt(v, out=scratch)
                scratch /= math.sqrt(bias2)
                scratch += eps
                xp.divide(m, scratch, out=scratch)
                scratch *= lr / bias1
                p.data -= scratch
