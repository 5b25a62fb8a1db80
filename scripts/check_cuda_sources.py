"""Compile tinyllm's CUDA kernels with NVRTC on a machine WITHOUT a GPU: a C syntax and type check.

CuPy compiles a kernel only when it is first called, on a GPU; a typo in a kernel's C would otherwise
surface only on a lent GPU machine, costing its scarce minutes. This script compiles the RawKernel
sources as they are, and each ElementwiseKernel / ReductionKernel expression inside a probe kernel
with the same parameter names and C types. It does not run anything: agreement with the NumPy
Functions is tested on a GPU by tests/test_cuda_kernels.py.

    python -m venv /tmp/cupyvenv && /tmp/cupyvenv/bin/pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12 \
        regex tqdm safetensors gguf jinja2
    PYTHONPATH=$PWD /tmp/cupyvenv/bin/python scripts/check_cuda_sources.py     # prints OK/FAIL per kernel

(It uses CuPy's private ``_NVRTCProgram``, as of CuPy 14; a later CuPy may move it.)
"""

import sys

from cupy.cuda import compiler

failures = 0


def check(name: str, source: str) -> None:
    prog = compiler._NVRTCProgram(source, "", (), (), method="ptx")
    try:
        ptx, _ = prog.compile(("-arch=compute_90", "--device-as-default-execution-space", "-std=c++17"))
        print("OK  ", name, f"({len(ptx)} bytes of PTX)")
    except Exception as e:  # noqa: BLE001 - NVRTC's CompileException, printed as is
        global failures
        failures += 1
        print("FAIL", name, str(e)[:3000])

import tinyllm.backends.cuda_kernels as k  # noqa: E402

check("_causal_softmax (RawKernel)", k._SOFTMAX_SOURCE)
check("_adamw_multi (RawKernel)", k._ADAMW_MULTI_SOURCE)
check("_scatter_add_rows (RawKernel)", k._SCATTER_ROWS_SOURCE)

# Each ElementwiseKernel / ReductionKernel expression, wrapped in a kernel of our own with the same
# parameter names and C types (as CuPy declares them), and compiled: catches C errors without a GPU.
import cupy  # noqa: E402


def ctype(param) -> str:  # noqa: ANN001
    return {"I": "long long", "T": "float"}.get(param.ctype, param.ctype)


def declare(params) -> str:  # noqa: ANN001
    return "\n".join(f"const {ctype(q)}* {q.name} = 0;" if q.raw else f"{ctype(q)} {q.name} = 1;" for q in params)


for name in sorted(dir(k)):
    obj = getattr(k, name)
    if isinstance(obj, cupy.ElementwiseKernel):
        outs = [q.name for q in obj.out_params]
        source = f"""extern "C" __global__ void probe(float* sink) {{
            long long i = threadIdx.x;
            {declare(obj.in_params)}
            {declare(obj.out_params)}
            {obj.operation};
            sink[0] = {" + ".join(outs)};
        }}"""
        check(name, source)
    elif isinstance(obj, cupy.ReductionKernel):
        out = obj.out_params[0].name
        source = f"""extern "C" __global__ void probe(float* sink) {{
            {declare(obj.in_params)}
            {declare(obj.out_params)}
            float a = ({obj.map_expr}); float b = ({obj.map_expr});
            a = ({obj.reduce_expr});
            {obj.post_map_expr};
            sink[0] = {out};
        }}"""
        check(name, source)

sys.exit(1 if failures else 0)
