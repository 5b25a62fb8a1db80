"""``Module`` and ``Parameter``: the containers a model is built from (as in PyTorch).

A Module holds Parameters (trainable tensors), buffers (non-trainable arrays such
as RoPE tables) and child Modules, each registered simply by assigning it as an
attribute::

    class MLP(Module):
        def __init__(self):
            super().__init__()
            self.fc = Linear(4, 8)      # a child module: its parameters are "fc.weight"
            self.scale = Parameter(tl.tensor([1.0]))

Registration keeps definition order (plain dicts, never sets), so
``parameters()`` and ``state_dict()`` list tensors in the same order every run,
which optimizers and checkpoints rely on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..backends import get_backend


class Parameter(Tensor):
    """A tensor that a Module trains: ``requires_grad=True`` and floating point.

    >>> import numpy as np
    >>> p = Parameter(np.zeros((2, 3), dtype=np.float32))
    >>> p.requires_grad, p.shape
    (True, (2, 3))
    """

    def __init__(self, data: Any, requires_grad: bool = True, dtype: Any = None) -> None:
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class of layers and models. Subclasses define ``__init__`` (registering parts) and ``forward``."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # -- registration -------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        """``self.name = value``, noticing Parameters and Modules so that ``parameters()`` can find them.

        Python calls this for every attribute assignment. ``self.wq = Linear(...)`` therefore also
        records ``"wq"`` in ``self._modules``, and ``self.weight = Parameter(...)`` records
        ``"weight"`` in ``self._parameters``; ``named_parameters`` walks these dicts, in the order
        the attributes were first assigned. Anything else (ints, flags, plain arrays) is just an
        attribute. The registries themselves are set with ``object.__setattr__`` in ``__init__``,
        which bypasses this method (it would otherwise look for them before they exist).
        """
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before assigning {name!r}")
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)  # re-assigning a name replaces what it held (self.lm_head = None drops it)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array: Any, persistent: bool = False) -> None:
        """Keep a non-trainable array (e.g. RoPE cos/sin tables) as ``self.<name>``.

        Non-persistent buffers (the default) are recomputed from the config and not saved
        in ``state_dict``; persistent ones are.
        """
        self._buffers[name] = persistent
        object.__setattr__(self, name, array)

    # -- traversal ------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first, with dotted names ("" for self)."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name ("layers.0.attention.wq.weight"), in definition order.

        A parameter shared by two modules (tied embeddings) is listed once, under its first name.
        """
        seen: set[int] = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> list[Parameter]:
        """The parameters in definition order (a list, so it can be passed to an optimizer twice)."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # -- state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Name -> backend array for every parameter and persistent buffer (the arrays themselves, not copies)."""
        state = {name: p.data for name, p in self.named_parameters()}
        for module_name, module in self.named_modules():
            for name, persistent in module._buffers.items():
                if persistent:
                    state[f"{module_name}.{name}" if module_name else name] = getattr(module, name)
        return state

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy arrays (NumPy, CuPy or Tensors) into this module's parameters, in place.

        With ``strict=True`` every key must match: the error lists all missing keys, all
        unexpected keys and every shape mismatch at once. With ``strict=False`` missing and
        unexpected keys are ignored, but a shape mismatch is still an error.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [
            f"{k}: checkpoint {tuple(_shape_of(state[k]))} vs model {tuple(own[k].shape)}"
            for k in own
            if k in state and tuple(_shape_of(state[k])) != tuple(own[k].shape)
        ]
        problems = []
        if strict and missing:
            problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}")
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__} failed: " + " | ".join(problems))
        backend = get_backend()
        for key, target in own.items():
            if key in state:
                value = state[key]
                value = value.data if isinstance(value, Tensor) else value
                target[...] = backend.asarray(value, dtype=target.dtype)

    def to(self, dtype: Any) -> Module:
        """Cast every parameter and floating buffer to ``dtype`` (e.g. ``np.float64`` to check gradients)."""
        for _, module in self.named_modules():
            for param in module._parameters.values():
                param.data = param.data.astype(dtype)
                param.grad = None
            for name in module._buffers:
                array = getattr(module, name)
                if np.issubdtype(array.dtype, np.floating):
                    object.__setattr__(module, name, array.astype(dtype))
        return self

    # -- modes and gradients --------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout active) for this module and its children."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (dropout off); same as ``train(False)``."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to None. Gradients add up across backward calls until this."""
        for param in self.parameters():
            param.grad = None

    # -- calling ----------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        if len(lines) == 1:
            return lines[0] + ")"
        return "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules, registered as children "0", "1", ... (``model.layers[3]``)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> None:
        setattr(self, str(len(self._modules)), module)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


def _shape_of(value: Any) -> tuple[int, ...]:
    return tuple(value.shape)
