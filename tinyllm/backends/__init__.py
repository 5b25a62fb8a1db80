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

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "get_backend",
    "set_backend",
    "available_backends",
    "backend_name_from_environment",
    "xp",
]

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


def backend_name_from_environment(name: str | None = None) -> str:
    """The backend to use: ``name`` if given (a ``--backend`` flag), else ``TINYLLM_BACKEND``, else ``"numpy"``.

    The name is checked, so a typo fails here and not silently later:

    >>> backend_name_from_environment("cupy")
    'cupy'
    """
    source = "--backend"
    if name is None:
        name, source = os.environ.get("TINYLLM_BACKEND", "").strip() or "numpy", "TINYLLM_BACKEND"
    key = str(name).strip().lower()
    if key not in _BACKENDS:
        raise ValueError(
            f"{source}={name!r} names no backend: choose one of {available_backends()}"
            + (" (or unset TINYLLM_BACKEND for numpy)" if source == "TINYLLM_BACKEND" else "")
        )
    return key


def get_backend() -> Backend:
    """The backend in use; the first call reads ``TINYLLM_BACKEND`` (default ``numpy``)."""
    global _current
    if _current is None:
        set_backend(backend_name_from_environment())
    assert _current is not None
    return _current


def xp():  # noqa: ANN201 - returns a module
    """Shorthand for ``get_backend().xp``: the array module in use."""
    return get_backend().xp
