"""What one operation costs the host: microseconds per launch, tinyllm's array library against PyTorch's.

A small model's GPU step is bound by launches, not arithmetic (``docs/gpu.md``): each operation costs
Python and driver time however little it computes. This times N launches of each kind on tiny arrays,
back to back, then waits for the device once; time / N is what one launch costs the host when the
device keeps up. Kinds: an elementwise add (``x + y``), a fused elementwise kernel of tinyllm's (SwiGLU),
a RawKernel of tinyllm's (RMSNorm's, one block per row), a small matrix product, and a whole tinyllm
``Function`` call with its autograd bookkeeping (the same add through a Tensor); PyTorch's add and matmul
on the same device are the reference. Alternating A B A B, medians of the repeats::

    python benchmarks/launch_overhead.py --backend cupy --json out.jsonl     # on a GPU
    python benchmarks/launch_overhead.py --backend numpy                      # the same on the CPU

On NumPy the kernels' rows are absent (they need CuPy) and PyTorch runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="cupy")
    parser.add_argument("--launches", type=int, default=2000, help="launches per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings per kind (alternating with PyTorch)")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--json", default=None, metavar="PATH", help="append one JSON line with every figure")
    args = parser.parse_args()

    import numpy as np

    import tinyllm as tl

    backend = tl.set_backend(args.backend, seed=0)
    xp = backend.xp
    rng = np.random.default_rng(0)
    x, y = (xp.asarray(rng.standard_normal((8, 64)).astype(np.float32)) for _ in range(2))
    w = xp.asarray(rng.standard_normal((64, 64)).astype(np.float32))
    ones = xp.ones(64, dtype=xp.float32)
    tx, ty = tl.Tensor(x, requires_grad=True), tl.Tensor(y)

    kinds: dict[str, Callable[[], Any]] = {
        "array add": lambda: x + y,
        "array matmul (8x64 @ 64x64)": lambda: x @ w,
        "tinyllm Function (Tensor add, graph recorded)": lambda: tx + ty,
    }
    if backend.kernels is not None:
        kernels = backend.kernels
        kinds["tinyllm SwiGLU ElementwiseKernel"] = lambda: kernels.swiglu_forward(x, y)
        kinds["tinyllm RMSNorm RawKernel"] = lambda: kernels.rms_norm_forward(x, ones, 1e-5)
    torch = None
    if not args.skip_torch:
        try:
            import torch
        except ImportError:
            print("(PyTorch not installed: tinyllm's side only)", file=sys.stderr)
    if torch is not None:
        device = "cuda" if args.backend == "cupy" else "cpu"
        tx_, ty_ = (torch.from_numpy(backend.to_host(a)).to(device) for a in (x, y))
        tw = torch.from_numpy(backend.to_host(w)).to(device)
        kinds["torch add"] = lambda: tx_ + ty_
        kinds["torch matmul (8x64 @ 64x64)"] = lambda: tx_ @ tw

    def sync() -> None:
        backend.synchronize()
        if torch is not None and args.backend == "cupy":
            torch.cuda.synchronize()

    def timed(fn: Callable[[], Any]) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(args.launches):
            fn()
        sync()
        return (time.perf_counter() - start) / args.launches * 1e6  # microseconds per launch

    for fn in kinds.values():  # warm-up: compiles the kernels, fills the allocator's pool
        for _ in range(20):
            fn()
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(args.repeats):
        for name, fn in kinds.items():
            times[name].append(timed(fn))
    result = {"kind": "launch_overhead", "backend": args.backend, "device": backend.device_name(),
              "launches": args.launches, "us_per_launch": {n: round(statistics.median(t), 2) for n, t in times.items()}}
    if torch is not None:
        add, mm = result["us_per_launch"]["torch add"], result["us_per_launch"]["torch matmul (8x64 @ 64x64)"]
        result["ratio_add"] = round(result["us_per_launch"]["array add"] / add, 2)
        result["ratio_matmul"] = round(result["us_per_launch"]["array matmul (8x64 @ 64x64)"] / mm, 2)
    for name, us in result["us_per_launch"].items():
        print(f"{name:48s} {us:8.2f} us per launch")
    if torch is not None:
        print(f"array library / torch: add {result['ratio_add']}x, matmul {result['ratio_matmul']}x")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
