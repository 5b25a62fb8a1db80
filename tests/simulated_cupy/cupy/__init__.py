"""A simulated CuPy: NumPy underneath, CuPy's rules on top. For running the GPU code paths on a CPU.

tinyllm's CuPy backend is written on CPU-only machines and a GPU comes only now and then, so every
mistake that only a GPU would reveal costs scarce GPU minutes. Most such mistakes are not about CUDA
at all but about CuPy's *rules*, which this package enforces on ordinary NumPy arrays:

- a device array is not a NumPy array: ``np.asarray(x)`` raises, and mixing a device array with a
  host ``numpy.ndarray`` in an operation raises ``TypeError: Unsupported type`` (host copies go
  through ``x.get()`` / ``cupy.asnumpy``; host arrays come in through ``cupy.asarray``);
- reductions and integer indexing give 0-d *device* arrays, not Python numbers; reading one as a
  number (``float``, ``int``, ``bool``, ``.item()``, ``.tolist()``, printing) waits for the GPU.
  Every such read is counted in :data:`transfers` so a test can bound a training step's syncs;
- ``x[...] = host_array`` on a plain slice raises (CuPy tries ``fill`` with it);
- an out-of-range integer index wraps around silently on a GPU instead of raising IndexError: here
  it raises an error that says so, so code relying on NumPy's IndexError is caught; with
  ``cupy.out_of_range = "wrap"`` a gather wraps around as on a GPU (and counts it in :data:`wrapped`),
  for code that checks its indices after using them (``tinyllm.backends.deferred``);
- only the names CuPy 14 has exist (``names.json``, dumped from a real install): a NumPy function
  CuPy lacks is an AttributeError here as it would be there;
- every operation that would launch a GPU kernel (it computes into a new buffer, or writes one in place;
  not a view, not ``empty``) is counted in :data:`launches` by name, so a test can bound a step's launches
  (on a GPU each costs some microseconds of Python and driver time, whatever its size);
- random generators (``Philox4x3210``, ``XORWOW``) take a seed but have no state to save or load;
- CUDA kernels (``ElementwiseKernel``, ``ReductionKernel``, ``RawKernel``) run on the CPU: their C is
  compiled by g++ with a header that plays the GPU's part (``_cuda_on_cpu.py``), so the fused kernels'
  code and the Python that launches them are checked against NumPy without a GPU (slowly: blocks run
  one after another). ``TINYLLM_KERNELS=0`` leaves them out, as on a GPU.

Use it by putting this folder first on the path and asking for the CuPy backend::

    PYTHONPATH=tests/simulated_cupy TINYLLM_BACKEND=cupy TINYLLM_KERNELS=0 python -m pytest tests/test_train.py

Values match a NumPy run bit for bit except the device random streams (which differ on a real GPU
too). Never installed, never imported by tinyllm itself: only tests put it on the path.
"""

from __future__ import annotations

import json
import operator
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as _np

__version__ = "14.2.0+simulated"
SIMULATED = True  # not in real CuPy: lets a test check which one it got

_NAMES = json.loads((Path(__file__).with_name("names.json")).read_text())
_CUPY_NAMES = set(_NAMES["cupy"])
_NDARRAY_NAMES = set(_NAMES["ndarray"])

_by_storage: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
transfers: Counter = Counter()  # "to_host" (array copies to the host), "sync" (scalar reads), "to_device"
launches: Counter = Counter()  # operations that would launch a kernel on a GPU, by name
out_of_range = "raise"  # or "wrap": a gather with an out-of-range index wraps around, as CuPy's does on a GPU
wrapped: Counter = Counter()  # gathers that wrapped an out-of-range index around ("wrap" only)
_ALLOCATE_ONLY = {"empty", "empty_like"}  # these only take memory from the pool: no kernel


def reset_counts() -> None:
    transfers.clear()
    launches.clear()
    wrapped.clear()


def _wrap_around(index: Any, shape: tuple) -> Any:
    """The index with every integer array taken modulo its axis's length, as CuPy's gathers do on a GPU
    (plain integers, slices and ``None`` / ``...`` are not handled: those raise as before)."""
    parts = index if isinstance(index, tuple) else (index,)
    if any(p is None or p is Ellipsis for p in parts):
        return None
    wrapped_parts = tuple(_np.mod(p, shape[axis]) if isinstance(p, _np.ndarray) and p.dtype.kind in "iu" else p
                          for axis, p in enumerate(parts))
    return wrapped_parts if isinstance(index, tuple) else wrapped_parts[0]


