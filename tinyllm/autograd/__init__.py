"""Reverse-mode automatic differentiation over backend arrays.

- :class:`Tensor` (tensor.py): an array plus its gradient and the op that made it;
- :class:`Function` (function.py): one op's forward and backward;
- ``ops/``: every op, one concept per file;
- :func:`gradcheck` (gradcheck.py): finite-difference checking;
- :func:`to_dot` (graphviz.py): the graph as Graphviz text.
"""

from . import ops
from .function import Function, enable_grad, is_grad_enabled, no_grad
from .gradcheck import GradcheckError, gradcheck
from .graphviz import to_dot
from .ops import sum_to
from .tensor import Tensor, as_tensor, tensor

__all__ = [
    "Function",
    "GradcheckError",
    "Tensor",
    "as_tensor",
    "enable_grad",
    "gradcheck",
    "is_grad_enabled",
    "no_grad",
    "ops",
    "sum_to",
    "tensor",
    "to_dot",
]
