"""The exercises' checkers stay honest: each passes the library's own solution and fails the untouched stub.

Every exercises/NN_*.py defines the stub a learner fills in (named by its ``EXERCISE``),
``library_solution()`` and ``check(candidate)``, which raises AssertionError when the candidate
is wrong. A checker that passed the stub would check nothing; one that failed the library
would be wrong itself. The files are found when the tests are collected.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO_ROOT, child_pythonpath

import tinyllm as tl

EXERCISES = sorted((REPO_ROOT / "exercises").glob("[0-9][0-9]_*.py"))


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"exercise_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _numpy_only() -> None:
    if tl.get_backend().name != "numpy":
        pytest.skip("the exercises' checkers compare NumPy arrays")


def test_there_are_eight_exercises_numbered_in_order() -> None:
    assert [int(path.name[:2]) for path in EXERCISES] == list(range(1, 9))


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_checker_passes_the_library_solution(path: Path) -> None:
    module = load(path)
    module.check(module.library_solution())


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_checker_fails_the_untouched_stub(path: Path) -> None:
    module = load(path)
    with pytest.raises(AssertionError):
        module.check(getattr(module, module.EXERCISE))


def test_running_an_exercise_says_what_is_wrong(tmp_path) -> None:
    """As a learner runs it: the untouched stub exits non-zero with the checker's message."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "exercises" / "02_sum_to.py")], capture_output=True, text=True, cwd=tmp_path,
        env={"PYTHONPATH": child_pythonpath(), "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=60,
    )
    assert result.returncode != 0
    assert "sum_to(grad of shape (2, 3), (3,)) has shape (2, 3)" in result.stderr
