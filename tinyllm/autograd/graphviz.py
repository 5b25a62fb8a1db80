r"""Drawing the graph behind a tensor, for learning: ``to_dot(loss)`` gives Graphviz DOT text.

Tensors are boxes showing their name, shape, dtype, values and, once ``backward`` has run, their
gradient (as micrograd's drawing shows each node's data and grad); Functions are ellipses.
Only leaves keep a gradient, and ``backward`` frees the graph as it goes, so to draw the
gradients call ``loss.backward(retain_graph=True)`` first:

    >>> import tinyllm as tl
    >>> from tinyllm.autograd import to_dot
    >>> a = tl.tensor([2.0], requires_grad=True); a.name = "a"
    >>> b = tl.tensor([-3.0], requires_grad=True); b.name = "b"
    >>> loss = (a * b + a).sum()
    >>> loss.backward(retain_graph=True)
    >>> dot = to_dot(loss)
    >>> print(dot.splitlines()[0])
    digraph tinyllm {
    >>> print(_tensor_label(a).replace("\\n", " | "))    # dloss/da = b + 1 = -2
    a | (1,) float32 | requires_grad | data [2.] | grad [-2.]

Render it with ``dot -Tpng graph.dot -o graph.png`` (Graphviz), or paste the text into any
online Graphviz viewer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import get_backend
from .function import Function
from .tensor import Tensor

SHOWN_VALUES = 6  # tensors with more elements show a summary instead of every value


def _values(array: Any) -> str:
    """The values of a small array, or the mean and largest magnitude of a large one."""
    host = np.asarray(get_backend().to_host(array), dtype=np.float64)
    if host.size <= SHOWN_VALUES:
        return np.array2string(host.reshape(-1), precision=4, separator=", ")
    return f"mean {host.mean():.4g}, max |.| {np.abs(host).max():.4g}"


def _tensor_label(t: Tensor) -> str:
    name = f"{t.name}\\n" if t.name else ""
    grad = "\\nrequires_grad" if t.requires_grad else ""
    data = f"\\ndata {_values(t.data)}"
    gradient = f"\\ngrad {_values(t.grad)}" if t.grad is not None else ""
    return f"{name}{t.shape} {t.dtype}{grad}{data}{gradient}"


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
