"""CUDA kernels run on the CPU: the simulated CuPy's ElementwiseKernel, ReductionKernel and RawKernel.

A kernel's C is compiled by the machine's g++ as C++20, with a small header that gives it what a GPU
would: ``threadIdx``/``blockIdx``/``blockDim``/``gridDim``, ``__syncthreads`` (a barrier of the
block's threads), ``__shfl_xor_sync`` (lanes of a warp exchanging values through memory between two
barriers of the warp), ``__shared__`` (one array per block: blocks run one after another), the bit casts and
rounded operations (``__float_as_uint``, ``__fmul_rn``...) and CuPy's ``float16`` class (on
``_Float16``). A RawKernel's block runs its ``blockDim.x`` threads, when its source synchronises
(``__syncthreads``, shuffles) as fibers on one OS thread (each runs to its next barrier, then the next
one), else its threads run one after another; blocks run in order. Deterministic, single-threaded.

What this checks: the kernels' C, their indexing and the Python that launches them, against NumPy,
on any CPU. What it cannot: speed, races between blocks (there are none here, but a GPU would show
them), and the GPU's own instructions: the two PTX ``cvt`` conversions of float16 are swapped for
``_Float16`` casts (the same rounding, to nearest even), see ``CPU_HALF_CVT``.

The compiled libraries are cached by source in ``$TMPDIR/tinyllm_cuda_on_cpu`` (a second of g++ each).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

HEADER = r"""
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <ucontext.h>
#include <vector>
struct tinyllm_dim3 { unsigned int x = 0, y = 1, z = 1; };
static tinyllm_dim3 threadIdx, blockIdx, blockDim, gridDim;  // one thread runs at a time: globals serve
// A block's threads are fibers (ucontext) on one OS thread: each runs until it waits at a barrier, then the
// next; the last to arrive frees the others. Deterministic, and cheap next to OS threads and futexes.
struct tinyllm_fiber { ucontext_t context; bool done = false, waiting = false; };
struct tinyllm_barrier { unsigned int needed = 0, arrived = 0; std::vector<unsigned int> waiters; };
static std::vector<tinyllm_fiber> tinyllm_fibers;
static ucontext_t tinyllm_scheduler;
static unsigned int tinyllm_current = 0;
static tinyllm_barrier tinyllm_block_barrier, tinyllm_warp_barrier[32];
static float tinyllm_lanes[32][32];
static std::function<void()> tinyllm_body;
inline void tinyllm_wait(tinyllm_barrier& b) {
    if (++b.arrived == b.needed) {
        b.arrived = 0;
        for (unsigned int w : b.waiters) tinyllm_fibers[w].waiting = false;
        b.waiters.clear();
        return;
    }
    unsigned int me = tinyllm_current;
    tinyllm_fibers[me].waiting = true;
    b.waiters.push_back(me);
    swapcontext(&tinyllm_fibers[me].context, &tinyllm_scheduler);
}
static void tinyllm_fiber_main() { tinyllm_body(); tinyllm_fibers[tinyllm_current].done = true; }
// Run every thread of every block: fibers when the kernel synchronises, else one thread after another.
static void tinyllm_run(unsigned int grid_x, unsigned int grid_y, unsigned int block, bool fibers) {
    gridDim.x = grid_x; gridDim.y = grid_y; blockDim.x = block;
    const unsigned int grid = grid_x * grid_y;
    if (!fibers) {
        for (unsigned int b = 0; b < grid; ++b) {
            blockIdx.x = b % grid_x; blockIdx.y = b / grid_x;
            for (unsigned int t = 0; t < block; ++t) { threadIdx.x = t; tinyllm_body(); }
        }
        return;
    }
    const size_t stack = 256 * 1024;
    std::vector<char> stacks(stack * block);
    tinyllm_fibers.assign(block, tinyllm_fiber());
    tinyllm_block_barrier = tinyllm_barrier(); tinyllm_block_barrier.needed = block;
    for (unsigned int w = 0; w < 32; ++w) {
        tinyllm_warp_barrier[w] = tinyllm_barrier();
        tinyllm_warp_barrier[w].needed = block > 32 * w ? (block - 32 * w < 32 ? block - 32 * w : 32) : 0;
    }
    for (unsigned int b = 0; b < grid; ++b) {
        blockIdx.x = b % grid_x; blockIdx.y = b / grid_x;
        for (unsigned int t = 0; t < block; ++t) {
            tinyllm_fiber& f = tinyllm_fibers[t];
            f.done = f.waiting = false;
            getcontext(&f.context);
            f.context.uc_stack.ss_sp = stacks.data() + stack * t;
            f.context.uc_stack.ss_size = stack;
            f.context.uc_link = &tinyllm_scheduler;
            makecontext(&f.context, tinyllm_fiber_main, 0);
        }
        for (unsigned int finished = 0; finished < block;) {
            bool moved = false;
            finished = 0;
            for (unsigned int t = 0; t < block; ++t) {
                tinyllm_fiber& f = tinyllm_fibers[t];
                if (f.done) { ++finished; continue; }
                if (f.waiting) continue;
                tinyllm_current = t; threadIdx.x = t; moved = true;
                swapcontext(&tinyllm_scheduler, &f.context);
            }
            if (!moved && finished < block) {
                std::fprintf(stderr, "simulated CuPy: block %u deadlocked: some threads wait at a barrier that "
                             "others never reach (undefined behaviour on a GPU too)\n", b);
                std::abort();
            }
        }
    }
}
inline void __syncthreads() { tinyllm_wait(tinyllm_block_barrier); }
inline float __shfl_xor_sync(unsigned int, float v, int offset) {
    unsigned int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    tinyllm_lanes[warp][lane] = v;
    tinyllm_wait(tinyllm_warp_barrier[warp]);
    float other = tinyllm_lanes[warp][lane ^ offset];
    tinyllm_wait(tinyllm_warp_barrier[warp]);
    return other;
}
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
struct float16 {  // CuPy's float16 class, as its kernels use it: converts to and from float
    _Float16 v;
    float16() = default;
    float16(float f) : v((_Float16)f) {}
    operator float() const { return (float)v; }
};
"""

# The PTX conversions of cuda_kernels._HALF_CVT_SOURCE, on a CPU: _Float16 rounds to nearest even, as cvt.rn.
CPU_HALF_CVT = r"""
inline float half_to_float(unsigned short h) { _Float16 x; std::memcpy(&x, &h, 2); return (float)x; }
inline unsigned short float_to_half(float f) {
    _Float16 x = (_Float16)f; unsigned short h; std::memcpy(&h, &x, 2); return h;
}
"""

C_TYPES = {"float32": "float", "float64": "double", "float16": "float16", "int64": "long long", "int32": "int",
           "uint64": "unsigned long long", "uint32": "unsigned int", "int8": "signed char", "uint8": "unsigned char",
           "bool": "bool", "int16": "short", "uint16": "unsigned short"}
CTYPES = {"float": ctypes.c_float, "double": ctypes.c_double, "long long": ctypes.c_longlong, "int": ctypes.c_int,
          "unsigned long long": ctypes.c_ulonglong, "unsigned int": ctypes.c_uint, "bool": ctypes.c_bool,
          "signed char": ctypes.c_byte, "unsigned char": ctypes.c_ubyte, "short": ctypes.c_short,
          "unsigned short": ctypes.c_ushort}
_lock = threading.Lock()
_libraries: dict[str, Any] = {}


def cpu_source(source: str) -> str:
    """A CUDA source as the CPU compiles it: the two PTX float16 conversions swapped for C++ ones."""
    import sys

    kernels = sys.modules.get("tinyllm.backends.cuda_kernels")
    if getattr(kernels, "_HALF_CVT_SOURCE", None):
        source = source.replace(kernels._HALF_CVT_SOURCE, CPU_HALF_CVT)
    if "asm(" in source:
        raise NotImplementedError("simulated CuPy: inline PTX (asm) cannot run on a CPU")
    return source


def compile_library(source: str) -> Any:
    """g++ the source (with HEADER) into a shared library, cached by its text; a ctypes CDLL."""
    code = HEADER + source
    key = hashlib.sha256(code.encode()).hexdigest()[:20]
    with _lock:
        if key in _libraries:
            return _libraries[key]
        folder = Path(tempfile.gettempdir()) / "tinyllm_cuda_on_cpu"
        folder.mkdir(exist_ok=True)
        library = folder / f"{key}.so"
        if not library.exists():
            src = folder / f"{key}.{os.getpid()}.cpp"
            src.write_text(code)
            partial = folder / f"{key}.{os.getpid()}.so"
            result = subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-ffp-contract=off",
                                     "-w", "-o", str(partial), str(src)], capture_output=True, text=True)
            src.unlink()
            if result.returncode != 0:
                raise RuntimeError(f"g++ could not compile the kernel (simulated CuPy):\n{result.stderr[-3000:]}")
            partial.replace(library)  # atomic: a parallel process never loads half a library
        _libraries[key] = ctypes.CDLL(str(library))
        return _libraries[key]


# ------------------------------------------------------------------------------------------ RawKernel
def launch_raw(source: str, name: str, grid: tuple, block: tuple, args: tuple) -> None:
    """Run ``name`` from ``source`` over ``grid`` x ``block`` (1-D) with ``args``: device arrays (their data
    pointers) or NumPy scalars (their C types)."""
    (grid_x, grid_y), (block_x, _) = _dimensions(grid, "grid", 2), _dimensions(block, "block", 1)
    types, values = [], []
    for arg in args:
        storage = getattr(arg, "_a", None)
        if storage is not None:  # a device array: the kernel gets its data pointer, as on a GPU
            types.append("void*")
            values.append(ctypes.c_void_p(storage.ctypes.data))
        elif isinstance(arg, np.generic):
            c_type = C_TYPES[arg.dtype.name]
            types.append(c_type)
            values.append(CTYPES[c_type](arg.item()))
        else:
            raise TypeError(f"simulated CuPy: a RawKernel argument must be a device array or a NumPy scalar, "
                            f"not {type(arg).__name__} (CuPy would not know its C type either)")
    threaded = "__syncthreads" in source or "__shfl" in source
    call = ", ".join(f"*({t}*)args[{i}]" if t != "void*" else f"args[{i}]" for i, t in enumerate(types))
    signature = ", ".join(types)
    launcher = f"""
