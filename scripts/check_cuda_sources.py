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

import tinyllm.backends.cuda_kernels as k  # noqa: E402

check("_rms_rows, _rms_backward_rows (RawKernel)", k._RMS_ROWS_SOURCE)
check("_causal_softmax (RawKernel)", k._SOFTMAX_SOURCE)
check("_adamw_multi (RawKernel)", k._ADAMW_MULTI_SOURCE)
check("_scatter_add_rows (RawKernel)", k._SCATTER_ROWS_SOURCE)
check("_amp_accumulate, _amp_unscale, _amp_cast (RawKernel)", k._AMP_SOURCE)
check("_sum_squares_multi, _scale_multi (RawKernel)", k._GRAD_NORM_SOURCE)
for head_dim in k.FLASH_HEAD_DIMS:
    for tag in ("f32", "f16"):
        check(f"tiled attention, head_dim {head_dim}, {tag} (RawKernel)", k._flash_source(head_dim, tag))

# Each ElementwiseKernel / ReductionKernel expression, wrapped in a kernel of our own with the same
# parameter names and C types (as CuPy declares them), and compiled: catches C errors without a GPU.
import cupy  # noqa: E402

# A kernel written with a type T (RMSNorm's, SwiGLU's, RoPE's, the softmax backward's) is compiled for
# T = float and T = float16, the latter with CuPy's own float16 class (cupy/float16.cuh, as CuPy compiles it),
# so its conversions are checked too.
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
    for t in ("float", "float16") if generic else ("float",):
        prefix = FLOAT16 if t == "float16" else ""
        label = f"{name} (T = {t})" if generic else name
        if isinstance(obj, cupy.ElementwiseKernel):
            outs = [f"(float){q.name}" for q in obj.out_params]
            source = f"""{prefix}extern "C" __global__ void probe(float* sink) {{
                long long i = threadIdx.x;
                {declare(obj.in_params, t)}
                {declare(obj.out_params, t)}
                {obj.operation};
                sink[0] = {" + ".join(outs)};
            }}"""
        else:
            out = obj.out_params[0].name
            source = f"""{prefix}extern "C" __global__ void probe(float* sink) {{
                {declare(obj.in_params, t)}
                {declare(obj.out_params, t)}
                float a = ({obj.map_expr}); float b = ({obj.map_expr});
                a = ({obj.reduce_expr});
                {obj.post_map_expr};
                sink[0] = {out};
            }}"""
        check(label, source, include=INCLUDE if prefix else ())

sys.exit(1 if failures else 0)
