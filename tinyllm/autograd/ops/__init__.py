"""Every differentiable op, as a Function class plus a lowercase wrapper (``Exp`` and ``exp``)."""

from .arithmetic import (
    Add,
    Div,
    Maximum,
    Minimum,
    Mul,
    Neg,
    Pow,
    Sub,
    add,
    div,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    sub,
    sum_to,
)
from .cross_entropy import CrossEntropy, cross_entropy
from .dropout import Dropout, dropout
from .embedding import Embedding, embedding
from .indexing import GetItem, Where, getitem, masked_fill, where
from .matmul import MatMul, matmul
from .reduction import Max, Mean, Sum, Var, max, mean, sum, var
from .shape import (
    BroadcastTo,
    Concatenate,
    Reshape,
    Split,
    Stack,
    Transpose,
    broadcast_to,
    chunk,
    concatenate,
    reshape,
    split,
    squeeze,
    stack,
    swapaxes,
    transpose,
    unsqueeze,
)
from .softmax import LogSoftmax, LogSumExp, Softmax, log_softmax, logsumexp, softmax
from .unary import (
    Abs,
    Cast,
    Clamp,
    Exp,
    Gelu,
    Log,
    Relu,
    Rsqrt,
    Sigmoid,
    Silu,
    Sqrt,
    Tanh,
    abs,
    cast,
    clamp,
    exp,
    gelu,
    log,
    relu,
    rsqrt,
    sigmoid,
    silu,
    sqrt,
    tanh,
)

__all__ = [name for name in dir() if not name.startswith("_")]
