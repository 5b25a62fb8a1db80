"""Choosing the array backend: NumPy (default) or CuPy.

    >>> import tinyllm as tl
    >>> tl.get_backend().name
    'numpy'
    >>> tl.set_backend("numpy")   # or "cupy"; also TINYLLM_BACKEND=cupy in the environment
    <tinyllm backend 'numpy' on cpu>

All arrays created after ``set_backend`` live on the new backend; tensors made
before keep their arrays where they are, so switch before building a model.
"""

from __future__ import annotations

import os

from .base import Backend
from .cupy_backend import BackendUnavailableError, CupyBackend
from .numpy_backend import NumpyBackend

__all__ = ["Backend", "BackendUnavailableError", "get_backend", "set_backend", "available_backends", "xp"]

_BACKENDS: dict[str, type[Backend]] = {"numpy": NumpyBackend, "cupy": CupyBackend}
_current: Backend | None = None


def available_backends() -> list[str]:
    """The backend names tinyllm knows (whether or not they can run here)."""
    return list(_BACKENDS)


def set_backend(name: str, seed: int | None = None) -> Backend:
    """Select the array backend by name and return it.

    Raises ``ValueError`` for an unknown name and ``BackendUnavailableError``
    (with the install command) when CuPy or a GPU is missing.
    """
    global _current
    key = str(name).strip().lower()
    if key not in _BACKENDS:
        raise ValueError(f"Unknown backend {name!r}: choose one of {available_backends()}.")
    if _current is not None and _current.name == key and seed is None:
        return _current
    _current = _BACKENDS[key](seed)
    return _current


def get_backend() -> Backend:
    """The backend in use; the first call reads ``TINYLLM_BACKEND`` (default ``numpy``)."""
    global _current
    if _current is None:
        set_backend(os.environ.get("TINYLLM_BACKEND", "numpy") or "numpy")
    assert _current is not None
    return _current


def xp():  # noqa: ANN201 - returns a module
    """Shorthand for ``get_backend().xp``: the array module in use."""
    return get_backend().xp
