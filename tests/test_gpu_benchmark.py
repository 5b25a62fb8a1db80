"""benchmarks/gpu_train.py runs end to end (tiny shapes, the NumPy backend), so a GPU session finds it working."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_the_gpu_benchmark_runs_on_numpy_with_tiny_shapes(tmp_path):
    out = tmp_path / "bench.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OPENBLAS_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "benchmarks/gpu_train.py", "--backend", "numpy", "--tiny", "--skip", "torch", "--steps", "2",
         "--precisions", "fp32,bf16", "--new-tokens", "6", "--prompt-tokens", "3", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env,
    )
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["kind"], r.get("precision")) for r in records] == [("train", "fp32"), ("train", "bf16"), ("decode", None)]
    assert records[0]["tinyllm"]["tokens_per_s"] > 0 and records[0]["tinyllm"]["first_loss"] > 0
    assert "tinyllm" not in records[1] and "no mixed-precision" in records[1]["note"]
    assert records[2]["tinyllm"]["decode_tokens_per_s"] > 0
