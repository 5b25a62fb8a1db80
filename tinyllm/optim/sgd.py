"""SGD with optional momentum and (coupled, L2) weight decay, as ``torch.optim.SGD``.

    g = g + weight_decay * p
    b = momentum * b + g          (b = g at the first step)
    p = p - lr * b                (p = p - lr * g without momentum)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .optimizer import Optimizer


class SGD(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-2, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"invalid SGD settings lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def step(self, skip: Any = None) -> None:
        self.step_count += 1
        if skip is not None and bool(skip):  # (reads the flag: on a GPU, one wait)
            return
        index = 0
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                state = self.state[index]
                index += 1
                if p.grad is None:
                    continue
                g = p.grad + wd * p.data if wd else p.grad
                if momentum:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.copy()
                    else:
                        buffer = state["momentum_buffer"]
                        buffer *= momentum
                        buffer += g
                    g = state["momentum_buffer"]
                p.data -= lr * g
