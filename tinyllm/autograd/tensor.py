"""``Tensor``: an array from the backend plus what reverse-mode autograd needs.

A Tensor holds

- ``data``: a NumPy or CuPy array (the backend's ``xp.ndarray``);
- ``grad``: after ``backward()``, dL/d(this tensor) as a plain array of the same
  shape and dtype (or ``None``); only leaf tensors that require grad get one;
- ``creator``: the :class:`~tinyllm.autograd.function.Function` that made it,
  which remembers its inputs, so the tensors form a graph back to the leaves.

``loss.backward()`` walks that graph from the loss towards the leaves, always
taking next the Function with the highest ``generation`` (its distance from the
leaves), so a Function runs its backward only after every use of its outputs
has handed back a gradient. The walk is a loop over a heap, not recursion, so
graphs thousands of ops deep work. Each Function's saved arrays are released as
soon as its backward has run: one step's graph never outlives that step.

dtype rules: Python floats become float32 (the default); arrays keep their dtype,
so float64 arrays stay float64 (used to check gradients); integer tensors never
require grad.
"""

from __future__ import annotations

import functools
import heapq
from typing import Any

import numpy as np

from ..backends import get_backend
from .function import Function, is_grad_enabled

DEFAULT_DTYPE = np.float32


def _to_array(data: Any, dtype: Any = None) -> Any:
    """Convert lists, scalars, NumPy or CuPy arrays to an array of the current backend."""
    backend = get_backend()
    xp = backend.xp
    if backend.is_array(data):
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    if isinstance(data, np.ndarray | np.generic):
        return xp.asarray(data, dtype=dtype)
    if type(data) in (bool, int, float):  # a Python number (loss * 0.5): made on the device, no host copy
        dtype = dtype or (DEFAULT_DTYPE if type(data) is float else np.result_type(data))
        return xp.full((), data, dtype=dtype)
    array = np.asarray(data)
    if dtype is None and array.dtype == np.float64:
        dtype = DEFAULT_DTYPE  # plain Python floats: float32 by default
    if array.dtype == object:
        raise TypeError(f"Cannot make a tensor from {type(data).__name__}: expected numbers or nested lists of numbers")
    return xp.asarray(array, dtype=dtype)


