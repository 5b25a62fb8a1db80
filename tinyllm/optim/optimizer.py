"""``Optimizer``: parameter groups, per-parameter state, ``zero_grad``, ``state_dict``.

``params`` is a list of Parameters, or a list of groups (dicts with a ``"params"``
list and any hyperparameters that differ from the defaults), as in PyTorch::

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=3e-4)

As in PyTorch, ``step()`` skips every parameter whose ``.grad`` is None: a frozen parameter
(``requires_grad=False``) never gets one, so ``AdamW(model.parameters())`` on a partly frozen model
updates only the trainable ones, and the frozen ones get no optimizer state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..autograd import Tensor
from ..backends import get_backend


class Optimizer:
    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        seen: set[int] = set()
        for group in groups:
            unknown = set(group) - set(defaults) - {"params"}
            if unknown:
                raise ValueError(f"unknown optimizer options {sorted(unknown)}; valid: {sorted(defaults)}")
            group = {**defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"optimizer parameters must be Tensors (model.parameters()), got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one parameter group")
                seen.add(id(p))
            self.param_groups.append(group)
        self.state: list[dict[str, Any]] = [{} for _ in self.parameters()]  # per parameter, in order
        self.step_count = 0

    def parameters(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to None (gradients otherwise add up across backward calls)."""
        for p in self.parameters():
            p.grad = None

    def step(self, skip: Any = None) -> None:
        """Update every parameter that has a gradient. ``skip``: a 0-d boolean array that, when true, leaves
        every parameter as it is, though the step is counted (``train_step`` decides on the device whether a
        step is good without reading the answer back; it takes the count back with ``restore_counters`` when it
        reads that the step was bad)."""
        raise NotImplementedError

    def counters(self) -> tuple:
        """The step counts, to be put back by ``restore_counters`` (after steps skipped on the device)."""
        return (self.step_count,)

    def restore_counters(self, counters: tuple) -> None:
        (self.step_count,) = counters

    # -- checkpoints -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"step", "param_groups" (hyperparameters only), "state" (index -> {name: array})}``."""
        groups = [{k: v for k, v in g.items() if k != "params"} | {"n_params": len(g["params"])} for g in self.param_groups]
        return {"step": self.step_count, "param_groups": groups, "state": {i: dict(s) for i, s in enumerate(self.state)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned; the parameter groups must have the same sizes."""
        groups = state["param_groups"]
        if [g["n_params"] for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(
                f"optimizer state has groups of {[g['n_params'] for g in groups]} parameters, this optimizer has "
                f"{[len(g['params']) for g in self.param_groups]}"
            )
        backend = get_backend()
        params = self.parameters()
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "n_params"})
        self.step_count = int(state["step"])
        self.state = [{} for _ in params]
        for index, values in state["state"].items():
            i = int(index)
            for name, array in values.items():
                if tuple(array.shape) != params[i].shape:
                    raise ValueError(
                        f"optimizer state {name} of parameter {i} has shape {array.shape}, expected {params[i].shape}"
                    )
                self.state[i][name] = backend.asarray(array, dtype=params[i].dtype).copy()
