"""AdamW (Loshchilov & Hutter 2019): Adam with weight decay decoupled from the gradient.

For each parameter p with gradient g, at that parameter's step t (1 at its first update):

    p = p * (1 - lr * weight_decay)              decoupled decay (not added to g)
    m = beta1 * m + (1 - beta1) * g              running mean of g           (m starts at 0)
    v = beta2 * v + (1 - beta2) * g^2            running mean of g^2         (v starts at 0)
    p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
      = p - lr * m_hat / (sqrt(v_hat) + eps)     m_hat, v_hat: the bias-corrected moments

Bias correction, the two divisions by (1 - beta^t): m and v start at zero, so early on they are
too small. After t steps of a constant gradient g, m = (1 - beta1^t) g, not g:

    m_1 = (1 - beta1) g = 0.1 g,   m_2 = beta1 m_1 + 0.1 g = 0.19 g,   ...   (beta1 = 0.9)

Dividing by (1 - beta1^t) undoes exactly that shrinkage (0.1 g / 0.1 = g, 0.19 g / 0.19 = g), and
the same for v with beta2. So the first update of a parameter is lr * g / (|g| + eps), about lr
in size for every element, however small g is. As t grows, beta^t goes to 0 and the correction
fades away.

t is counted per parameter, as PyTorch's ``state[p]["step"]``: a parameter's step advances only
on the calls where it has a gradient. A parameter that is frozen (``.grad`` None) is skipped
entirely: no decay, no moment update, no step. One that first gets a gradient at the third call
starts at t = 1, so its first move is lr, as if it had just joined (a global step would give it
t = 3, a correction tuned for moments that have three steps of history they do not have).

Everything is updated in place (``*=``, ``out=``): one scratch array per parameter per step, no new
parameter or state arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..backends import get_backend
from .optimizer import Optimizer


class AdamW(Optimizer):
    """AdamW with PyTorch's semantics (``torch.optim.AdamW``, amsgrad off).

    State per parameter: ``self.state[i]`` holds the moments ``exp_avg`` (m) and ``exp_avg_sq``
    (v), arrays of the parameter's shape; ``self.param_steps[i]`` is that parameter's step t
    (0 until its first gradient). ``state_dict()`` reports each t as ``state[i]["step"]``, where
    PyTorch keeps it.

    Example:
        opt = AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
        loss.backward(); opt.step(); opt.zero_grad()
    """

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
        self.param_steps: list[int] = [0 for _ in self.state]  # t of each parameter, in order

    def step(self, skip: Any = None) -> None:
        """One update of every parameter with a gradient. ``skip`` (a 0-d boolean device array, see
        ``Optimizer.step``): when true nothing changes but the counts; the fused kernel reads it on the
        device, the array code here reads it once (free on NumPy)."""
        self.step_count += 1  # calls of step(), for the record; the bias correction uses param_steps
        xp = get_backend().xp
        kernels = get_backend().kernels  # on CuPy: every parameter's update below in one CUDA launch
        skipped: bool | None = None  # the array code's reading of skip, made when first needed
        fused = []  # the (p, g, m, v, decay, beta1, beta2, eps, step_size, sqrt_bias2) handed to the kernel
        index = 0
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                i = index
                index += 1
                if p.grad is None:
                    continue  # frozen, or unused this step: skipped entirely, its t does not advance
                g = p.grad
                state = self.state[i]
                if not state:
                    state["exp_avg"] = xp.zeros_like(p.data)  # m
                    state["exp_avg_sq"] = xp.zeros_like(p.data)  # v
                self.param_steps[i] += 1
                t = self.param_steps[i]
                bias1 = 1 - beta1**t  # how much m is shrunk by having started at 0
                bias2 = 1 - beta2**t  # the same for v
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if kernels is not None and kernels.usable(p.data, g):
                    fused.append((p.data, g, m, v, 1 - lr * wd, beta1, beta2, eps, lr / bias1, math.sqrt(bias2)))
                    continue
                if skipped is None:
                    skipped = skip is not None and bool(skip)
                if skipped:
                    continue
                if wd:
                    p.data *= 1 - lr * wd  # decoupled decay, before the Adam update (as PyTorch)
                # One scratch array of p's shape serves every temporary below; what it holds after each line:
                scratch = g * g  #                          scratch = g^2
                scratch *= 1 - beta2  #                     scratch = (1 - beta2) g^2
                v *= beta2  #                               v = beta2 v (scratch unchanged)
                v += scratch  #                             v = beta2 v + (1 - beta2) g^2
                xp.multiply(g, 1 - beta1, out=scratch)  #   scratch = (1 - beta1) g
                m *= beta1  #                               m = beta1 m (scratch unchanged)
                m += scratch  #                             m = beta1 m + (1 - beta1) g
                xp.sqrt(v, out=scratch)  #                  scratch = sqrt(v)
                scratch /= math.sqrt(bias2)  #              scratch = sqrt(v / bias2) = sqrt(v_hat)
                scratch += eps  #                           scratch = sqrt(v_hat) + eps, the denominator
                xp.divide(m, scratch, out=scratch)  #       scratch = m / (sqrt(v_hat) + eps)
                scratch *= lr / bias1  #                    scratch = lr * m_hat / (sqrt(v_hat) + eps), the update
                p.data -= scratch  #                        p = p - update
        if fused:
            kernels.adamw_update_many(fused, skip)

    def counters(self) -> tuple:
        return (self.step_count, tuple(self.param_steps))

    def restore_counters(self, counters: tuple) -> None:
        self.step_count, steps = counters
        self.param_steps = list(steps)

    # -- checkpoints: the per-parameter steps travel inside "state", as PyTorch's do -------------------
    def state_dict(self) -> dict[str, Any]:
        """The base ``state_dict`` with each updated parameter's t as ``state[i]["step"]`` (a 0-d int64 array)."""
        state = super().state_dict()
        for i, t in enumerate(self.param_steps):
            if t:
                state["state"][i]["step"] = np.array(t, dtype=np.int64)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``'s result. A state saved before steps were per parameter (no
        ``"step"`` in a parameter's entry) gives every parameter that has moments the global step,
        which is what the bias correction used then; training continues as it would have."""
        moments: dict[int, dict[str, Any]] = {}
        steps: dict[int, int] = {}
        for index, values in state["state"].items():
            values = dict(values)
            saved = values.pop("step", None)
            if saved is not None:
                # a 0-d array from state_dict(), shape (1,) after a checkpoint, or a plain int
                array = np.asarray(get_backend().to_host(saved) if hasattr(saved, "shape") else saved).reshape(-1)
                if array.size != 1 or not float(array[0]).is_integer() or array[0] < 0:
                    raise ValueError(
                        f"optimizer state step of parameter {index} must be one whole number >= 0, got {array!r}"
                    )
                steps[int(index)] = int(array[0])
            elif values:
                steps[int(index)] = int(state["step"])  # an old checkpoint: one global step for all
            moments[int(index)] = values
        super().load_state_dict({**state, "state": moments})
        self.param_steps = [steps.get(i, 0) for i in range(len(self.state))]
