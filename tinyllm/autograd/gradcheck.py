"""Checking analytic gradients against central finite differences.

For a scalar function L of an input x, each gradient entry is estimated as

    dL/dx_i  ~=  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

whose error is O(eps**2); in float64 with eps = 1e-6 that is far below the
tolerances used here. A function with a non-scalar output is reduced to a
scalar as L = sum(y * r) with a fixed random r, which checks every output
element's gradient at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..backends import get_backend
from .function import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with the finite-difference estimate."""


def _scalar_loss(output: Any, weights: Any) -> Any:
    outputs = output if isinstance(output, tuple | list) else (output,)
    total = None
    for out, w in zip(outputs, weights):
        term = (out * Tensor(w)).sum()
        total = term if total is None else total + term
    return total


def gradcheck(
    fn: Callable[..., Any],
    inputs: Sequence[Tensor],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> bool:
    """Compare the gradients of ``fn(*inputs)`` from ``backward`` with central differences.

    ``inputs`` are float64 Tensors; those with ``requires_grad=True`` are checked.
    ``fn`` may return one Tensor or a tuple of Tensors, of any shape. Passes when
    ``|analytic - numeric| <= atol + rtol * |numeric|`` everywhere; otherwise raises
    :class:`GradcheckError` naming the input, the worst element and both values.

    >>> import numpy as np, tinyllm as tl
    >>> from tinyllm.autograd import gradcheck
    >>> x = tl.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    >>> gradcheck(lambda t: (t * t).exp().sum(), [x])
    True
    """
    backend = get_backend()
    xp = backend.xp
    checked = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck needs at least one input with requires_grad=True")
    for t in checked:
        if not t.is_leaf:
            # backward gives only leaves a .grad: a non-leaf input would look like a zero gradient.
            raise ValueError("gradcheck inputs must be leaf tensors (made by tl.tensor, not by an op)")
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs (finite differences in float32 are too coarse), got {t.dtype}")

    output = fn(*inputs)
    outputs = output if isinstance(output, tuple | list) else (output,)
    rng = np.random.default_rng(seed)
    weights = [xp.asarray(rng.standard_normal(o.shape)) for o in outputs]

    for t in checked:
        t.grad = None
    _scalar_loss(output, weights).backward()
    analytic = [t.grad if t.grad is not None else xp.zeros_like(t.data) for t in checked]

    def loss_value() -> float:
        with no_grad():
            return float(_scalar_loss(fn(*inputs), weights).item())

    for index, (t, grad) in enumerate(zip(checked, analytic)):
        numeric = np.zeros(t.shape)
        # Perturb one element at a time, in place. (Not through reshape(-1): for a
        # non-contiguous input that is a copy, and the input would never change.)
        for i in np.ndindex(*t.shape):
            original = float(t.data[i])
            t.data[i] = original + eps
            plus = loss_value()
            t.data[i] = original - eps
            minus = loss_value()
            t.data[i] = original
            numeric[i] = (plus - minus) / (2 * eps)
        grad = backend.to_host(grad)
        close = np.abs(grad - numeric) <= atol + rtol * np.abs(numeric)  # False where either is nan
        if not close.all():
            error = np.where(close, -np.inf, np.nan_to_num(np.abs(grad - numeric), nan=np.inf))
            worst = np.unravel_index(int(np.argmax(error)), error.shape)
            raise GradcheckError(
                f"gradient of input {index} (shape {t.shape}) is wrong at index {tuple(int(i) for i in worst)}: "
                f"analytic {grad[worst]:.8g}, numeric {numeric[worst]:.8g} (atol={atol}, rtol={rtol}).\n"
                f"analytic:\n{grad}\nnumeric:\n{numeric}"
            )
        t.grad = None
    return True
