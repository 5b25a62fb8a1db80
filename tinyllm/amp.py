"""Mixed precision: forward and backward in float16 or bfloat16, float32 master weights, dynamic loss scaling.

Half-precision numbers halve the memory traffic of every activation and run on a GPU's tensor
cores, but they are coarse: float16 has 11 bits of mantissa and nothing above 65504 or (in
normal numbers) below 6e-5; bfloat16 has float32's range but only 8 bits. Three rules (Micikevicius
et al. 2018, "Mixed Precision Training"; PyTorch's ``torch.amp``) make training in them work:

1. **Master weights in float32.** An update lr * g is often below half a float16 unit of the
   weight it changes (1 + 1e-4 rounds back to 1 in float16), so updates would vanish. The model
   the optimizer steps, AdamW's moments, checkpoints and evaluation stay float32 (the *masters*);
   a *shadow* copy in the low precision runs forward and backward, and is refreshed from the
   masters after every step::

       shadow = master.astype(float16)                    (a copy of every parameter)
       (cross_entropy(shadow(x), y) * S).backward()       activations and gradients in float16
       master.grad += float32(shadow.grad) / n_micro      per micro-batch, the mean taken in float32
       master.grad /= S; AdamW steps the masters; shadow = master.astype(float16)

2. **Losses and normalisation statistics in float32.** The cross-entropy, RMSNorm and LayerNorm
   compute in float32 and hand back the input's dtype (their Functions do it by themselves for
   half-precision inputs): float16's x^2 overflows once |x| > 256.

3. **Dynamic loss scaling (float16 only).** Small gradients flush to zero in float16. Multiplying
   the loss by S (2^16 to start) multiplies every gradient by S, lifting them into range; the
   masters get g / S. When some gradient overflowed to inf or NaN, the step is *skipped* and S
   halved; after ``growth_interval`` good steps in a row S doubles, to stay as high as the
   gradients allow. ``GradScaler`` is exactly torch.amp.GradScaler's rule. bfloat16 has
   float32's exponent range and needs no scaling (S = 1, a non-finite gradient is divergence).

Which dtype runs where (docs/gpu.md, "Precision"): float16 on NumPy and CuPy (NumPy has no
float16 matrix product in BLAS, so it is slow: for tests with tiny models); bfloat16 on CuPy only,
with the ``ml_dtypes`` package that gives NumPy and CuPy (14 and later, experimentally) a
bfloat16 dtype. On NumPy, bfloat16 is a clear error: NumPy's matrix product of two ml_dtypes
bfloat16 arrays returns float32, so the activations would silently run in float32.

    >>> scaler = GradScaler(init_scale=8.0, growth_interval=2)
    >>> scaler.update(found_inf=True); scaler.scale          # skip the step, halve
    4.0
    >>> scaler.update(False); scaler.update(False); scaler.scale   # two good steps in a row: double
    8.0
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .backends import get_backend
from .nn.module import Module

DTYPES = ("float32", "float16", "bfloat16")


def resolve_dtype(name: str) -> Any:
    """The array dtype of ``name`` (one of DTYPES): float32 and float16 from NumPy, bfloat16 from ml_dtypes.

    >>> resolve_dtype("float16")
    dtype('float16')
    """
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {list(DTYPES)}")
    if name != "bfloat16":
        return np.dtype(name)
    try:
        import ml_dtypes
    except ImportError:
        raise ValueError(
            "dtype bfloat16 needs the ml_dtypes package (NumPy has no bfloat16 of its own): "
            "pip install ml_dtypes, or train with dtype float16 (with loss scaling) or float32"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


def check_backend_runs(name: str) -> None:
    """Raise a clear ``ValueError`` when the backend in use cannot train in dtype ``name`` (bfloat16 on NumPy)."""
    if name == "bfloat16" and get_backend().name == "numpy":
        raise ValueError(
            "dtype bfloat16 runs on the cupy backend only: NumPy's matrix product of bfloat16 (ml_dtypes) "
            "arrays returns float32, so nothing would run in bfloat16. On NumPy use dtype float16 (with loss "
            "scaling) or float32"
        )


class GradScaler:
    """Dynamic loss scaling, with torch.amp.GradScaler's defaults and update rule.

    - ``scale``: the factor the loss is multiplied by before backward (``init_scale`` = 2^16);
    - ``update(found_inf)``, once per optimizer step: an inf/NaN gradient multiplies the scale by
      ``backoff_factor`` (0.5) and restarts the count; otherwise the count of good steps grows, and
      reaching ``growth_interval`` (2000) multiplies the scale by ``growth_factor`` (2) and restarts it.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000) -> None:
        if not (init_scale > 0 and growth_factor > 1 and 0 < backoff_factor < 1 and growth_interval >= 1):
            raise ValueError("GradScaler needs init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1 and "
                             f"growth_interval >= 1, got {init_scale}, {growth_factor}, {backoff_factor}, "
                             f"{growth_interval}")
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self.growth_tracker = 0  # good steps in a row since the last change of scale
        self.skipped_steps = 0  # in the whole run, for the log

    def update(self, found_inf: bool) -> None:
        """After a step: halve on overflow (the step was skipped), double after growth_interval good steps."""
        if found_inf:
            self.scale *= self.backoff_factor
            self.growth_tracker = 0
            self.skipped_steps += 1
            return
        self.growth_tracker += 1
        if self.growth_tracker == self.growth_interval:
            self.scale *= self.growth_factor
            self.growth_tracker = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers (a checkpoint's train_state keeps them), so a resumed run scales as the old one would."""
        return {"scale": self.scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "growth_tracker": self.growth_tracker,
                "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale, self.growth_tracker = float(state["scale"]), int(state["growth_tracker"])
        self.growth_factor, self.backoff_factor = state["growth_factor"], state["backoff_factor"]
        self.growth_interval, self.skipped_steps = state["growth_interval"], state.get("skipped_steps", 0)


class MixedPrecision:
    """A float32 master model and its low-precision shadow, with the loss scale of the step.

    ``train_step(..., amp=MixedPrecision(model, "float16"))`` runs each micro-batch through
    ``shadow``, calls ``accumulate_grads`` after its backward, ``unscale_grads`` before clipping
    (False: skip the step) and ``step_done`` after the optimizer step.
    """

    def __init__(self, master: Module, dtype: str, scaler: GradScaler | None = None) -> None:
        self.dtype_name, self.dtype = dtype, resolve_dtype(dtype)
        if self.dtype == np.float32:
            raise ValueError("MixedPrecision is for float16 and bfloat16; train float32 without it")
        check_backend_runs(dtype)
        self.master = master
        self.shadow = copy.deepcopy(master).to(self.dtype)  # the same modules, every parameter in the low dtype
        self.scaler = scaler if scaler is not None else GradScaler()
        self.scaling = self.dtype == np.float16  # bfloat16 has float32's range: no loss scaling
        self.pairs = [(m, s) for m, s in zip(master.parameters(), self.shadow.parameters()) if m.requires_grad]

    @property
    def loss_scale(self) -> float:
        return self.scaler.scale if self.scaling else 1.0

    def forward_model(self) -> Module:
        """The shadow, in the master's mode (training: dropout on)."""
        return self.shadow.train(self.master.training)

    def _fused_kernels(self) -> Any:
        """The backend's kernels when the bookkeeping below can use them (on CuPy, with a float16 or bfloat16
        shadow): each of the three methods then makes one multi-tensor launch instead of a few array operations
        per parameter (``cuda_kernels.accumulate_grads_many``, ``unscale_grads_many``, ``cast_many``: the same
        arithmetic, the same bits). None otherwise: the loops below, the readable reference."""
        kernels = get_backend().kernels
        if kernels is not None and self.pairs and kernels.is_16bit(*(s.data for _, s in self.pairs)):
            return kernels
        return None

    def accumulate_grads(self, weight: float = 1.0) -> None:
        """master.grad += weight * float32(shadow.grad), then clear the shadow's.

        The mean over micro-batches (``weight`` = 1 / grad_accum_steps) is taken here in float32,
        not in the 16-bit backward: so the shadow's gradients do not depend on how a batch is split
        into micro-batches, and N ranks give exactly what one process with N times the accumulation gives.
        """
        xp = get_backend().xp
        kernels = self._fused_kernels()  # on CuPy: the loop below for every parameter in one CUDA launch
        pairs = [(master, shadow) for master, shadow in self.pairs if shadow.grad is not None]
        if kernels is not None and pairs and kernels.is_16bit(*(s.grad for _, s in pairs)) and kernels.usable(
                pairs[0][0].data, *(m.grad for m, _ in pairs if m.grad is not None)):  # float32 masters
            grads = kernels.accumulate_grads_many([m.grad for m, _ in pairs], [s.grad for _, s in pairs], weight)
            for (master, shadow), grad in zip(pairs, grads):
                master.grad, shadow.grad = grad, None
            return
        for master, shadow in pairs:
            grad = shadow.grad.astype(xp.float32)
            if weight != 1.0:
                grad *= weight
            if master.grad is None:
                master.grad = grad
            else:
                master.grad += grad
            shadow.grad = None

    def unscale_grads(self) -> bool:
        """Divide the masters' gradients by the loss scale and update the scaler; False if a gradient was
        inf or NaN: the step must be skipped (the gradients are cleared, the scale halved).

        Call it after the gradients of the whole step are summed (after the all-reduce of a
        data-parallel run, so that every rank takes the same decision). The scale is a power of
        two, so dividing by it is exact. It reads one flag back from the device; ``train_step``
        uses its two halves instead, ``start_unscale`` and ``finish_unscale``, and reads the flag
        with the step's other values.
        """
        found_inf = self.start_unscale()
        return self.finish_unscale(found_inf is not None and bool(found_inf))  # one sync

    def start_unscale(self) -> Any:
        """Divide the masters' gradients by the loss scale, on the device; return a one-element device flag,
        nonzero if any of them is inf or NaN (None without loss scaling: bfloat16). Nothing is read back; pass
        the flag's value to ``finish_unscale``. (Dividing an inf or NaN gradient is harmless: it is dropped.)"""
        if not self.scaling:
            return None  # bfloat16: a non-finite gradient is divergence, which train_step reports
        xp = get_backend().xp
        grads = [m.grad for m, _ in self.pairs if m.grad is not None]
        if not grads:
            return xp.zeros((), dtype=bool)
        kernels = self._fused_kernels()  # on CuPy: the check and the division below in one CUDA launch
        if kernels is not None and kernels.usable(*grads):
            return kernels.unscale_grads_many(grads, 1.0 / self.scaler.scale)
        found_inf = ~xp.stack([xp.isfinite(g).all() for g in grads]).all()
        inverse = 1.0 / self.scaler.scale
        for grad in grads:
            grad *= inverse
        return found_inf

    def finish_unscale(self, found_inf: bool) -> bool:
        """Update the scaler with ``found_inf`` (read back from ``start_unscale``'s flag); on an overflow drop the
        masters' gradients (the step is skipped). Returns True when the step may go on."""
        if not self.scaling:
            return True
        if found_inf:
            for master, _ in self.pairs:
                master.grad = None
        self.scaler.update(found_inf=found_inf)
        return not found_inf

    def step_done(self) -> None:
        """Copy the updated masters into the shadow (cast to the low dtype)."""
        kernels = self._fused_kernels()  # on CuPy: every parameter's copy in one CUDA launch
        if kernels is not None and kernels.usable(*(m.data for m, _ in self.pairs)):
            kernels.cast_many([s.data for _, s in self.pairs], [m.data for m, _ in self.pairs])
            return
        for master, shadow in self.pairs:
            shadow.data[...] = master.data