extern "C" void tinyllm_launch_{name}(unsigned int grid_x, unsigned int grid_y, unsigned int block, void** args) {{
    using Kernel = void (*)({signature});
    Kernel kernel = reinterpret_cast<Kernel>(&{name});
    tinyllm_body = [=]() {{ kernel({call}); }};
    tinyllm_run(grid_x, grid_y, block, {"true" if threaded else "false"});
}}
"""
    library = compile_library(cpu_source(source) + launcher)
    array = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) if t != "void*"
                                              else v for t, v in zip(types, values)])
    getattr(library, f"tinyllm_launch_{name}")(ctypes.c_uint(grid_x), ctypes.c_uint(grid_y), ctypes.c_uint(block_x),
                                               array)


def _dimensions(shape: Any, what: str, most: int) -> tuple[int, int]:
    """(x, y) of a grid or block given as CuPy takes it (an int, or a tuple of up to 3); at most ``most`` used."""
    shape = tuple(int(s) for s in shape) if isinstance(shape, (tuple, list)) else (int(shape),)
    if any(s != 1 for s in shape[most:]):
        raise NotImplementedError(f"simulated CuPy: {what}s of more than {most} dimensions do not run on the CPU, "
                                  f"got {shape}")
    return shape[0], shape[1] if len(shape) > 1 else 1


# ------------------------------------------------------------------------------ Elementwise, Reduction
class Param:
    """One parameter of an ElementwiseKernel / ReductionKernel, as CuPy lists them in ``in_params`` /
    ``out_params``: "float32 x", "T x" (a placeholder type, resolved from the arguments), "raw float32 lse"."""

    def __init__(self, text: str) -> None:
        words = text.split()
        self.raw = words[0] == "raw"
        self.ctype, self.name = words[1:] if self.raw else words
        self.placeholder = self.ctype not in C_TYPES

    def c_type(self, resolved: dict[str, np.dtype]) -> str:
        return C_TYPES[resolved[self.ctype].name] if self.placeholder else C_TYPES[self.ctype]

    def dtype(self, resolved: dict[str, np.dtype]) -> np.dtype:
        return resolved[self.ctype] if self.placeholder else np.dtype(self.ctype)


def parse(params: str) -> tuple[Param, ...]:
    return tuple(Param(p) for p in params.split(",") if p.strip())


def _storage(a: Any) -> Any:
    return getattr(a, "_a", a)


def _resolve(params: tuple[Param, ...], values: list[Any]) -> dict[str, np.dtype]:
    resolved: dict[str, np.dtype] = {}
    for p, v in zip(params, values):
        if p.placeholder and v is not None:
            dtype = np.asarray(_storage(v)).dtype
            if resolved.setdefault(p.ctype, dtype) != dtype:
                raise TypeError(f"Type is mismatched. {p.name} {dtype} {p.ctype} {resolved[p.ctype]} (simulated CuPy)")
    return resolved


def run_elementwise(kernel: Any, args: tuple) -> list[np.ndarray]:
    """Run an ElementwiseKernel (its parsed ``in_params``/``out_params``, ``operation``, ``name``, ``preamble``) over
    ``args``, broadcast as CuPy does; returns the outputs, also written into the output arguments given."""
    ins, outs, name = kernel.in_params, kernel.out_params, kernel.name
    if len(args) not in (len(ins), len(ins) + len(outs)):
        raise TypeError(f"{name}: wrong number of arguments: {len(args)} for {len(ins)} inputs, {len(outs)} outputs")
    given_outs = list(args[len(ins):]) or [None] * len(outs)
    resolved = _resolve(ins + outs, list(args[: len(ins)]) + given_outs)
    arrays = [_storage(v) for v in args[: len(ins)]]  # device arrays as their NumPy storage; scalars as they are
    broadcast = [a for p, a in zip(ins, arrays) if not p.raw and isinstance(a, np.ndarray)]
    broadcast += [_storage(o) for o in given_outs if o is not None]
    shape = np.broadcast_shapes(*(b.shape for b in broadcast)) if broadcast else ()
    c_args, c_types, decls = [], [], []
    for p, a in zip(ins, arrays):
        ct = p.c_type(resolved)
        if p.raw:
            c_args.append(np.ascontiguousarray(a, dtype=p.dtype(resolved)))
            decls.append(f"const {ct}* {p.name} = {p.name}_p;")
            c_types.append(f"const {ct}* {p.name}_p")
        elif not isinstance(a, np.ndarray):  # a scalar (NumPy's or Python's): passed by value
            c_args.append(CTYPES[_scalar_type(ct)](np.asarray(a).item()))
            decls.append(f"const {ct} {p.name} = ({ct}){p.name}_v;")
            c_types.append(f"{_scalar_type(ct)} {p.name}_v")
        else:
            c_args.append(np.ascontiguousarray(np.broadcast_to(a, shape), dtype=p.dtype(resolved)))
            decls.append(f"const {ct} {p.name} = {p.name}_p[i];")
            c_types.append(f"const {ct}* {p.name}_p")
    results = []
    for p, o in zip(outs, given_outs):
        ct = p.c_type(resolved)
        buffer = np.empty(shape, dtype=p.dtype(resolved))
        if o is not None:
            buffer[...] = _storage(o)  # an output may also be read (CuPy passes it by reference)
        results.append(buffer)
        c_args.append(buffer)
        decls.append(f"{ct}& {p.name} = {p.name}_p[i];")
        c_types.append(f"{ct}* {p.name}_p")
    code = f"""{cpu_source(kernel.preamble)}
