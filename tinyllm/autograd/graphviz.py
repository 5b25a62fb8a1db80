"""Drawing the graph behind a tensor, for learning: ``to_dot(loss)`` gives Graphviz DOT text.

    >>> import tinyllm as tl
    >>> from tinyllm.autograd import to_dot
    >>> w = tl.tensor([1.0, 2.0], requires_grad=True)
    >>> print(to_dot((w * w).sum()))  # doctest: +SKIP
    digraph tinyllm { ... }

Render it with ``dot -Tpng graph.dot -o graph.png``. Tensors are boxes (shape,
dtype, and whether they need grad), Functions are ellipses.
"""

from __future__ import annotations

from .function import Function
from .tensor import Tensor


def _tensor_label(t: Tensor) -> str:
    name = f"{t.name}\\n" if t.name else ""
    grad = "\\nrequires_grad" if t.requires_grad else ""
    return f"{name}{t.shape} {t.dtype}{grad}"


def to_dot(tensor: Tensor) -> str:
    """Return the graph that produced ``tensor`` in Graphviz DOT format."""
    lines = ["digraph tinyllm {", "  rankdir=LR;"]
    seen_tensors: set[int] = set()
    seen_functions: set[int] = set()
    seen_edges: set[tuple[int, int]] = set()  # a tensor used twice is reached twice: draw its edge once

    def add_tensor(t: Tensor) -> None:
        if id(t) not in seen_tensors:
            seen_tensors.add(id(t))
            color = ', style=filled, fillcolor="lightblue"' if t.requires_grad and t.creator is None else ""
            lines.append(f'  t{id(t)} [shape=box, label="{_tensor_label(t)}"{color}];')

    add_tensor(tensor)
    stack: list[tuple[Function, Tensor]] = [(tensor.creator, tensor)] if tensor.creator else []
    while stack:
        f, out = stack.pop()
        if (id(f), id(out)) not in seen_edges:
            seen_edges.add((id(f), id(out)))
            lines.append(f"  f{id(f)} -> t{id(out)};")
        if id(f) in seen_functions:
            continue
        seen_functions.add(id(f))
        if f.inputs is None:
            lines.append(f'  f{id(f)} [label="{f.name} (freed)"];')
            continue
        lines.append(f'  f{id(f)} [label="{f.name}"];')
        for x in f.inputs:
            add_tensor(x)
            lines.append(f"  t{id(x)} -> f{id(f)};")
            if x.creator is not None:
                stack.append((x.creator, x))
    lines.append("}")
    return "\n".join(lines)
