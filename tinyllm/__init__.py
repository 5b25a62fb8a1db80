"""tinyllm: a from-scratch deep-learning framework on NumPy (optional CuPy) for LLaMA-style models.

    import tinyllm as tl
    x = tl.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    x.grad  # array([2., 4.], dtype=float32)
"""

from . import models, nn, optim
from .autograd import Tensor, enable_grad, gradcheck, is_grad_enabled, no_grad, tensor
from .autograd.ops import (
    abs,
    cast,
    clamp,
    concatenate,
    exp,
    log,
    masked_fill,
    matmul,
    maximum,
    minimum,
    sqrt,
    stack,
    tanh,
    where,
)
from .backends import BackendUnavailableError, get_backend, set_backend
from .pretrained import load_pretrained
from .quant import quantize

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Tensor",
    "abs",
    "cast",
    "clamp",
    "concatenate",
    "enable_grad",
    "exp",
    "get_backend",
    "gradcheck",
    "is_grad_enabled",
    "load_pretrained",
    "log",
    "masked_fill",
    "matmul",
    "maximum",
    "minimum",
    "no_grad",
    "quantize",
    "set_backend",
    "sqrt",
    "stack",
    "tanh",
    "tensor",
    "where",
    "models",
    "nn",
    "optim",
]