extern "C" void tinyllm_elementwise({", ".join(["long long n"] + c_types)}) {{
    for (long long i = 0; i < n; ++i) {{
        {" ".join(decls)}
        {kernel.operation};
    }}
}}
"""
    library = compile_library(code)
    library.tinyllm_elementwise(ctypes.c_longlong(int(np.prod(shape))), *[_c_value(a) for a in c_args])
    for o, r in zip(given_outs, results):
        if o is not None:
            _storage(o)[...] = r
    return results


def run_reduction(kernel: Any, args: tuple, axis: Any, keepdims: bool) -> np.ndarray:
    """Run a ReductionKernel (its parsed parameters, expressions, ``identity``, ``reduce_type``) over ``args``,
    reducing ``axis`` (all axes when None), one row after another."""
    ins, outs = kernel.in_params, kernel.out_params
    if len(outs) != 1 or len(args) != len(ins):
        raise NotImplementedError(f"{kernel.name}: the simulated CuPy reduces with one output and no out= argument")
    resolved = _resolve(ins, list(args))
    arrays = [np.asarray(_storage(a)) for a in args]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    ndim = len(shape)
    axes = tuple(range(ndim)) if axis is None else tuple(a % ndim for a in np.atleast_1d(axis))
    kept = [d for d in range(ndim) if d not in axes]
    order = kept + list(axes)
    rows = int(np.prod([shape[d] for d in kept]))
    n = int(np.prod([shape[d] for d in axes]))
    out = outs[0]
    out_ct = out.c_type(resolved)
    acc_ct = kernel.reduce_type or out_ct  # the partial results' C type
    c_args, c_types, decls = [], [], []
    for p, a in zip(ins, arrays):
        ct = p.c_type(resolved)
        moved = np.ascontiguousarray(np.transpose(np.broadcast_to(a, shape), order), dtype=p.dtype(resolved))
        c_args.append(moved.reshape(rows, n))
        decls.append(f"const {ct} {p.name} = {p.name}_p[r * n + j];")
        c_types.append(f"const {ct}* {p.name}_p")
    result = np.empty(rows, dtype=out.dtype(resolved))
    code = f"""{cpu_source(kernel.preamble)}
