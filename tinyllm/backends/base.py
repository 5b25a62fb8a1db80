"""The backend interface: the few array operations that differ between NumPy and CuPy.

Everything else in tinyllm is written against ``backend.xp``, the array module
(``numpy`` or ``cupy``), whose functions have the same names and meaning on both.
What does *not* agree between the two lives here and only here:

- ``scatter_add``: the backward of a gather (embedding lookup, fancy indexing)
  must add duplicate indices together. NumPy spells it ``np.add.at``, CuPy
  ``cupy.add.at`` (with atomic adds, whose order varies from run to run: the embedding's
  backward uses a deterministic kernel instead, ``cuda_kernels.scatter_add_rows``).
- random numbers: each backend owns one seeded generator on its device (weight init, dropout).
  CuPy's generators keep their state on the GPU and cannot export it, so training never saves
  it: batches are drawn on the host by a NumPy generator, and the device generator is re-seeded
  at every step from the run's seed and the step number (``tinyllm.train``).
- moving arrays between the host (NumPy) and the device.
- ``synchronize``: waiting for queued GPU work, needed for honest timings.
- ``matmul``: ``a @ b``, where a BLAS library has a shape it handles badly (NumPy: a few rows).
"""

from __future__ import annotations

from typing import Any


class Backend:
    """Base class of the NumPy and CuPy backends.

    Attributes:
        name: ``"numpy"`` or ``"cupy"``.
        xp: the array module, used as ``xp.exp(a)``, ``xp.zeros(shape)``...
    """

    name: str = "base"
    xp: Any = None
    kernels: Any = None  # fused kernels that Functions use when set (CuPy: tinyllm.backends.cuda_kernels)
    flash_attention: bool = False  # attention by the tiled kernels (CuPy, TINYLLM_FLASH_ATTENTION=1), not the matrix

    def __init__(self, seed: int | None = None) -> None:
        self.rng = self.make_rng(seed)

    # -- random numbers -------------------------------------------------
    def make_rng(self, seed: int | None) -> Any:
        """A new generator on this backend's device (``rng.random``, ``rng.standard_normal``, ``rng.integers``)."""
        return self.xp.random.default_rng(seed)

    def seed(self, seed: int) -> None:
        """Re-seed the backend's random generator (dropout, weight init). Cheap: training calls it every step."""
        self.rng = self.make_rng(seed)

    def get_rng_state(self) -> dict:
        """The generator state as JSON-friendly data (NumPy only: CuPy cannot export it)."""
        raise NotImplementedError

    def set_rng_state(self, state: dict) -> None:
        raise NotImplementedError

    # -- arrays -----------------------------------------------------------
    def is_array(self, obj: Any) -> bool:
        return isinstance(obj, self.xp.ndarray)

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """Return ``obj`` as an array of this backend (host arrays are copied to the device)."""
        return self.xp.asarray(obj, dtype=dtype)

    def to_host(self, array: Any) -> Any:
        """Return a NumPy array with the same values (a no-op for NumPy)."""
        raise NotImplementedError

    def scatter_add(self, target: Any, indices: Any, values: Any) -> None:
        """In place: ``target[indices] += values``, with duplicate indices accumulating.

        Example: target = [0, 0, 0], indices = [0, 2, 0], values = [1, 2, 3]
        gives [4, 0, 2] (plain ``target[indices] += values`` would give [3, 0, 2]).
        """
        raise NotImplementedError

    def erf(self, x: Any) -> Any:
        """The error function, elementwise (NumPy itself has none)."""
        raise NotImplementedError

    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b`` for a 2-D ``a`` (rows, k) and ``b`` (k, n); the Linear layers' product."""
        return a @ b

    def set_tf32(self, enabled: bool) -> bool:
        """Let float32 matmuls use TF32 tensor cores (10-bit mantissa products, float32 sums) where the
        device has them; return whether this backend has such a switch (NumPy: no, nothing changes)."""
        return False

    def synchronize(self) -> None:
        """Block until all queued work on the device has finished."""

    def device_name(self) -> str:
        return "cpu"

    def __repr__(self) -> str:
        return f"<tinyllm backend {self.name!r} on {self.device_name()}>"
