"""The GPU backend: CuPy on an NVIDIA GPU.

Importing this module never fails; constructing :class:`CupyBackend` raises
:class:`BackendUnavailableError` when CuPy is missing or no GPU is visible,
with the command that fixes it. tinyllm never falls back to NumPy silently.
"""

from __future__ import annotations

from typing import Any

from .base import Backend

INSTALL_HINT = (
    'Install CuPy for your CUDA version with `pip install "tinyllm[cuda12]"` '
    '(or "tinyllm[cuda13]"), on a machine with an NVIDIA GPU, or use the NumPy backend '
    "(`--backend numpy`, TINYLLM_BACKEND=numpy)."
)


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine."""


def _import_cupy() -> Any:
    try:
        import cupy
    except ImportError as error:
        raise BackendUnavailableError(f"The 'cupy' backend needs CuPy, which is not installed. {INSTALL_HINT}") from error
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA driver missing or broken
        raise BackendUnavailableError(f"CuPy is installed but no GPU is usable ({error}). {INSTALL_HINT}") from error
    if n_devices == 0:
        raise BackendUnavailableError(f"CuPy is installed but no GPU is visible. {INSTALL_HINT}")
    return cupy


def _use_this_ranks_gpu(cupy: Any) -> None:
    """Under a launcher (mpiexec, torchrun), rank k of a machine uses GPU k (k modulo the GPUs it can see).

    It must happen before the first array is made: arrays, and an NCCL communicator, belong to the
    device that was current when they were created.
    """
    from ..distributed.launcher import detect_launch  # here, not at the top: tinyllm.distributed imports backends

    launch = detect_launch()
    if launch.distributed:
        cupy.cuda.Device(launch.local_rank % cupy.cuda.runtime.getDeviceCount()).use()


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self, seed: int | None = None) -> None:
        self.xp = _import_cupy()
        _use_this_ranks_gpu(self.xp)
        import cupyx

        self._cupyx = cupyx
        super().__init__(seed)

    def get_rng_state(self) -> dict:
        # CuPy's Generator keeps its state on the device; we record the seed-like
        # state by drawing it to the host through its bit generator when possible.
        state = getattr(self.rng.bit_generator, "state", None)
        if state is None:
            raise NotImplementedError("this CuPy version cannot export its generator state")
        return state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def to_host(self, array: Any) -> Any:
        return self.xp.asnumpy(array)

    def scatter_add(self, target: Any, indices: Any, values: Any) -> None:
        self._cupyx.scatter_add(target, indices, values)

    def erf(self, x: Any) -> Any:
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)

    def synchronize(self) -> None:
        self.xp.cuda.Stream.null.synchronize()

    def device_name(self) -> str:
        device = self.xp.cuda.Device()
        props = self.xp.cuda.runtime.getDeviceProperties(device.id)
        name = props["name"]
        return f"cuda:{device.id} ({name.decode() if isinstance(name, bytes) else name})"
