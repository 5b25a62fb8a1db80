"""Which backend runs: the --backend flag, else TINYLLM_BACKEND, else NumPy; never a silent fallback.

Issue 18 items 4 and 13: both examples honour TINYLLM_BACKEND (a bad value or a CuPy that cannot
run is one clear error line, exit status 2), and a pytest run asked to test CuPy where CuPy cannot
run fails with the reason instead of skipping every test and exiting 0.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, SHAKESPEARE, child_pythonpath, cupy_skip_reason
from tinyllm.backends import backend_name_from_environment

NO_CUPY = cupy_skip_reason() is not None


def run(args: list[str], backend: str | None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "OPENBLAS_NUM_THREADS": "1"}
    env.pop("TINYLLM_BACKEND", None)
    if backend is not None:
        env["TINYLLM_BACKEND"] = backend
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          env=env)


def test_the_flag_wins_then_the_environment_then_numpy(monkeypatch):
    monkeypatch.delenv("TINYLLM_BACKEND", raising=False)
    assert backend_name_from_environment() == "numpy"
    monkeypatch.setenv("TINYLLM_BACKEND", " CuPy ")
    assert backend_name_from_environment() == "cupy"
    assert backend_name_from_environment("numpy") == "numpy"
    monkeypatch.setenv("TINYLLM_BACKEND", "bogus")
    with pytest.raises(ValueError, match=r"TINYLLM_BACKEND='bogus' names no backend.*numpy"):
        backend_name_from_environment()


# A run that ignored the variable would train (tiny preset, 2 steps) and exit 0.
TRAIN = ["examples/train_shakespeare.py", "--preset", "tiny", "--max-steps", "2", "--sample-tokens", "0",
         "--no-progress"]


@pytest.mark.parametrize("example", ["train", "generate"])
def test_the_examples_refuse_a_bogus_tinyllm_backend_in_one_line(example, tmp_path):
    args = [*TRAIN, "--out-dir", str(tmp_path)] if example == "train" else ["examples/generate.py", "--prompt", "a"]
    result = run(args, backend="bogus")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: TINYLLM_BACKEND='bogus' names no backend")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "cache").exists()  # refused before any work


@pytest.mark.skipif(not NO_CUPY, reason="CuPy runs on this machine: there is no missing-CuPy error to see")
@pytest.mark.parametrize("example", ["train", "generate"])
def test_the_examples_honour_tinyllm_backend_cupy_and_explain_a_missing_cupy(example, tmp_path):
    args = [*TRAIN, "--out-dir", str(tmp_path)] if example == "train" else ["examples/generate.py", "--prompt", "a"]
    result = run(args, backend="cupy")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and "pip install" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_the_backend_flag_overrides_the_environment(tmp_path):
    text = SHAKESPEARE if SHAKESPEARE.exists() else None
    if text is None:
        text = tmp_path / "text.txt"
        text.write_text("To be, or not to be, that is the question. " * 400, encoding="utf-8")
    result = run([*TRAIN, "--backend", "numpy", "--data", str(text), "--out-dir", str(tmp_path / "out")],
                 backend="bogus", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "done: step 2" in result.stdout


@pytest.mark.skipif(not NO_CUPY, reason="CuPy runs on this machine: a CuPy test run is expected to work")
def test_pytest_with_tinyllm_backend_cupy_fails_loudly_when_cupy_cannot_run():
    result = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_backend_selection.py::"
                  "test_the_flag_wins_then_the_environment_then_numpy"], backend="cupy")
    assert result.returncode != 0, result.stdout
    assert "TINYLLM_BACKEND=cupy, but CuPy backend unavailable" in result.stdout + result.stderr


def test_pytest_with_a_bogus_tinyllm_backend_fails_with_the_reason():
    result = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_backend_selection.py::"
                  "test_the_flag_wins_then_the_environment_then_numpy"], backend="bogus")
    assert result.returncode != 0, result.stdout
    assert "TINYLLM_BACKEND='bogus' names no backend" in result.stdout + result.stderr


def test_the_numpy_path_imports_nothing_gpu_only():
    code = ("import sys, tinyllm as tl; from tinyllm.models import ModelConfig, Transformer; "
            "m = Transformer(ModelConfig(vocab_size=16, dim=8, n_layers=1, n_heads=2, max_seq_len=4)); "
            "m(tl.tensor([[1, 2, 3]]), tl.tensor([[2, 3, 4]]))[1].backward(); "
            "print(sorted(n for n in sys.modules if n.startswith(('cupy', 'tinyllm.backends.cuda_kernels'))))")
    result = run(["-c", code], backend=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
