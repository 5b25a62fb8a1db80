"""Issue 18: bad values, damaged files and faults get a clear error, and nothing is half-done.

Configs name the field they reject; generation rejects what it cannot honour; loading weights
is all or nothing; a truncated GGUF, an incomplete manifest or a full disk say what happened
and what survived; a diverging run stops with advice that fits its settings and no NumPy noise.
"""

from __future__ import annotations

import errno
import json
import math
import warnings

import numpy as np
import pytest
import safetensors.numpy
from conftest import FIXTURES, to_numpy

import tinyllm as tl
import tinyllm.checkpoint as checkpoint_module
import tinyllm.pretrained.load as load_module
from tinyllm.checkpoint import CheckpointError, CheckpointSaveError, load_checkpoint, save_checkpoint
from tinyllm.data import prepare_tokens, train_tokenizer_cached
from tinyllm.models import ModelConfig, Transformer
from tinyllm.optim import AdamW
from tinyllm.pretrained import load_pretrained, load_pretrained_weights
from tinyllm.pretrained.tensors import LazyTensor
from tinyllm.sampling import generate, sample_next
from tinyllm.train import TrainConfig, TrainingDiverged, configure_optimizer, train

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 120


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    tl.set_backend("numpy", seed=seed)
    settings = {"vocab_size": 300, "dim": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 16}
    return Transformer(ModelConfig(**(settings | overrides)))


def snapshot(model: Transformer) -> dict[str, np.ndarray]:
    return {name: to_numpy(array).copy() for name, array in model.state_dict().items()}


def assert_unchanged(model: Transformer, before: dict[str, np.ndarray]) -> None:
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(array), before[name], err_msg=name)


# -- item 6: configs reject non-finite or impossible values, naming the field -------------------------------


@pytest.mark.parametrize(("field", "value"), [("rope_theta", math.nan), ("norm_eps", math.inf), ("rope_theta", -1.0),
                                              ("norm_eps", math.nan)])
