"""benchmarks/gpu_train.py runs end to end (tiny shapes, the NumPy backend), so a GPU session finds it working."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from conftest import REPO_ROOT, child_pythonpath


def test_the_gpu_benchmark_runs_on_numpy_with_tiny_shapes(tmp_path):
    out = tmp_path / "bench.jsonl"
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "OPENBLAS_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "benchmarks/gpu_train.py", "--backend", "numpy", "--tiny", "--skip", "torch", "--steps", "2",
         "--precisions", "fp32,fp16,bf16", "--new-tokens", "6", "--prompt-tokens", "3", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env,
    )
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["kind"], r.get("precision")) for r in records] == [("train", "fp32"), ("train", "fp16"),
                                                                  ("train", "bf16"), ("decode", None)]
    fp32, fp16, bf16, decode = records
    assert fp32["tinyllm"]["tokens_per_s"] > 0 and fp32["tinyllm"]["first_loss"] > 0
    # tinyllm.amp: the same weights, so the float16 loss is the float32 one to float16's precision
    assert abs(fp16["tinyllm"]["first_loss"] - fp32["tinyllm"]["first_loss"]) < 0.01
    assert fp16["tinyllm_loss_scale"] == 2.0**16 and fp16["tinyllm_skipped_steps"] == 0 and "note" not in fp16
    # bfloat16 runs on CuPy only (and needs ml_dtypes): on NumPy the row says why and times PyTorch alone
    assert "tinyllm" not in bf16
    assert ("bfloat16 needs the ml_dtypes package" if importlib.util.find_spec("ml_dtypes") is None
            else "bfloat16 runs on the cupy backend only") in bf16["note"]
    assert decode["tinyllm"]["decode_tokens_per_s"] > 0


def test_the_launch_overhead_benchmark_runs_on_numpy(tmp_path):
    """benchmarks/launch_overhead.py (a phase of scripts/gpu_check.sh) runs and reports every kind it times."""
    out = tmp_path / "overhead.jsonl"
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "OPENBLAS_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "benchmarks/launch_overhead.py", "--backend", "numpy", "--launches", "50",
                          "--repeats", "1", "--skip-torch", "--json", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env)
    assert run.returncode == 0, run.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["kind"] == "launch_overhead" and record["backend"] == "numpy"
    assert set(record["us_per_launch"]) == {"array add", "array matmul (8x64 @ 64x64)",
                                            "tinyllm Function (Tensor add, graph recorded)"}
    assert all(us > 0 for us in record["us_per_launch"].values())
