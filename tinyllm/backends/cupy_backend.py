"""The GPU backend: CuPy on an NVIDIA GPU.

Importing this module never fails; constructing :class:`CupyBackend` raises
:class:`BackendUnavailableError` when CuPy is missing or no GPU is visible,
with the command that fixes it. tinyllm never falls back to NumPy silently.
"""

from __future__ import annotations

import os
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
        super().__init__(seed)
        self.set_tf32(os.environ.get("TINYLLM_TF32", "1") != "0")  # on by default; TINYLLM_TF32=0 turns it off
        if os.environ.get("TINYLLM_KERNELS", "1") != "0":  # TINYLLM_KERNELS=0: the plain array code everywhere
            from . import cuda_kernels

            self.kernels = cuda_kernels
            # TINYLLM_FLASH_ATTENTION=1: attention without the (T, S) scores (cuda_kernels, "tiled attention");
            # off by default until a GPU has measured it against the matrix products it replaces
            self.flash_attention = os.environ.get("TINYLLM_FLASH_ATTENTION", "0") == "1"

    def make_rng(self, seed: int | None) -> Any:
        # Philox is counter-based: seeding it costs one tiny kernel, where the default XORWOW
        # initialises every thread's state with a slow skip-ahead. Training re-seeds every step.
        return self.xp.random.Generator(self.xp.random.Philox4x3210(seed))

    def get_rng_state(self) -> dict:
        raise NotImplementedError(
            "CuPy's random generators keep their state on the GPU and cannot export it; tinyllm's training "
            "saves the host generator of the batches instead and re-seeds the GPU's at every step"
        )

    def set_rng_state(self, state: dict) -> None:
        raise NotImplementedError("CuPy's random generators cannot import a state (see get_rng_state)")

    def to_host(self, array: Any) -> Any:
        return self.xp.asnumpy(array)

    def scatter_add(self, target: Any, indices: Any, values: Any) -> None:
        # cupy.add.at (cupyx.scatter_add is deprecated) takes no bfloat16: such a target adds in float32
        if target.dtype.kind != "V":  # ml_dtypes' bfloat16 is kind "V" to NumPy
            self.xp.add.at(target, indices, values)
            return
        total = target.astype(self.xp.float32)
        self.xp.add.at(total, indices, values.astype(self.xp.float32))
        target[...] = total.astype(target.dtype)

    def erf(self, x: Any) -> Any:
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)

    def set_tf32(self, enabled: bool) -> bool:
        # cuBLAS's compute type for float32 GEMMs, as CuPy exposes it (CuPy >= 11; the env var CUPY_TF32
        # sets the same at import). On GPUs without TF32 (before Ampere) cuBLAS computes in float32 anyway.
        try:
            from cupy._core import _routines_linalg as linalg

            compute_type = linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT
            linalg.set_compute_type(self.xp.float32, compute_type)
        except (ImportError, AttributeError):  # a CuPy without the switch: its default stays
            return False
        self.tf32 = enabled
        return True

    def synchronize(self) -> None:
        self.xp.cuda.Stream.null.synchronize()

    def device_name(self) -> str:
        device = self.xp.cuda.Device()
        props = self.xp.cuda.runtime.getDeviceProperties(device.id)
        name = props["name"]
        return f"cuda:{device.id} ({name.decode() if isinstance(name, bytes) else name})"