def test_model_config_rejects_non_finite_values_by_name(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a finite positive number"):
        ModelConfig(**{field: value})


@pytest.mark.parametrize(("field", "value", "message"), [
    ("grad_clip", math.nan, "grad_clip must be a finite number"),
    ("lr", math.inf, "lr must be a finite number"),
    ("weight_decay", math.nan, "weight_decay must be a finite number"),
    ("eps", -1e-8, "eps must be a finite number"),
    ("betas", (2, 0.9), r"betas must be two numbers in \[0, 1\)"),
    ("betas", (0.9, math.nan), r"betas must be two numbers in \[0, 1\)"),
])
def test_train_config_rejects_non_finite_values_by_name(field, value, message):
    with pytest.raises(ValueError, match=f"TrainConfig.{message}"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(("settings", "message"), [
    ({"betas": (2, 0.9)}, r"betas\[0\] must be in \[0, 1\), got 2"),
    ({"betas": (0.9, math.nan)}, r"betas\[1\] must be in \[0, 1\), got nan"),
    ({"lr": math.nan}, "lr must be a finite number >= 0, got nan"),
    ({"weight_decay": math.inf}, "weight_decay must be a finite number >= 0, got inf"),
])
def test_adamw_rejects_impossible_settings_by_name(settings, message):
    with pytest.raises(ValueError, match=f"AdamW {message}"):
        AdamW(tiny_model().parameters(), **settings)


# -- item 5 and 8: generation and the model reject what they cannot honour ---------------------------------


def test_generate_rejects_a_negative_max_new_tokens_and_float_ids():
    model = tiny_model()
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0, got -1"):
        list(generate(model, [1, 2], -1))
    with pytest.raises(TypeError, match="prompt ids must be integers .* got 1.5"):
        list(generate(model, [1, 1.5], 3))
    with pytest.raises(TypeError, match="prompt ids must be integers .* dtype float"):
        list(generate(model, np.array([1.0, 2.0]), 3))
    assert list(generate(model, [1, 2], 0)) == []
    assert len(list(generate(model, np.array([1, 2]), 3, temperature=0))) == 3  # integer arrays are fine


def test_sampling_rejects_a_nan_temperature_and_nan_logits():
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        sample_next(np.zeros(4), temperature=math.nan)
    for temperature in (0.0, 1.0):  # greedy would silently pick token 0
        with pytest.raises(ValueError, match=r"logits contain NaN \(4 of 4\).*diverged"):
            sample_next(np.full(4, np.nan), temperature=temperature)
    assert sample_next(np.array([0.0, -np.inf, 3.0]), temperature=0) == 2  # -inf (a masked token) is fine


def test_the_model_rejects_an_input_without_tokens():
    with pytest.raises(ValueError, match=r"token ids of shape \(1, 0\) hold no tokens"):
        tiny_model()(np.zeros((1, 0), dtype=np.int64))


# -- item 3: load_pretrained_weights is all or nothing -----------------------------------------------------


def test_a_truncated_safetensors_file_changes_no_parameter(tmp_path):
    model = tiny_model(seed=0)
    other = snapshot(tiny_model(seed=1))
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file(other, path)
    path.write_bytes(path.read_bytes()[:-100])  # the last tensor loses its end
    before = snapshot(model)
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_pretrained_weights(model, path)
    assert_unchanged(model, before)


def test_a_tensor_that_fails_to_read_midway_changes_no_parameter(tmp_path, monkeypatch):
    """The file's header is fine, but reading the last tensor fails: the ones read before must not be copied."""
    model = tiny_model(seed=0)
    other = snapshot(tiny_model(seed=1))
    names = list(other)

    def failing_read() -> np.ndarray:
        raise OSError("Input/output error")

    tensors = {name: LazyTensor(array.shape, "F32", lambda array=array: array) for name, array in other.items()}
    tensors[names[-1]] = LazyTensor(other[names[-1]].shape, "F32", failing_read)
    monkeypatch.setattr(load_module, "_lazy_tensors_of", lambda path, config: tensors)
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"cannot read {names[-1]} .*Input/output error.*left unchanged"):
        load_pretrained_weights(model, tmp_path / "model.safetensors")
    assert_unchanged(model, before)


# -- item 8: damaged files and faults are named, with what survived ----------------------------------------


def test_a_truncated_gguf_is_reported_as_truncated(tmp_path):
    from test_pretrained import write_gguf

    path = tmp_path / "model.gguf"
    write_gguf(path, FIXTURES / "reference" / "llama_gqa")
    data = path.read_bytes()
    for cut in (len(data) - 1000, len(data) // 2, 200):  # inside the tensors, the tensor table, the metadata
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"model.gguf is truncated"):
            load_pretrained(path)


def test_a_checkpoint_directory_without_its_manifest_is_not_called_a_hugging_face_directory(tmp_path):
    save_checkpoint(tmp_path / "last", tiny_model())
    (tmp_path / "last" / "checkpoint.json").unlink()
    with pytest.raises(FileNotFoundError, match="looks like a tinyllm checkpoint without its checkpoint.json"):
        load_pretrained(tmp_path / "last")
    with pytest.raises(FileNotFoundError, match="no checkpoint.json .* no config.json"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize(("remove", "message"), [
    (("files",), 'no "files" object'),
    (("files", "model"), 'no complete "files.model" entry'),
    (("model_config",), 'no "model_config" object'),
])
def test_a_manifest_missing_keys_names_them(tmp_path, remove, message):
    save_checkpoint(tmp_path, tiny_model())
    manifest = json.loads((tmp_path / "checkpoint.json").read_text())
    parent = manifest
    for key in remove[:-1]:
        parent = parent[key]
    del parent[remove[-1]]
    (tmp_path / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=f"checkpoint.json is incomplete: {message}"):
        load_checkpoint(tmp_path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("data")
    text_path = directory / "text.txt"
    text_path.write_text(TEXT, encoding="utf-8")
    return prepare_tokens(text_path, train_tokenizer_cached(text_path, 300, directory), directory)


def tiny_config(out_dir, **overrides) -> TrainConfig:
    settings = {"batch_size": 2, "block_size": 16, "max_steps": 4, "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 1,
                "eval_interval": 2, "eval_iters": 1, "log_interval": 2, "out_dir": out_dir, "progress": False}
    return TrainConfig(**(settings | overrides))


def test_resuming_from_a_checkpoint_without_a_step_says_so(data, tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / "last", model, configure_optimizer(model, tiny_config(tmp_path)), train_state={})
    with pytest.raises(CheckpointError, match=r"no training step \(train_state.step is None\)"):
        train(tiny_model(), data, tiny_config(tmp_path), checkpoint=load_checkpoint(tmp_path / "last"))


def test_a_full_disk_during_a_save_keeps_the_old_checkpoint_and_says_so(tmp_path, monkeypatch):
    model = tiny_model()
    optimizer = AdamW(model.parameters())
    save_checkpoint(tmp_path, model, optimizer, train_state={"step": 1})
    files_before = sorted(p.name for p in tmp_path.iterdir())
    for p in model.parameters():
        p.data += 1.0  # new content, so new file names
    real_write, calls = checkpoint_module.atomic_write, []

    def write_until_the_disk_is_full(path, data):
        calls.append(path)
        if len(calls) == 2:  # the model file is written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(checkpoint_module, "atomic_write", write_until_the_disk_is_full)
    with pytest.raises(CheckpointSaveError, match=r"No space left on device\). The previous checkpoint in .* is intact"):
        save_checkpoint(tmp_path, model, optimizer, train_state={"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before  # the half-written save left nothing behind
    assert load_checkpoint(tmp_path).train_state["step"] == 1


# -- item 9: divergence: no NumPy warnings, advice that fits the settings ----------------------------------


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_divergence_stops_without_numpy_warnings_and_advises_from_the_settings(data, tmp_path, grad_clip):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an overflow warning would fail the test
        with pytest.raises(TrainingDiverged) as stopped:
            train(tiny_model(), data, tiny_config(tmp_path, lr=1e30, warmup_steps=0, grad_clip=grad_clip))
    message = str(stopped.value)
    assert "Lower the learning rate (--lr 3.3e+29 instead of 1e+30)" in message
    assert ("--grad-clip" in message) == (grad_clip == 0.0)  # never suggest the clipping already in use
    assert np.geterr()["over"] == "warn"  # NumPy's settings are restored after training


def test_a_run_that_does_not_diverge_restores_numpy_error_settings(data, tmp_path):
    train(tiny_model(), data, tiny_config(tmp_path))
    assert np.geterr() == {"divide": "warn", "over": "warn", "under": "ignore", "invalid": "warn"}


def test_loading_still_reads_every_name_from_tinyllm_checkpoints(tmp_path):
    """A regression guard of the all-or-nothing loader: a complete file loads every parameter."""
    model = tiny_model(seed=0)
    other = snapshot(tiny_model(seed=1))
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file(other, path)
    load_pretrained_weights(model, path)
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(array), other[name])

