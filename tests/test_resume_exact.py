"""Resuming is exact on a backend whose random generator cannot export its state (as CuPy's cannot).

CuPy's ``Generator`` keeps its state on the GPU and has no ``bit_generator.state``. Training must
not depend on saving it: the batch offsets come from a host NumPy generator (saved), and the device
generator (dropout masks) is re-seeded at every step from the run's seed and the step number.
Here the NumPy backend is made to behave like CuPy in that respect; under TINYLLM_BACKEND=cupy the
same test runs on the GPU for real.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pytest
from conftest import small_token_dataset, to_numpy

import tinyllm as tl
from tinyllm.backends import NumpyBackend, backend_name_from_environment
from tinyllm.checkpoint import load_checkpoint
from tinyllm.distributed.sharding import micro_batch_seed
from tinyllm.models import ModelConfig, Transformer
from tinyllm.train import TrainConfig, train


class StatelessRng:
    """A generator like CuPy's: it draws numbers but has no ``bit_generator.state`` to save."""

    def __init__(self, seed: int | None) -> None:
        self._rng = np.random.Generator(np.random.Philox(seed))

    def random(self, *args: Any, **kwargs: Any) -> Any:
        return self._rng.random(*args, **kwargs)

    def standard_normal(self, *args: Any, **kwargs: Any) -> Any:
        return self._rng.standard_normal(*args, **kwargs)

    def integers(self, *args: Any, **kwargs: Any) -> Any:
        return self._rng.integers(*args, **kwargs)


def no_state(self) -> dict:  # noqa: ANN001
    raise NotImplementedError("this generator cannot export its state")


@pytest.fixture
def cupy_like_rng(monkeypatch):
    """On NumPy, a device generator without an exportable state; on CuPy, CuPy's own."""
    if backend_name_from_environment() == "numpy":
        monkeypatch.setattr(NumpyBackend, "make_rng", lambda self, seed: StatelessRng(seed))
        monkeypatch.setattr(NumpyBackend, "get_rng_state", no_state)
        monkeypatch.setattr(NumpyBackend, "set_rng_state", lambda self, state: no_state(self))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return small_token_dataset(tmp_path_factory.mktemp("data"), 30_000, 280)


def model(seed: int) -> Transformer:
    tl.set_backend(backend_name_from_environment(), seed=seed)  # the backend under test, not always NumPy
    return Transformer(ModelConfig(vocab_size=280, dim=32, n_layers=2, n_heads=2, n_kv_heads=1, max_seq_len=16,
                                   dropout=0.1))


def config(out_dir) -> TrainConfig:
    return TrainConfig(batch_size=4, block_size=16, grad_accum_steps=2, max_steps=9, lr=1e-2, min_lr=1e-3,
                       warmup_steps=2, eval_interval=4, eval_iters=2, log_interval=3, out_dir=str(out_dir),
                       progress=False)


@pytest.mark.filterwarnings("error::UserWarning")  # "...not bit-identically..." would be the failure
def test_resume_is_exact_when_the_device_generator_cannot_save_its_state(cupy_like_rng, data, tmp_path):
    uninterrupted = model(seed=0)
    train(uninterrupted, data, config(tmp_path / "a"))

    first = model(seed=0)
    train(first, data, config(tmp_path / "b"), stop_at_step=5)
    checkpoint = load_checkpoint(tmp_path / "b" / "last")
    assert checkpoint.train_state["batch_rng_state"]["bit_generator"] == "PCG64"  # the host generator
    resumed = model(seed=99)
    train(resumed, data, config(tmp_path / "b"), checkpoint=checkpoint)

    for (name, a), b in zip(uninterrupted.named_parameters(), resumed.parameters()):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=name)


def test_dropout_seeds_differ_by_run_step_and_micro_batch():
    seeds = {micro_batch_seed(run, step, i) for run in (0, 1, 1337) for step in range(100) for i in range(4)}
    assert len(seeds) == 1200 and all(0 <= s < 2**32 for s in seeds)  # 32 bits: CuPy's Philox takes them


def test_an_old_checkpoint_without_the_batch_generator_resumes_with_a_warning(data, tmp_path):
    first = model(seed=0)
    train(first, data, config(tmp_path), stop_at_step=4)
    checkpoint = load_checkpoint(tmp_path / "last")
    del checkpoint.train_state["batch_rng_state"]
    with pytest.warns(UserWarning, match="not bit-identically"):
        result = train(model(seed=0), data, config(tmp_path), checkpoint=checkpoint)
    assert result["step"] == 9


def test_resuming_with_another_global_batch_warns_with_both_sizes(data, tmp_path):
    train(model(seed=0), data, config(tmp_path), stop_at_step=4)
    saved = config(tmp_path)
    checkpoint = load_checkpoint(tmp_path / "last")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the same settings: no warning at all
        train(model(seed=0), data, config(tmp_path), checkpoint=checkpoint, stop_at_step=5)
    changed = dataclasses.replace(config(tmp_path), grad_accum_steps=saved.grad_accum_steps + 1)
    before = saved.batch_size * saved.grad_accum_steps
    with pytest.warns(UserWarning, match=f"global batch of {before + saved.batch_size} .* had {before} "):
        train(model(seed=0), data, changed, checkpoint=load_checkpoint(tmp_path / "last"))
