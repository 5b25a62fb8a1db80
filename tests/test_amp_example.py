"""examples/train_shakespeare.py --dtype: a float16 run and its resume, and the dtypes it refuses, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, child_pythonpath

from tinyllm.checkpoint import load_checkpoint

TRAIN = REPO_ROOT / "examples" / "train_shakespeare.py"
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 120


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TINYLLM_BACKEND"}
    env |= {"PYTHONPATH": child_pythonpath(), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(TRAIN), *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def test_a_float16_run_trains_saves_float32_weights_and_resumes_in_float16(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT)
    common = ["--data", "text.txt", "--out-dir", "run", "--no-progress", "--sample-tokens", "4"]
    first = run("--preset", "tiny", "--dtype", "float16", "--max-steps", "4", "--eval-interval", "2",
                "--eval-iters", "1", "--log-interval", "2", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "training: 4 steps of 8 x 32 tokens, float16 compute (float32 weights)" in first.stdout
    checkpoint = load_checkpoint(tmp_path / "run" / "last")
    assert checkpoint.train_config["dtype"] == "float16" and checkpoint.train_state["grad_scaler"]["scale"] == 2.0**16
    assert {array.dtype.name for array in checkpoint.model_state.values()} == {"float32"}
    resumed = run("--resume", "--max-steps", "6", *common, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "float16 compute (float32 weights), resuming at step 4" in resumed.stdout
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [2, 4, 6]
    assert all(r["loss_scale"] == 2.0**16 and r["skipped_steps"] == 0 for r in log if r["kind"] == "train")


def test_unknown_dtypes_and_bfloat16_on_numpy_are_one_line_errors_before_any_work(tmp_path):
    bad = run("--preset", "tiny", "--dtype", "half", "--out-dir", "run", cwd=tmp_path)
    assert bad.returncode == 2
    assert "TrainConfig.dtype must be one of ['float32', 'float16', 'bfloat16'], got 'half'" in bad.stderr
    bf16 = run("--preset", "tiny", "--dtype", "bfloat16", "--backend", "numpy", "--out-dir", "run", cwd=tmp_path)
    assert bf16.returncode == 2 and "Traceback" not in bf16.stderr
    assert ("bfloat16 needs the ml_dtypes package" in bf16.stderr or "bfloat16 runs on the cupy backend only" in bf16.stderr)
    assert not (tmp_path / "run").exists()
