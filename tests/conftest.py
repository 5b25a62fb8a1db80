"""Shared test setup: hypothesis profiles, the backend under test, and paths to shared data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# "dev" (default): a handful of examples per property, random each run.
# "ci": derandomized (a fixed seed), so CI is reproducible; the same number of examples.
settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
# Tests compare against float32 references: no TF32 matmuls on a GPU (CupyBackend reads this).
os.environ.setdefault("TINYLLM_TF32", "0")

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SHAKESPEARE = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
# Without ../shared/data (a bare clone), a repeated speech stands in for Tiny Shakespeare.
STAND_IN_SPEECH = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"


def child_pythonpath() -> str:
    """PYTHONPATH for a child process (an example, the server, an MPI rank): this repository first, then the
    paths this run already had. The GPU check puts its carried wheels (gguf) there, and the simulated CuPy
    (tests/simulated_cupy) lives there; a child that dropped them would fail where the parent works."""
    inherited = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join([str(REPO_ROOT)] + ([inherited] if inherited else []))


def shakespeare_text(chars: int) -> str:
    """The first ``chars`` characters of Tiny Shakespeare, or (a bare clone) as many of a repeated speech."""
    if SHAKESPEARE.exists():
        return SHAKESPEARE.read_text(encoding="utf-8")[:chars]
    return (STAND_IN_SPEECH * (chars // len(STAND_IN_SPEECH) + 1))[:chars]


def small_token_dataset(directory: Path, chars: int, vocab_size: int):  # noqa: ANN201 - a tinyllm TokenDataset
    """``shakespeare_text(chars)`` in directory/text.txt, a ``vocab_size`` BPE trained on it, and its token files."""
    from tinyllm.data import prepare_tokens, train_tokenizer_cached

    text_path = directory / "text.txt"
    text_path.write_text(shakespeare_text(chars), encoding="utf-8")
    return prepare_tokens(text_path, train_tokenizer_cached(text_path, vocab_size, directory), directory)


def cupy_skip_reason() -> str | None:
    """None if CuPy with a GPU is usable, else why not (printed by the skipped tests)."""
    try:
        from tinyllm.backends import BackendUnavailableError, CupyBackend

        CupyBackend(0)
    except BackendUnavailableError as error:
        return f"CuPy backend unavailable: {error}"
    except Exception as error:  # noqa: BLE001 - CuPy present but broken (driver, cuRAND, compiler)
        return f"CuPy backend unavailable: {type(error).__name__}: {error}"
    return None


def pytest_configure(config) -> None:  # noqa: ANN001
    """Refuse to start when TINYLLM_BACKEND names a backend that cannot run here.

    A CuPy run on a machine without CuPy or a GPU must fail with the reason, never pass with
    every test skipped (which exits 0 and looks like success).
    """
    from tinyllm.backends import backend_name_from_environment

    try:
        name = backend_name_from_environment()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    if name == "cupy":
        reason = cupy_skip_reason()
        if reason:
            raise pytest.UsageError(f"TINYLLM_BACKEND=cupy, but {reason} Unset TINYLLM_BACKEND to test on NumPy.")


@pytest.fixture(autouse=True)
def _backend_under_test():
    """Every test runs on the backend named by TINYLLM_BACKEND (numpy by default), freshly seeded."""
    import tinyllm as tl
    from tinyllm.backends import backend_name_from_environment

    tl.set_backend(backend_name_from_environment(), seed=0)
    yield


def to_numpy(array) -> np.ndarray:
    """A host NumPy copy of a backend array or Tensor."""
    import tinyllm as tl

    if isinstance(array, tl.Tensor):
        return array.numpy()
    return np.asarray(tl.get_backend().to_host(array))


def on_device(array) -> object:
    """A host array copied to the backend under test (itself on NumPy): what tests hand a model or optimizer."""
    import tinyllm as tl

    return tl.get_backend().asarray(array)