@functools.cache  # asked for every result of every operation: remembered per dtype
def is_floating(dtype: Any) -> bool:
    """True for float16/32/64 dtypes (NumPy's dtype kind "f"; CuPy uses NumPy dtypes) and for
    ml_dtypes' bfloat16 (kind "V" to NumPy; tinyllm.amp uses it on CuPy)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name == "bfloat16"


class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    >>> import tinyllm as tl
    >>> x = tl.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    >>> loss = (x * x).sum()
    >>> loss.backward()
    >>> x.grad
    array([[2., 4.],
           [6., 8.]], dtype=float32)
    """

    # NumPy scalars/arrays on the left of an operator defer to Tensor's reflected methods.
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None, *, _is_result: bool = False) -> None:
        if isinstance(data, Tensor):
            data = data.data
        if _is_result:
            # Results of a Function are already backend arrays, though reductions may
            # return a NumPy scalar: make those 0-d arrays.
            xp = get_backend().xp
            array = data if isinstance(data, xp.ndarray) else xp.asarray(data)
        else:
            array = _to_array(data, dtype)
        if requires_grad and not is_floating(array.dtype):
            raise TypeError(
                f"Only floating-point tensors can require gradients, but this tensor is {array.dtype}. "
                "Integer tensors (token ids, indices) are inputs, not parameters; cast with .float() if you "
                "really need a gradient."
            )
        self.data = array
        self.grad: Any = None
        self.requires_grad = bool(requires_grad)
        self.creator: Function | None = None
        self.generation = 0
        self.name: str | None = None

    # -- array-like attributes --------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def T(self) -> Tensor:
        """All axes reversed, as NumPy's ``.T``."""
        return self.transpose()

    @property
    def is_leaf(self) -> bool:
        """True for tensors not made by a recorded op (parameters, inputs)."""
        return self.creator is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = repr(get_backend().to_host(self.data)).replace("array(", "tensor(", 1)
        return body[:-1] + ", requires_grad=True)" if self.requires_grad else body

    def item(self) -> float | int | bool:
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def numpy(self) -> np.ndarray:
        """A NumPy copy of the data on the host (detached from the graph)."""
        return np.array(get_backend().to_host(self.data))

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def detach(self) -> Tensor:
        """A tensor sharing this one's data, outside any graph."""
        return Tensor(self.data)

    def zero_grad(self) -> None:
        """Forget the accumulated gradient (``grad = None``); gradients add up until then."""
        self.grad = None

    def requires_grad_(self, flag: bool = True) -> Tensor:
        if flag and not is_floating(self.dtype):
            raise TypeError(f"Only floating-point tensors can require gradients, not {self.dtype}")
        self.requires_grad = flag
        return self

    # -- backward ---------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Compute d(self)/d(leaf) for every leaf tensor that requires grad, adding into ``leaf.grad``.

        ``grad`` is the gradient flowing into this tensor (default 1 for a one-element
        tensor). The graph is freed afterwards unless ``retain_graph=True``; calling
        ``backward`` again through a freed graph raises ``RuntimeError``.

        **The order.** A Function may run its backward only once the gradients of *all* its
        outputs' uses have arrived. Take the diamond from ``tests/test_autograd_core.py``::

            x (leaf, gen 0) -> Mul(x, 2) -> a (gen 1)
            a -> Mul(a, 3) -> b (gen 2)
            a -> Mul(a, a) -> c (gen 2)
            (b, c) -> Add -> s (gen 3) -> Sum -> loss (gen 4)          loss = sum(3a + a*a)

        A Function's ``generation`` is the highest among its inputs' and its output's is one more:
        Mul(x, 2) is 0, the two Muls on a are 1, Add 2, Sum 3 (the gens in the picture are the
        tensors'). Starting from Sum (gen 3): it hands ds to Add (gen 2), which hands db
        to Mul(a, 3) and dc to Mul(a, a), both gen 1. Each of those adds its part into a's pending
        gradient, da = 3 db + 2a dc. Only then may Mul(x, 2) (gen 0) run, with the complete da.
        Always taking the highest generation next guarantees that: every use of a tensor has a
        higher generation than the Function that made it. A depth-first recursion (micrograd's
        topological sort) gets the same order, but hits Python's recursion limit on deep graphs.

        **The heap.** ``heapq`` pops the *smallest* item, so entries are ``(-generation, counter,
        f)``: the negated generation makes the highest generation come out first. ``counter``
        breaks ties between Functions of the same generation in the order they were pushed, and
        means the tuple comparison never reaches ``f`` itself (Functions define no ``<``).

        **Weak references.** A Function holds its inputs strongly (it needs them) but its outputs
        only weakly (``Function.outputs`` is a list of ``weakref.ref``). Output -> creator ->
        output would be a cycle, freed only by Python's slower cycle collector; with the weak
        link, dropping the last reference to a step's loss frees the whole graph at once. Here
        ``ref()`` is None for an output nobody kept, and such an output contributes no gradient.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the computation had "
                "requires_grad=True, or it was computed inside no_grad()."
            )
        xp = get_backend().xp
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without an argument needs a one-element tensor (a loss); this one has shape "
                    f"{self.shape}. Pass grad= with the same shape."
                )
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else _to_array(grad, self.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward(grad) got a gradient of shape {grad.shape} for a tensor of shape {self.shape}")

        if self.creator is None:
            self._accumulate(grad)
            return

        # Pending gradients of non-leaf tensors, keyed by id. The tensor itself is kept in the
        # value: a Function holds its outputs only weakly, so once the Function that consumed an
        # intermediate tensor is released, this entry is what keeps that tensor (and its id) alive.
        grads: dict[int, tuple[Tensor, Any]] = {id(self): (self, grad)}
        heap: list[tuple[int, int, Function]] = []
        queued: set[int] = set()
        counter = 0

        def push(f: Function) -> None:
            nonlocal counter
            if id(f) not in queued:
                queued.add(id(f))
                heapq.heappush(heap, (-f.generation, counter, f))
                counter += 1

        push(self.creator)
        while heap:
            _, _, f = heapq.heappop(heap)
            if f.inputs is None:
                raise RuntimeError(
                    f"Trying to backward through the graph a second time ({f.name} was already freed). "
                    "Call backward(retain_graph=True) the first time if you need to backward twice, or "
                    "recompute the forward pass."
                )
            output_grads = []
            for ref in f.outputs:
                out = ref()
                entry = grads.pop(id(out), None) if out is not None else None
                output_grads.append(None if entry is None else entry[1])
            if all(g is None for g in output_grads):
                if not retain_graph:
                    f.release()
                continue
            input_grads = f.backward(*output_grads)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(f.inputs):
                raise RuntimeError(f"{f.name}.backward returned {len(input_grads)} gradients for {len(f.inputs)} inputs")
            for x, gx in zip(f.inputs, input_grads):
                if gx is None or not x.requires_grad:
                    continue
                if gx.shape != x.data.shape:
                    raise RuntimeError(
                        f"{f.name}.backward returned a gradient of shape {gx.shape} for an input of shape {x.shape}"
                    )
                if x.creator is None:
                    x._accumulate(gx)
                else:
                    key = id(x)
                    grads[key] = (x, gx) if key not in grads else (x, grads[key][1] + gx)
                    push(x.creator)
            if not retain_graph:
                f.release()

    def _accumulate(self, gx: Any) -> None:
        """Add a gradient into ``self.grad`` (a fresh array we own, in our dtype)."""
        if self.grad is None:
            self.grad = get_backend().xp.array(gx, dtype=self.dtype, copy=True)
        else:
            self.grad += gx

    # -- operators ---------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return ops.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return ops.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return ops.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return ops.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return ops.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return ops.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return ops.div(other, self)

    def __neg__(self) -> Tensor:
        return ops.neg(self)

    def __pow__(self, exponent: float) -> Tensor:
        return ops.pow(self, exponent)

    def __matmul__(self, other: Any) -> Tensor:
        return ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return ops.matmul(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return ops.getitem(self, index)

    # Comparisons give boolean tensors and record no graph.
    def _compare(self, other: Any, name: str) -> Tensor:
        other_data = other.data if isinstance(other, Tensor) else other
        return Tensor(getattr(self.data, name)(other_data))

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(other, "__lt__")

    def __le__(self, other: Any) -> Tensor:
        return self._compare(other, "__le__")

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(other, "__gt__")

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(other, "__ge__")

    def eq(self, other: Any) -> Tensor:
        """Elementwise ``==`` as a boolean tensor (``==`` itself keeps Python identity semantics)."""
        return self._compare(other, "__eq__")

    def ne(self, other: Any) -> Tensor:
        return self._compare(other, "__ne__")

    __hash__ = object.__hash__

    # -- methods for the ops -------------------------------------------------------
    def exp(self) -> Tensor:
        return ops.exp(self)

    def log(self) -> Tensor:
        return ops.log(self)

    def sqrt(self) -> Tensor:
        return ops.sqrt(self)

    def rsqrt(self) -> Tensor:
        return ops.rsqrt(self)

    def tanh(self) -> Tensor:
        return ops.tanh(self)

    def sigmoid(self) -> Tensor:
        return ops.sigmoid(self)

    def relu(self) -> Tensor:
        return ops.relu(self)

    def silu(self) -> Tensor:
        return ops.silu(self)

    def gelu(self, approximate: str = "tanh") -> Tensor:
        return ops.gelu(self, approximate=approximate)

    def abs(self) -> Tensor:
        return ops.abs(self)

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        return ops.clamp(self, min, max)

    def maximum(self, other: Any) -> Tensor:
        return ops.maximum(self, other)

    def minimum(self, other: Any) -> Tensor:
        return ops.minimum(self, other)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return ops.max(self, axis=axis, keepdims=keepdims)

    def var(self, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
        return ops.var(self, axis=axis, keepdims=keepdims, ddof=ddof)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        return ops.reshape(self, shape)

    view = reshape

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], tuple | list):
            axes = tuple(axes[0])
        return ops.transpose(self, axes or None)

    permute = transpose

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        return ops.swapaxes(self, axis1, axis2)

    def broadcast_to(self, shape: tuple[int, ...]) -> Tensor:
        return ops.broadcast_to(self, shape)

    expand = broadcast_to

    def squeeze(self, axis: Any = None) -> Tensor:
        return ops.squeeze(self, axis)

    def unsqueeze(self, axis: int) -> Tensor:
        return ops.unsqueeze(self, axis)

    def split(self, indices_or_sections: Any, axis: int = 0) -> tuple[Tensor, ...]:
        return ops.split(self, indices_or_sections, axis=axis)

    def chunk(self, chunks: int, axis: int = 0) -> tuple[Tensor, ...]:
        return ops.chunk(self, chunks, axis=axis)

    def masked_fill(self, mask: Any, value: float) -> Tensor:
        return ops.masked_fill(self, mask, value)

    def softmax(self, axis: int = -1) -> Tensor:
        return ops.softmax(self, axis=axis)

    def log_softmax(self, axis: int = -1) -> Tensor:
        return ops.log_softmax(self, axis=axis)

    def logsumexp(self, axis: Any = -1, keepdims: bool = False) -> Tensor:
        return ops.logsumexp(self, axis=axis, keepdims=keepdims)

    def astype(self, dtype: Any) -> Tensor:
        return ops.cast(self, dtype)

    def float(self) -> Tensor:
        return ops.cast(self, np.float32)

    def double(self) -> Tensor:
        return ops.cast(self, np.float64)


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Make a Tensor, as ``torch.tensor``: ``tl.tensor([1.0, 2.0], requires_grad=True)``."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def as_tensor(obj: Any, dtype: Any = None) -> Tensor:
    """Return ``obj`` if it is a Tensor, else a new constant Tensor (``dtype`` for Python scalars)."""
    if isinstance(obj, Tensor):
        return obj
    if dtype is not None and isinstance(obj, int | float | bool):
        return Tensor(obj, dtype=dtype)
    return Tensor(obj)


def floating_dtype_of(objs: Any) -> Any:
    """The dtype of the first floating-point Tensor among ``objs`` (None if there is none)."""
    for obj in objs:
        if isinstance(obj, Tensor) and is_floating(obj.dtype):
            return obj.dtype
    return None


def grad_enabled_for(*tensors: Tensor) -> bool:
    """Whether an op on these tensors would record a graph."""
    return is_grad_enabled() and any(t.requires_grad for t in tensors)


from . import ops  # noqa: E402  (the ops import Tensor; bind them after the class exists)
