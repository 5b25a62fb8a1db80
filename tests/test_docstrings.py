"""The worked examples in the docstrings of every tinyllm module run, and print what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tinyllm as tl

# cuda_kernels imports CuPy (only CupyBackend loads it) and has no examples to run.
GPU_ONLY = {"tinyllm.backends.cuda_kernels"}
MODULES = sorted(info.name for info in pkgutil.walk_packages(tl.__path__, prefix="tinyllm.") if info.name not in GPU_ONLY)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    # Examples that write files (fileio's atomic_write) write them into an empty directory,
    # never into the checkout, and must not rely on any directory existing there.
    monkeypatch.chdir(tmp_path)
    if tl.get_backend().name != "numpy":
        pytest.skip("the docstring examples print NumPy results")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of the {result.attempted} docstring examples in {name} failed (see above)"
