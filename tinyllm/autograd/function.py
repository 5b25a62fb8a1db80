"""``Function``: one differentiable operation, forward and backward side by side.

A Function works on raw backend arrays. Calling it on Tensors

1. unwraps the inputs to arrays and runs ``forward``;
2. wraps the results as Tensors;
3. if gradients are wanted, records itself as their ``creator`` so that
   ``Tensor.backward`` can later call ``backward`` with the gradient of the
   loss with respect to each output and receive one for each input.

Each Function keeps only what its backward needs (``self.save(...)``), never
more, and ``Tensor.backward`` drops that state once it has been used, so the
graph of one training step is freed when its backward is done.

Which inputs need a gradient. Before ``forward`` runs, ``__call__`` sets
``self.needs_input_grad``, one bool per input (as PyTorch's
``ctx.needs_input_grad``): True when gradients are being recorded and that input
requires grad (a trainable parameter, or a tensor computed from one). A frozen
parameter (``requires_grad=False``, e.g. after ``model.requires_grad_(False)``)
and a constant input read False. ``backward`` may return ``None`` for such an
input and skip its work: the fused linear computes no ``dW = dy^T x`` for a
frozen weight (and no ``dx`` for an input that needs none), which is what makes
a frozen base model cost nothing in LoRA fine-tuning. ``forward`` may also use
it to save less. Returning an array anyway is allowed: ``Tensor.backward``
drops gradients of inputs that do not require grad.

Writing a new op (compare DeZero's ``functions.py``)::

    class Exp(Function):
        '''y = exp(x);  dL/dx = dL/dy * y'''
        def forward(self, x):
            y = self.xp.exp(x)
            self.save(y)
            return y
        def backward(self, gy):
            (y,) = self.saved
            return gy * y

    def exp(x): return Exp()(x)
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..backends import get_backend

if TYPE_CHECKING:
    from .tensor import Tensor


class _GradMode:
    enabled: bool = True


def is_grad_enabled() -> bool:
    """True unless inside a ``no_grad()`` block."""
    return _GradMode.enabled


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Context manager: inside it, operations record no graph (inference, optimizer steps).

    >>> import tinyllm as tl
    >>> w = tl.tensor([1.0, 2.0], requires_grad=True)
    >>> with tl.no_grad():
    ...     y = w * 2
    >>> y.requires_grad
    False
    """
    previous = _GradMode.enabled
    _GradMode.enabled = False
    try:
        yield
    finally:
        _GradMode.enabled = previous


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    """Context manager that turns graph recording back on inside ``no_grad``."""
    previous = _GradMode.enabled
    _GradMode.enabled = True
    try:
        yield
    finally:
        _GradMode.enabled = previous


class Function:
    """Base class of every differentiable op. Subclasses define ``forward`` and ``backward``.

    ``forward(*arrays) -> array | tuple[array, ...]``
    ``backward(*output_grads) -> array | None | tuple[array | None, ...]`` (one per input;
    ``None`` for inputs that get no gradient, such as integer indices).
    An output gradient passed to ``backward`` is ``None`` when that output was not used
    by the loss; single-output Functions always receive an array.
    """

    inputs: tuple[Tensor, ...] | None
    outputs: list[weakref.ref] | None
    generation: int
    saved: tuple
    needs_input_grad: tuple[bool, ...] = ()  # one per input, set by __call__ before forward

    @property
    def xp(self) -> Any:
        """The array module (numpy or cupy) of the backend in use."""
        return get_backend().xp

    def save(self, *arrays: Any) -> None:
        """Keep arrays for ``backward`` (released after backward runs)."""
        self.saved = arrays

    def __call__(self, *inputs: Any) -> Any:
        # (This runs once per operation, hundreds of times a training step: on a GPU its Python time adds to
        # every kernel launch, so it avoids work it can skip; _tensor is the tensor module, bound below.)
        Tensor = _tensor.Tensor
        tensors = inputs
        for x in inputs:
            if not isinstance(x, Tensor):
                # Python scalars take the dtype of the floating tensors they meet (x * 2.0 stays float64).
                like = _tensor.floating_dtype_of(inputs)
                tensors = tuple(x if isinstance(x, Tensor) else _tensor.as_tensor(x, dtype=like) for x in inputs)
                break
        recording = _GradMode.enabled
        self.needs_input_grad = tuple(recording and t.requires_grad for t in tensors)
        outputs = self.forward(*[t.data for t in tensors])
        single = not isinstance(outputs, tuple)
        if single:
            outputs = (outputs,)
        needs_grad = True in self.needs_input_grad
        # Integer or boolean results (argmax-like, casts to int) never require grad.
        is_floating = _tensor.is_floating
        results = [Tensor(y, requires_grad=needs_grad and is_floating(y.dtype), _is_result=True) for y in outputs]
        if needs_grad:
            self.generation = max(t.generation for t in tensors)
            self.inputs = tensors
            self.outputs = [weakref.ref(r) for r in results]
            for r in results:
                if r.requires_grad:
                    r.creator = self
                    r.generation = self.generation + 1
        else:
            # Nothing will call backward: drop whatever forward saved.
            self.saved = ()
        return results[0] if single else tuple(results)

    def forward(self, *arrays: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, *grads: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def release(self) -> None:
        """Forget inputs, outputs and saved arrays (called once backward has used them)."""
        self.inputs = None
        self.outputs = None
        self.saved = ()

    @property
    def name(self) -> str:
        return type(self).__name__


from . import tensor as _tensor  # noqa: E402  (tensor imports this module: bound once both exist)
