"""Compile tinyllm's CUDA kernels with NVRTC on a machine WITHOUT a GPU: a C syntax and type check.

CuPy compiles a kernel only when it is first called, on a GPU; a typo in a kernel's C would otherwise
surface only on a lent GPU machine, costing its scarce minutes. This script compiles the RawKernel
sources as they are, and each ElementwiseKernel / ReductionKernel expression inside a probe kernel
with the same parameter names and C types. It does not run anything: agreement with the NumPy
Functions is tested on a GPU by tests/test_cuda_kernels.py.

    python -m venv /tmp/cupyvenv && /tmp/cupyvenv/bin/pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12 \
        nvidia-cuda-runtime-cu12 regex tqdm safetensors gguf jinja2
    PYTHONPATH=$PWD /tmp/cupyvenv/bin/python scripts/check_cuda_sources.py     # prints OK/FAIL per kernel

(It uses CuPy's private ``_NVRTCProgram``, as of CuPy 14; a later CuPy may move it.)
"""

import io
import re
import sys
from pathlib import Path

from cupy.cuda import compiler

failures = 0


def check(name: str, source: str, include: tuple = ()) -> None:
    prog = compiler._NVRTCProgram(source, "", (), (), method="ptx")
    options = ("-arch=compute_90", "--device-as-default-execution-space", "-std=c++17")
    try:
        ptx, _ = prog.compile(options + tuple(f"-I{path}" for path in include if path))
        print("OK  ", name, f"({len(ptx)} bytes of PTX)")
    except Exception as e:  # noqa: BLE001 - NVRTC's CompileException, printed as is
        global failures
        failures += 1
        print("FAIL", name, str(e)[:3000])