extern "C" void tinyllm_reduce({", ".join(["long long rows", "long long n"] + c_types + [f"{out_ct}* out_p"])}) {{
    for (long long r = 0; r < rows; ++r) {{
        {acc_ct} a = ({acc_ct})({kernel.identity});
        for (long long j = 0; j < n; ++j) {{
            {" ".join(decls)}
            {acc_ct} b = ({acc_ct})({kernel.map_expr});
            a = ({kernel.reduce_expr});
        }}
        {out_ct} {out.name};
        {kernel.post_map_expr};
        out_p[r] = {out.name};
    }}
}}
"""
    library = compile_library(code)
    library.tinyllm_reduce(ctypes.c_longlong(rows), ctypes.c_longlong(n), *[_c_value(a) for a in c_args],
                           result.ctypes.data_as(ctypes.c_void_p))
    out_shape = tuple(1 if d in axes else shape[d] for d in range(ndim)) if keepdims else tuple(shape[d] for d in kept)
    return result.reshape(out_shape)


def _scalar_type(c_type: str) -> str:
    return "float" if c_type == "float16" else c_type  # a float16 scalar travels as a float


def _c_value(a: Any) -> Any:
    return a.ctypes.data_as(ctypes.c_void_p) if isinstance(a, np.ndarray) else a
