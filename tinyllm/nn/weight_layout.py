"""Input-major weights: the same matrices, laid out in memory so that CPU decoding reads them faster.

A ``Linear`` keeps its weight W as (out_features, in_features), PyTorch's convention, and computes
``y = x @ W.T``. With NumPy's default (C, row-major) order, ``W.T`` is a strided view: row-major
(in, out) is what BLAS sees only after a transpose. When decoding, x has a handful of rows (one
per active sequence), and what a step costs is reading every weight once from main memory:

    rows of x   BLAS call                  W stored (out, in) row-major     W stored input-major
    1           sgemv                      reads W along its rows          reads W along its columns
    2 .. 16     sgemm (packs W first)      packing transposes W            packing copies W as it lies

Storing W input-major (NumPy's Fortran order: shape still (out, in), but element (o, i) sits at
``i * out + o``) makes ``W.T`` a contiguous row-major (in, out) array, so ``x @ W.T`` is a plain
"no transpose" product. Measured on one core of this project's 2-core machine (OpenBLAS,
``python benchmarks/decode_batch.py``): x (n, 576) times a (1536, 576) weight read from memory took
261 / 461 us for 1 / 4 rows stored (out, in) row-major and 162 / 313 us stored input-major; a whole
SmolLM2-135M decode step, 50 / 97 ms for 1 / 4 sequences as loaded and 44 / 72 ms with this layout
and ``NumpyBackend.matmul``'s padding of 2 or 3 rows to 4. (A weight that sits in the CPU's cache is
another story: one row then takes 58 us row-major and 175 us input-major, ``--products --cached``. In a
decode step each weight is read once, so that case is rare: for models of the cpu and gpu presets' shapes
a step took 2.0 / 6.0 ms as loaded and 1.9 / 5.4 ms input-major, ``--shape 128,4,4,512`` and
``--shape 384,6,6,1024``.)

Nothing but speed changes: shapes, values, ``state_dict`` and every formula are the same, and
training works on such weights too. The tied output projection (``logits = x E^T`` with the
embedding table E) is the largest matrix of a small model (49152 x 576 in SmolLM2), so the table
is laid out the same way; looking up a few rows of it per step is cheap either way.

Only the NumPy backend is touched: cuBLAS handles both layouts at full speed.
"""

from __future__ import annotations

import numpy as np

from ..backends import get_backend
from .embedding import Embedding
from .linear import Linear
from .module import Module


def input_major_weights(model: Module) -> Module:
    """Lay out every float ``Linear`` weight of ``model`` (and a tied output projection's embedding
    table) input-major in memory, in place; returns ``model``. Call it after loading, merging LoRA
    and quantizing (quantized layers keep their own layout), before decoding on the CPU.

    >>> import tinyllm as tl
    >>> layer = Linear(4, 3)
    >>> x = tl.tensor(np.ones((2, 4), dtype=np.float32))
    >>> before = layer(x).data
    >>> _ = input_major_weights(layer)
    >>> layer.weight.shape, layer.weight.data.flags.f_contiguous, bool((layer(x).data == before).all())
    ((3, 4), True, True)
    """
    if get_backend().name != "numpy":
        return model
    weights = [module.weight for module in model.modules() if isinstance(module, Linear)]
    table = getattr(model, "tok_embeddings", None)
    if getattr(model, "lm_head", "absent") is None and isinstance(table, Embedding):  # tied: logits = x E^T
        weights.append(table.weight)
    for weight in weights:
        if isinstance(weight.data, np.ndarray) and weight.data.dtype.kind == "f" and weight.data.ndim == 2:
            weight.data = np.asfortranarray(weight.data)  # (out, in), input-major in memory
    return model


__all__ = ["input_major_weights"]