def resources(source: str, threads: dict[str, int]) -> None:
    """Compile ``source`` for an H100/H200 (sm_90) as the driver would, and check that each entry point in
    ``threads`` (its name -> the threads per block tinyllm launches it with) can be launched at all.

    A kernel that compiles may still fail at its first launch with "too many resources requested": a block's
    threads share one register file (65,536 32-bit registers an SM, allocated 8 a thread at a time) and at
    most 48 KiB of static shared memory. ptxas (``-v``) reports each function's registers, shared memory and
    spills (registers that did not fit, kept in slow local memory): printed here, with the block's share of
    the register file. Only the launchability is a failure; spills are a speed note.
    """
    global failures
    prog = compiler._NVRTCProgram(source, "", (), (), method="cubin")
    log = io.StringIO()
    try:
        prog.compile(("-arch=sm_90", "--device-as-default-execution-space", "-std=c++17", "--ptxas-options=-v"),
                     log_stream=log)
    except Exception as e:  # noqa: BLE001
        failures += 1
        print("FAIL", "sm_90", str(e)[:3000])
        return
    report: dict[str, dict[str, int]] = {}
    name = None
    for line in log.getvalue().splitlines():
        if match := re.search(r"Compiling entry function '(\w+)'", line):
            name = match.group(1)
            report[name] = {}
        elif name and (match := re.search(r"(\d+) bytes spill stores", line)):
            report[name]["spill"] = int(match.group(1))
        elif name and (match := re.search(r"Used (\d+) registers", line)):
            smem = re.search(r"(\d+) bytes smem", line)  # absent when the function has none
            report[name].update(registers=int(match.group(1)), smem=int(smem.group(1)) if smem else 0)
    for entry, n_threads in threads.items():
        r = report.get(entry)
        if not r or "registers" not in r:
            failures += 1
            print("FAIL", entry, "not in ptxas's report")
            continue
        warps = (n_threads + 31) // 32
        needed = warps * 32 * ((r["registers"] + 7) // 8 * 8)
        ok = needed <= 65536 and r["smem"] <= 48 * 1024
        failures += not ok
        print("OK  " if ok else "FAIL", f"{entry}: {n_threads} threads x {r['registers']} registers = {needed} of "
              f"65536, {r['smem']} bytes shared, {r.get('spill', 0)} bytes spilled")


import tinyllm.backends.cuda_kernels as k  # noqa: E402

check("_rms_rows, _rms_backward_rows (RawKernel)", k._RMS_ROWS_SOURCE)
check("_causal_softmax (RawKernel)", k._SOFTMAX_SOURCE)
check("_adamw_multi (RawKernel)", k._ADAMW_MULTI_SOURCE)
check("_scatter_add_rows (RawKernel)", k._SCATTER_ROWS_SOURCE)
check("_amp_accumulate, _amp_unscale, _amp_cast (RawKernel)", k._AMP_SOURCE)
check("_sum_squares_multi, _clip_multi (RawKernel)", k._GRAD_NORM_SOURCE)
for head_dim in k.FLASH_HEAD_DIMS:
    for tag in k.FLASH_TAGS.values():
        check(f"tiled attention, head_dim {head_dim}, {tag} (RawKernel)", k._flash_source(head_dim, tag))

# Each ElementwiseKernel / ReductionKernel expression, wrapped in a kernel of our own with the same
# parameter names and C types (as CuPy declares them), and compiled: catches C errors without a GPU.
import cupy  # noqa: E402

# A kernel written with a type T (RMSNorm's, SwiGLU's, RoPE's, the softmax backward's) is compiled for
# T = float, T = float16, with CuPy's own float16 class (cupy/float16.cuh, as CuPy compiles it), and
# T = unsigned short (bfloat16's bits, as the wrappers hand bfloat16 arrays over), so its conversions are
# checked too.
try:  # cuda_fp16.h, which cupy/float16.cuh includes: from the nvidia-cuda-runtime-cu12 wheel
    import nvidia.cuda_runtime

    RUNTIME_INCLUDE = Path(list(nvidia.cuda_runtime.__path__)[0]) / "include"
except ImportError:
    RUNTIME_INCLUDE = None
INCLUDE = (Path(cupy.__file__).parent / "_core" / "include", RUNTIME_INCLUDE)
FLOAT16 = "#include <cupy/float16.cuh>\n"


def ctype(param, t: str) -> str:  # noqa: ANN001
    return {"I": "long long", "T": t, "C": t}.get(param.ctype, param.ctype)  # T, C: the kernel's type parameters


def declare(params, t: str) -> str:  # noqa: ANN001
    return "\n".join(f"const {ctype(q, t)}* {q.name} = 0;" if q.raw else f"{ctype(q, t)} {q.name} = 1;"
                     for q in params)


for name in sorted(dir(k)):
    obj = getattr(k, name)
    if not isinstance(obj, cupy.ElementwiseKernel | cupy.ReductionKernel):
        continue
    generic = any(q.ctype in ("T", "C") for q in (*obj.in_params, *obj.out_params))
    for t in ("float", "float16", "unsigned short") if generic else ("float",):
        prefix = FLOAT16 if t == "float16" else ""
        label = f"{name} (T = {t})" if generic else name
        if isinstance(obj, cupy.ElementwiseKernel):
            outs = [f"(float){q.name}" for q in obj.out_params]
            source = f"""{prefix}{obj.preamble}
            extern "C" __global__ void probe(float* sink) {{
                long long i = threadIdx.x;
                {declare(obj.in_params, t)}
                {declare(obj.out_params, t)}
                {obj.operation};
                sink[0] = {" + ".join(outs)};
            }}"""
        else:
            out = obj.out_params[0].name
            source = f"""{prefix}{obj.preamble}
            extern "C" __global__ void probe(float* sink) {{
                {declare(obj.in_params, t)}
                {declare(obj.out_params, t)}
                float a = ({obj.map_expr}); float b = ({obj.map_expr});
                a = ({obj.reduce_expr});
                {obj.post_map_expr};
                sink[0] = {out};
            }}"""
        check(label, source, include=INCLUDE if prefix else ())

# Launchable as launched: registers x threads within an SM's register file, shared memory within 48 KiB.
print("\nResources on sm_90 (H100/H200), as ptxas reports them:")
resources(k._RMS_ROWS_SOURCE, {f"tinyllm_rms_norm{part}rows{tag}": k._ROW_THREADS
                               for part in ("_", "_backward_") for tag in k._TAGS.values()})
resources(k._SOFTMAX_SOURCE, {f"tinyllm_causal_softmax{tag}": k._SOFTMAX_THREADS for tag in k._TAGS.values()})
resources(k._ADAMW_MULTI_SOURCE, {"tinyllm_adamw_multi": k._MULTI_THREADS})
resources(k._SCATTER_ROWS_SOURCE, {"tinyllm_scatter_add_rows": k._SCATTER_THREADS})
resources(k._AMP_SOURCE, {f"tinyllm_amp_{part}": k._MULTI_THREADS for part in ("accumulate", "unscale", "cast")})
resources(k._GRAD_NORM_SOURCE, {f"tinyllm_{name}_multi": k._MULTI_THREADS for name in ("sum_squares", "clip")})
for head_dim in k.FLASH_HEAD_DIMS:
    for tag in k.FLASH_TAGS.values():
        resources(k._flash_source(head_dim, tag), {f"tinyllm_flash_forward_{head_dim}_{tag}": k._FLASH_ROWS,
                                                   f"tinyllm_flash_backward_q_{head_dim}_{tag}": k._FLASH_ROWS,
                                                   f"tinyllm_flash_backward_kv_{head_dim}_{tag}": k._FLASH_KEYS})

sys.exit(1 if failures else 0)
