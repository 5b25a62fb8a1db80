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

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SHAKESPEARE = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def cupy_skip_reason() -> str | None:
    """None if CuPy with a GPU is usable, else why not (printed by the skipped tests)."""
    try:
        from tinyllm.backends import BackendUnavailableError, CupyBackend

        CupyBackend(0)
    except BackendUnavailableError as error:
        return f"CuPy backend unavailable: {error}"
    return None


@pytest.fixture(autouse=True)
def _backend_under_test():
    """Every test runs on the backend named by TINYLLM_BACKEND (numpy by default), freshly seeded."""
    import tinyllm as tl

    name = os.environ.get("TINYLLM_BACKEND", "numpy")
    if name == "cupy":
        reason = cupy_skip_reason()
        if reason:
            pytest.skip(reason)
    tl.set_backend(name, seed=0)
    yield


def to_numpy(array) -> np.ndarray:
    """A host NumPy copy of a backend array or Tensor."""
    import tinyllm as tl

    if isinstance(array, tl.Tensor):
        return array.numpy()
    return np.asarray(tl.get_backend().to_host(array))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    """Say once, at the end, why a CuPy run skipped (every test skips with the same reason)."""
    if os.environ.get("TINYLLM_BACKEND") == "cupy":
        reason = cupy_skip_reason()
        if reason:
            terminalreporter.write_line(f"TINYLLM_BACKEND=cupy: all tests skipped. {reason}")
