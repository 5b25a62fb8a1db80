"""Checkpoints: round trip, crash safety, and clear errors for damaged files and the wrong model."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import safetensors.numpy
from conftest import to_numpy

import tinyllm as tl
from tinyllm import checkpoint as checkpoint_module
from tinyllm.checkpoint import CheckpointError, load_checkpoint, load_model, restore, save_checkpoint
from tinyllm.models import ModelConfig, Transformer
from tinyllm.optim import AdamW
from tinyllm.tokenizer import BPETokenizer

CONFIG = ModelConfig(vocab_size=64, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=16)


def trained_model(seed: int = 0) -> tuple[Transformer, AdamW]:
    """A tiny model and its AdamW after one step, so the optimizer has moments to save."""
    tl.set_backend("numpy", seed=seed)
    model = Transformer(CONFIG)
    optimizer = AdamW(model.parameters(), lr=1e-2)
    idx = tl.get_backend().rng.integers(0, 64, size=(2, 8))
    _, loss = model(idx, idx)
    loss.backward()
    optimizer.step()
    return model, optimizer


def host_state(model: Transformer) -> dict[str, np.ndarray]:
    return {name: to_numpy(array).copy() for name, array in model.state_dict().items()}


@pytest.fixture
def tokenizer_path(tmp_path):
    path = tmp_path / "tok.json"
    BPETokenizer.train("to be or not to be " * 20, vocab_size=270).save(path)
    return path


def test_round_trip_restores_model_optimizer_state_and_tokenizer(tmp_path, tokenizer_path):
    model, optimizer = trained_model()
    state = {"step": 1, "best_val_loss": 3.5, "batch_rng_state": np.random.default_rng(0).bit_generator.state}
    save_checkpoint(tmp_path / "last", model, optimizer, train_state=state, train_config={"lr": 0.01},
                    tokenizer_path=tokenizer_path)

    checkpoint = load_checkpoint(tmp_path / "last")
    fresh, fresh_optimizer = trained_model(seed=1)  # different weights and moments, overwritten below
    restore(checkpoint, fresh, fresh_optimizer)
    for name, array in host_state(model).items():
        np.testing.assert_array_equal(to_numpy(fresh.state_dict()[name]), array, err_msg=name)
    assert fresh_optimizer.step_count == 1
    for saved, loaded in zip(optimizer.state, fresh_optimizer.state):
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(to_numpy(loaded[key]), to_numpy(saved[key]))
    assert checkpoint.train_state == state and checkpoint.train_config == {"lr": 0.01}
    assert checkpoint.load_tokenizer().encode("to be") == BPETokenizer.load(tokenizer_path).encode("to be")


def test_tensors_are_plain_safetensors_and_the_rest_is_json(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path / "ckpt", model, optimizer)
    manifest = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert manifest["model_config"] == CONFIG.to_dict()
    weights = safetensors.numpy.load_file(tmp_path / "ckpt" / manifest["files"]["model"]["name"])
    assert set(weights) == set(model.state_dict())
    moments = safetensors.numpy.load_file(tmp_path / "ckpt" / manifest["files"]["optimizer"]["name"])
    assert "state.0.exp_avg" in moments and "state.0.exp_avg_sq" in moments


def test_load_model_builds_the_saved_architecture(tmp_path):
    model, _ = trained_model()
    save_checkpoint(tmp_path / "ckpt", model)
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.config == CONFIG and not loaded.training
    idx = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(to_numpy(loaded(idx)[0]), to_numpy(model(idx)[0]))


def test_a_new_save_replaces_the_old_files(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path / "last", model, optimizer)
    model.norm.weight.data += 1.0
    save_checkpoint(tmp_path / "last", model, optimizer)
    names = sorted(p.name for p in (tmp_path / "last").iterdir())
    assert len(names) == 3 and names[0] == "checkpoint.json"  # the manifest, one model file, one optimizer file
    np.testing.assert_array_equal(to_numpy(load_model(tmp_path / "last").norm.weight), to_numpy(model.norm.weight))


def crash_in_optimizer_file(monkeypatch):
    """Interrupt the save while the optimizer file is being serialised (the new model file is already on disk)."""

    def interrupted(arrays):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.safetensors.numpy, "save", _second_call(safetensors.numpy.save, interrupted))


def crash_at_manifest_rename(monkeypatch):
    """Fail the very last step, the rename of the new manifest over the old one."""
    real_replace = os.replace

    def failing_replace(source, target, *args, **kwargs):
        if str(target).endswith("checkpoint.json"):
            raise OSError(28, "No space left on device")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)


def _second_call(first, second):
    calls = []

    def call(*args, **kwargs):
        calls.append(1)
        return (first if len(calls) == 1 else second)(*args, **kwargs)

    return call


@pytest.mark.parametrize("crash", [crash_in_optimizer_file, crash_at_manifest_rename])
def test_a_save_that_dies_midway_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch, crash):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path / "last", model, optimizer, train_state={"step": 10})
    before = host_state(model)

    model.norm.weight.data += 1.0  # the next save holds different weights...
    crash(monkeypatch)
    with pytest.raises((KeyboardInterrupt, OSError)):
        save_checkpoint(tmp_path / "last", model, optimizer, train_state={"step": 20})
    monkeypatch.undo()

    checkpoint = load_checkpoint(tmp_path / "last")  # ...but the old checkpoint is intact
    assert checkpoint.train_state == {"step": 10}
    for name, array in before.items():
        np.testing.assert_array_equal(checkpoint.model_state[name], array)
    assert not [p for p in (tmp_path / "last").iterdir() if p.name.endswith(".tmp")]  # no temporary files left

    save_checkpoint(tmp_path / "last", model, optimizer, train_state={"step": 20})  # the next save tidies up
    assert len(list((tmp_path / "last").iterdir())) == 3
    assert load_checkpoint(tmp_path / "last").train_state == {"step": 20}


def test_a_truncated_file_is_reported_by_name(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path / "last", model, optimizer)
    (model_file,) = (tmp_path / "last").glob("model-*.safetensors")
    model_file.write_bytes(model_file.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"{model_file.name} is damaged: it has 100 bytes, expected \d+") as error:
        load_checkpoint(tmp_path / "last")
    assert "Use the other checkpoint" in str(error.value)


def test_a_changed_byte_is_caught_by_the_hash(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path / "last", model, optimizer)
    (optimizer_file,) = (tmp_path / "last").glob("optimizer-*.safetensors")
    data = bytearray(optimizer_file.read_bytes())
    data[-1] ^= 0xFF
    optimizer_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{optimizer_file.name} is damaged: it has the right size but SHA-256"):
        load_checkpoint(tmp_path / "last")


def test_a_damaged_manifest_or_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    model, _ = trained_model()
    save_checkpoint(tmp_path / "last", model)
    manifest = tmp_path / "last" / "checkpoint.json"
    manifest.write_text(manifest.read_text()[:50])
    damaged = r"checkpoint.json is damaged, not a readable checkpoint manifest \(invalid JSON"
    with pytest.raises(CheckpointError, match=damaged):
        load_checkpoint(tmp_path / "last")


def test_restoring_into_a_model_of_another_config_names_the_differences(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path / "last", model, optimizer)
    wider = Transformer(ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=16))
    expected = r"different config \(dim: checkpoint 16, model 32;.*Transformer\(load_checkpoint"
    with pytest.raises(CheckpointError, match=expected):
        restore(load_checkpoint(tmp_path / "last"), wider)


def test_restoring_an_optimizer_needs_optimizer_state(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path / "weights_only", model)
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        restore(load_checkpoint(tmp_path / "weights_only"), model, optimizer)