def _fresh(obj: Any) -> bool:
    """True when ``obj`` is a buffer an operation just computed: not a view of an array, not an input returned."""
    if isinstance(obj, _np.generic):
        return True  # a reduction's 0-d result
    return isinstance(obj, _np.ndarray) and obj.base is None and id(obj) not in _by_storage


def _count(name: str, result: Any) -> Any:
    """Count a launch named ``name`` when the operation made a new buffer; returns ``result``."""
    parts = result if isinstance(result, tuple) else (result,)
    if name not in _ALLOCATE_ONLY and any(_fresh(part) for part in parts):
        launches[name] += 1
    return result


_IMPLICIT = "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."


# ------------------------------------------------------------------------ moving between the two sides
def _unwrap(obj: Any) -> Any:
    """Device arrays to their NumPy storage; a host ndarray where a device one belongs is CuPy's TypeError."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, _np.ndarray):
        raise TypeError(f"Unsupported type {type(obj)} (simulated CuPy: a host array where a device array belongs)")
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    return obj


def _wrap(obj: Any) -> Any:
    """NumPy results back to device arrays; NumPy scalars become 0-d device arrays, as CuPy returns."""
    if isinstance(obj, _np.ndarray):
        return ndarray(obj)
    if isinstance(obj, _np.generic):
        return ndarray(_np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _unwrap_index(index: Any) -> Any:
    """Indices may be device arrays, host arrays or lists (CuPy copies those to the device)."""
    if isinstance(index, tuple):
        return tuple(_unwrap_index(i) for i in index)
    if isinstance(index, ndarray):
        return index._a
    if isinstance(index, (_np.ndarray, list)):
        transfers["to_device"] += 1
        return _np.asarray(index)
    return index


def _is_advanced(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (_np.ndarray, list, ndarray)) for p in parts)


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    result = function(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
    return _wrap(_count(getattr(function, "__name__", "call"), result))


# ----------------------------------------------------------------------------------- the device array
class _Pointer:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


class ndarray:  # noqa: N801 - CuPy's name
    """An array "on the device": a NumPy array that follows CuPy's rules (see the module docstring)."""

    __slots__ = ("_a", "_base", "__weakref__")
    __array_priority__ = 100

    def __init__(self, array: Any, dtype: Any = None) -> None:
        if isinstance(array, tuple) or isinstance(array, int):  # cupy.ndarray(shape, dtype)
            array = _np.empty(array, dtype=dtype or _np.float64)
        self._a = array
        _by_storage[id(array)] = self  # so that .base is the same object each time, as on CuPy

    @property
    def base(self) -> ndarray | None:
        owner = self._a.base
        if not isinstance(owner, _np.ndarray):
            return None
        known = _by_storage.get(id(owner))
        if known is None or known._a is not owner:
            known = ndarray(owner)
        self._base = known  # alive while this view is
        return known

    # -- reading values back: every one of these waits for the GPU
    def get(self, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> _np.ndarray:
        transfers["to_host"] += 1
        return _np.array(self._a, order=order)

    def set(self, arr: _np.ndarray, stream: Any = None) -> None:
        transfers["to_device"] += 1
        self._a[...] = arr

    def _sync_read(self) -> _np.ndarray:
        transfers["sync"] += 1
        return self._a

    def item(self) -> Any:
        return self._sync_read().item()

    def tolist(self) -> Any:
        return self._sync_read().tolist()

    def tobytes(self, order: str = "C") -> bytes:
        return self._sync_read().tobytes(order)

    def __float__(self) -> float:
        return float(self._sync_read())

    def __int__(self) -> int:
        return int(self._sync_read())

    def __bool__(self) -> bool:
        return bool(self._sync_read())

    def __complex__(self) -> complex:
        return complex(self._sync_read())

    def __repr__(self) -> str:
        return repr(self._sync_read())

    def __str__(self) -> str:
        return str(self._sync_read())

    def __format__(self, spec: str) -> str:
        return format(self._sync_read(), spec) if self._a.ndim == 0 else str(self)

    # -- what NumPy sees
    def __array__(self, dtype: Any = None, copy: Any = None) -> _np.ndarray:
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        # np.exp(device_array) runs CuPy's exp (CuPy does the same); a host array among the inputs is an error
        if "out" in kwargs:
            outs = kwargs["out"]
            kwargs["out"] = tuple(_unwrap(o) for o in outs)
            getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
            launches[ufunc.__name__] += 1
            return outs[0] if len(outs) == 1 else outs
        return _call(getattr(ufunc, method), *inputs, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        if func.__name__ not in _CUPY_NAMES:
            raise TypeError(f"simulated CuPy: numpy.{func.__name__} has no CuPy version")
        return _call(func, *args, **kwargs)

    # -- attributes and methods: only those cupy.ndarray has
    def __getattr__(self, name: str) -> Any:
        if name not in _NDARRAY_NAMES:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        value = getattr(self._a, name)
        if callable(value):
            return lambda *args, **kwargs: _call(value, *args, **kwargs)
        return _wrap(value)

    @property
    def shape(self) -> tuple:
        return self._a.shape

    @shape.setter
    def shape(self, value: tuple) -> None:
        self._a.shape = value

    @property
    def dtype(self) -> _np.dtype:
        return self._a.dtype

    @property
    def data(self) -> _Pointer:
        """CuPy's MemoryPointer, as far as kernels' tables use it: ``.ptr``, the address of the first element."""
        return _Pointer(self._a.ctypes.data)

    @property
    def ndim(self) -> int:
        return self._a.ndim

    @property
    def size(self) -> int:
        return self._a.size

    @property
    def nbytes(self) -> int:
        return self._a.nbytes

    @property
    def T(self) -> ndarray:  # noqa: N802
        return ndarray(self._a.T)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):  # noqa: ANN204
        return (ndarray(row) if isinstance(row, _np.ndarray) else _wrap(row) for row in self._a)

    def __copy__(self) -> ndarray:
        return ndarray(self._a.copy())

    def __deepcopy__(self, memo: dict) -> ndarray:
        return ndarray(self._a.copy())

    # -- indexing
    def __getitem__(self, index: Any) -> Any:
        try:
            return _wrap(_count("take", self._a[_unwrap_index(index)]))  # a gather: a launch; a slice: a view
        except IndexError as error:
            around = _wrap_around(_unwrap_index(index), self._a.shape) if out_of_range == "wrap" else None
            if "out of bounds" in str(error) and around is not None:
                wrapped["take"] += 1
                return _wrap(_count("take", self._a[around]))
            if "out of bounds" in str(error):
                raise IndexError(
                    f"{error} (simulated CuPy: on a GPU CuPy wraps an out-of-range index around silently, "
                    "it raises nothing; check indices before indexing)"
                ) from None
            raise

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(value, ndarray):
            value = value._a
        elif isinstance(value, (_np.ndarray, list)) and _np.ndim(value) > 0:
            if not _is_advanced(index):
                raise ValueError(
                    "non-scalar numpy.ndarray cannot be used for fill (simulated CuPy: assigning a host array "
                    "to a slice of a device array; copy it to the device first)"
                )
            transfers["to_device"] += 1
        try:
            self._a[_unwrap_index(index)] = value
        except IndexError as error:  # "wrap": a scatter wraps around too, as CuPy's does on a GPU
            around = _wrap_around(_unwrap_index(index), self._a.shape) if out_of_range == "wrap" else None
            if "out of bounds" not in str(error) or around is None:
                raise
            wrapped["setitem"] += 1
            self._a[around] = value
        launches["setitem"] += 1


def _keep_bfloat16(result: Any, *operands: Any) -> Any:
    """NumPy's matmul of two ml_dtypes bfloat16 arrays returns float32; CuPy's returns bfloat16: so here."""
    if (isinstance(result, _np.ndarray) and result.dtype == _np.float32 and operands
            and all(getattr(o, "dtype", None) is not None and o.dtype.name == "bfloat16" for o in operands)):
        return result.astype(operands[0].dtype)
    return result


def _binary(op: Any) -> Any:
    def method(self: ndarray, other: Any) -> Any:
        other = _unwrap(other)  # refuses a host array, as CuPy does
        result = op(self._a, other)
        if op is operator.matmul:
            result = _keep_bfloat16(result, self._a, other)
        return _wrap(_count(op.__name__, result))

    return method


def _reflected(op: Any) -> Any:
    def method(self: ndarray, other: Any) -> Any:
        other = _unwrap(other)
        result = op(other, self._a)
        if op is operator.matmul:
            result = _keep_bfloat16(result, other, self._a)
        return _wrap(_count(op.__name__, result))

    return method


def _inplace(op: Any) -> Any:
    def method(self: ndarray, other: Any) -> ndarray:
        op(self._a, _unwrap(other))
        launches[op.__name__] += 1
        return self

    return method


for _name, _op in {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow, "matmul": operator.matmul,
    "and": operator.and_, "or": operator.or_, "xor": operator.xor, "lshift": operator.lshift,
    "rshift": operator.rshift,
}.items():
    setattr(ndarray, f"__{_name}__", _binary(_op))
    setattr(ndarray, f"__r{_name}__", _reflected(_op))
    setattr(ndarray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name, _op in {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
                   "gt": operator.gt, "ge": operator.ge}.items():
    setattr(ndarray, f"__{_name}__", _binary(_op))
for _name, _op in {"neg": operator.neg, "pos": operator.pos, "abs": operator.abs, "invert": operator.invert}.items():
    setattr(ndarray, f"__{_name}__", (lambda op: lambda self: _wrap(_count(op.__name__, op(self._a))))(_op))
ndarray.__hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- the module's functions
def asarray(a: Any, dtype: Any = None, order: Any = None, *, blocking: bool = False) -> ndarray:
    """Host data to the device (or a device array as it is, cast if asked)."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else ndarray(a._a.astype(dtype))
    transfers["to_device"] += 1
    return ndarray(_np.array(_unwrap(a) if isinstance(a, (list, tuple)) else a, dtype=dtype, order=order or "K"))


def array(obj: Any, dtype: Any = None, copy: bool = True, order: str = "K", subok: bool = False, ndmin: int = 0) -> ndarray:
    if isinstance(obj, ndarray):
        return ndarray(_np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    transfers["to_device"] += 1
    return ndarray(_np.array(obj, dtype=dtype, order=order, ndmin=ndmin))


asanyarray = asarray


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> _np.ndarray:
    if isinstance(a, ndarray):
        return a.get(order=order)
    return _np.asarray(a, order=order)


def get_array_module(*args: Any) -> Any:
    import sys

    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


_AT_DTYPES = (_np.int32, _np.int64, _np.float16, _np.float32, _np.float64, _np.uint32, _np.uint64)


class _Ufunc:
    """A NumPy ufunc with device arrays in and out (``cupy.add``, ``cupy.maximum``...)."""

    def __init__(self, ufunc: Any) -> None:
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        if out is not None:
            outs = out if isinstance(out, tuple) else (out,)
            kwargs["out"] = tuple(_unwrap(o) for o in outs)
            self._ufunc(*_unwrap(args), **kwargs)
            launches[self.__name__] += 1
            return outs[0] if len(outs) == 1 else outs
        result = _call(self._ufunc, *args, **kwargs)
        if self.__name__ == "matmul" and isinstance(result, ndarray):
            kept = _keep_bfloat16(result._a, *(_unwrap(a) for a in args[:2]))
            result = result if kept is result._a else ndarray(kept)
        return result

    def reduce(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self._ufunc.reduce, *args, **kwargs)

    def accumulate(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self._ufunc.accumulate, *args, **kwargs)

    def outer(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self._ufunc.outer, *args, **kwargs)

    def at(self, a: ndarray, indices: Any, b: Any = None) -> None:
        if self.__name__ == "add" and a.dtype.type not in _AT_DTYPES:
            raise TypeError("cupy.add.at only supports int32, int64, float16, float32, float64, uint32, uint64 as data type")
        index = _unwrap_index(indices)
        if out_of_range == "wrap":  # CuPy's scatter kernels take each index modulo the axis's length
            around = _wrap_around(index, a._a.shape)
            if around is not None and not all(_np.array_equal(p, q) for p, q in zip(
                    around if isinstance(around, tuple) else (around,), index if isinstance(index, tuple) else (index,))):
                wrapped[f"{self.__name__}.at"] += 1
                index = around
        self._ufunc.at(a._a, index, b._a if isinstance(b, ndarray) else b)
        launches[f"{self.__name__}.at"] += 1


from ._cuda_on_cpu import parse, run_elementwise, run_reduction  # noqa: E402


class ElementwiseKernel:
    """CuPy's ElementwiseKernel, run on the CPU (``_cuda_on_cpu.run_elementwise``)."""

    def __init__(self, in_params: str, out_params: str, operation: str, name: str = "kernel",
                 preamble: str = "", **kwargs: Any) -> None:
        self.in_params, self.out_params = parse(in_params), parse(out_params)
        self.operation, self.name, self.preamble = operation, name, preamble

    def __call__(self, *args: Any, size: Any = None, **kwargs: Any) -> Any:
        launches[f"kernel {self.name}"] += 1
        outs = [ndarray(r) for r in run_elementwise(self, args)]
        given = args[len(self.in_params):]
        outs = list(given) if given else outs  # CuPy returns the arrays it wrote: the ones given, if any
        return outs[0] if len(outs) == 1 else tuple(outs)


class ReductionKernel:
    """CuPy's ReductionKernel, run on the CPU (``_cuda_on_cpu.run_reduction``)."""

    def __init__(self, in_params: str, out_params: str, map_expr: str, reduce_expr: str, post_map_expr: str,
                 identity: str, name: str = "reduce_kernel", reduce_type: Any = None, preamble: str = "",
                 **kwargs: Any) -> None:
        self.in_params, self.out_params = parse(in_params), parse(out_params)
        self.map_expr, self.reduce_expr, self.post_map_expr = map_expr, reduce_expr, post_map_expr
        self.identity, self.name, self.preamble = identity, name, preamble
        self.reduce_type = reduce_type  # the C type of the partial results a and b (default: the output's)

    def __call__(self, *args: Any, axis: Any = None, keepdims: bool = False, **kwargs: Any) -> Any:
        launches[f"kernel {self.name}"] += 1
        return ndarray(run_reduction(self, args, axis, keepdims))


class RawKernel:
    """CuPy's RawKernel, run on the CPU (``_cuda_on_cpu.launch_raw``): called as ``kernel(grid, block, args)``."""

    def __init__(self, code: str, name: str, options: tuple = (), backend: str = "nvrtc", **kwargs: Any) -> None:
        self.code, self.name = code, name

    def __call__(self, grid: Any, block: Any, args: tuple, shared_mem: int = 0, **kwargs: Any) -> None:
        from ._cuda_on_cpu import launch_raw

        launches[f"kernel {self.name}"] += 1
        launch_raw(self.code, self.name, grid, block, tuple(args))


class RawModule:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("simulated CuPy: RawModule is not simulated (tinyllm uses RawKernel)")


class _MemoryPool:
    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        pass

    def set_limit(self, size: int = 0, fraction: float = 0.0) -> None:
        pass

    def get_limit(self) -> int:
        return 0


_memory_pool = _MemoryPool()


def get_default_memory_pool() -> _MemoryPool:
    return _memory_pool


def get_default_pinned_memory_pool() -> _MemoryPool:
    return _memory_pool


def _wrap_numpy_name(name: str) -> Any:
    value = getattr(_np, name)
    if isinstance(value, _np.ufunc):
        return _Ufunc(value)
    if isinstance(value, type) or not callable(value):  # dtypes (float32...), finfo, constants (inf, pi)
        return value
    if name in ("finfo", "iinfo", "dtype", "result_type", "promote_types", "can_cast", "isscalar", "ndim", "shape",
                "broadcast_shapes"):
        return value  # these take shapes or dtypes, not arrays (ndim/shape read only the shape)

    def function(*args: Any, **kwargs: Any) -> Any:
        return _call(value, *args, **kwargs)

    function.__name__ = name
    return function


def __getattr__(name: str) -> Any:
    """``cupy.<name>``: NumPy's function with device arrays in and out, if CuPy 14 has that name."""
    if name.startswith("__") or name not in _CUPY_NAMES or not hasattr(_np, name) or name in ("random", "linalg", "fft"):
        raise AttributeError(f"module 'cupy' has no attribute {name!r}")
    value = _wrap_numpy_name(name)
    globals()[name] = value
    return value


def _shape_only(function: Any) -> Any:
    def shape_function(a: Any, *args: Any, **kwargs: Any) -> Any:
        return function(a._a if isinstance(a, ndarray) else a, *args, **kwargs)

    return shape_function


ndim = _shape_only(_np.ndim)
shape = _shape_only(_np.shape)


from . import cuda, linalg, random  # noqa: E402,F401 - submodules, as on CuPy (they use ndarray above)
