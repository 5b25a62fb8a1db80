"""Checks that wait for one read: validity flags computed on the device, resolved together.

Asking "is every token id in range?" is cheap for a GPU to compute, but knowing the answer on the host
means reading a boolean back, and on a GPU every read is a synchronisation: the CPU waits until
everything queued so far has run, and the GPU then idles until new work is queued. A training step
makes several such checks (the token ids, once per micro-batch; the loss's targets); reading each
where it is made cost one synchronisation apiece.

Inside a ``deferred_checks()`` block (a training step, ``queue_train_step``, opens one around its
micro-batches, and ``evaluate`` one around its batches) a check whose
answer lives on the device does not read it: it records the flag and how to build its error. Whoever
opened the block reads every flag at once, in the same transfer as the values it reads anyway (the
loss, the gradient norm), and calls ``raise_first``: the error comes before the optimizer update, so
nothing has changed, and one read replaces many. Outside such a block, and for host values (NumPy,
where reading costs nothing), a check raises at once::

    check(outside.any(), lambda: IndexError("token id 70 is out of range ..."))

(With CuPy an out-of-range row index is not an error on the device: it wraps around. So a deferred check
lets the forward and backward run on a wrong row before the error is raised: wasted work, never a change
to the model, since the update waits for the read.)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


class DeferredChecks:
    """The checks made inside one ``deferred_checks()`` block: their device flags and their errors."""

    def __init__(self) -> None:
        self.flags: list[Any] = []  # 0-d boolean device arrays; True means the check failed
        self.errors: list[Callable[[], Exception]] = []

    def raise_first(self, failed: list[bool]) -> None:
        """Given the flags read back (in the order of ``flags``), raise the error of the first that failed."""
        for bad, error in zip(failed, self.errors):
            if bad:
                raise error()


_local = threading.local()  # each thread its own stack of open blocks (the server decodes on threads)


def _stack() -> list[DeferredChecks]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


@contextlib.contextmanager
def deferred_checks() -> Iterator[DeferredChecks]:
    """Within the block, device-side checks are recorded, not read; the caller reads ``flags`` and calls
    ``raise_first`` (see the module docstring)."""
    checks = DeferredChecks()
    _stack().append(checks)
    try:
        yield checks
    finally:
        _stack().pop()


def check(failed: Any, error: Callable[[], Exception]) -> None:
    """Raise ``error()`` if the 0-d boolean ``failed`` is true: at once, or, for a device value inside
    ``deferred_checks()``, when that block's owner reads its flags. ``error`` may read more values back
    (the offending id, say): it runs only when the check failed."""
    stack = _stack()
    if stack and not isinstance(failed, (np.ndarray, np.generic, bool)):  # a device value: let it wait
        stack[-1].flags.append(failed)
        stack[-1].errors.append(error)
    elif bool(failed):
        raise error()
