"""The training loop, its config, resuming exactly, stopping on NaN, the logger, and the example end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, SHAKESPEARE, cupy_skip_reason, shakespeare_text, small_token_dataset, to_numpy

import tinyllm as tl
from tinyllm.checkpoint import load_checkpoint
from tinyllm.logger import TrainingLogger
from tinyllm.models import ModelConfig, Transformer
from tinyllm.train import TrainConfig, TrainingDiverged, configure_optimizer, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The first 60,000 characters of Tiny Shakespeare, 300-token BPE."""
    return small_token_dataset(tmp_path_factory.mktemp("data"), 60_000, 300)


def tiny_model(seed: int = 0, dropout: float = 0.0) -> Transformer:
    tl.set_backend("numpy", seed=seed)
    return Transformer(ModelConfig(vocab_size=300, dim=32, n_layers=2, n_heads=2, n_kv_heads=1, max_seq_len=32,
                                   dropout=dropout))


def tiny_config(out_dir, **overrides) -> TrainConfig:
    settings = {"batch_size": 4, "block_size": 32, "max_steps": 12, "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 3,
                "eval_interval": 4, "eval_iters": 2, "log_interval": 2, "out_dir": out_dir, "progress": False}
    return TrainConfig(**(settings | overrides))


# -- TrainConfig ---------------------------------------------------------------------------------------


def test_train_config_round_trips_and_rejects_unknown_keys():
    config = TrainConfig(batch_size=8, betas=[0.9, 0.99])
    assert config.betas == (0.9, 0.99)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"Unknown TrainConfig keys \['batchsize'\]; valid keys are \["):
        TrainConfig.from_dict({"batchsize": 8})
    with pytest.raises(ValueError, match="grad_accum_steps must be a positive integer"):
        TrainConfig(grad_accum_steps=0)
    with pytest.raises(ValueError, match="min_lr <= lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)


def test_weight_decay_applies_to_matrices_only():
    model = tiny_model()
    decay, no_decay = configure_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    assert decay["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(model.parameters())


# -- the loop --------------------------------------------------------------------------------------------


def test_training_lowers_the_val_loss_and_saves_last_and_best(data, tmp_path):
    result = train(tiny_model(), data, tiny_config(tmp_path, max_steps=30, eval_interval=10, eval_iters=4))
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 10, 20, 30]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5  # from about ln(300) = 5.7
    assert result["val_loss"] == evals[-1]["val_loss"] and result["step"] == 30
    assert result["val_bpc"] == pytest.approx(result["val_loss"] / (math.log(2) * data.chars_per_token))
    assert result["val_perplexity"] == pytest.approx(math.exp(result["val_loss"]))
    assert 0.0 < result["val_accuracy"] < 1.0
    assert load_checkpoint(tmp_path / "last").train_state["step"] == 30
    assert load_checkpoint(tmp_path / "best").train_state["best_val_loss"] == result["best_val_loss"]


def test_resuming_gives_exactly_the_parameters_of_an_uninterrupted_run(data, tmp_path):
    # Dropout and two micro-batches a step: the restored RNG must replay batches and masks alike.
    # N = 7 is not a multiple of eval_interval: evaluations must not disturb the training stream.
    config = {"max_steps": 12, "grad_accum_steps": 2}
    uninterrupted = tiny_model(dropout=0.1)
    train(uninterrupted, data, tiny_config(tmp_path / "a", **config))

    first = tiny_model(dropout=0.1)
    train(first, data, tiny_config(tmp_path / "b", **config), stop_at_step=7)
    checkpoint = load_checkpoint(tmp_path / "b" / "last")
    assert checkpoint.train_state["step"] == 7
    resumed = tiny_model(seed=123, dropout=0.1)  # other initial weights: all are restored from the checkpoint
    train(resumed, data, tiny_config(tmp_path / "b", **config), checkpoint=checkpoint)

    for (name, a), b in zip(uninterrupted.named_parameters(), resumed.parameters()):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=name)
    optimizer_a = load_checkpoint(tmp_path / "a" / "last").optimizer_state
    optimizer_b = load_checkpoint(tmp_path / "b" / "last").optimizer_state
    assert optimizer_a["step"] == optimizer_b["step"] == 12
    for i, moments in optimizer_a["state"].items():
        for key, array in moments.items():
            np.testing.assert_array_equal(optimizer_b["state"][i][key], array)
    # The resumed log continues the first one: each step logged once.
    steps = [r["step"] for r in read_log(tmp_path / "b" / "log.jsonl") if r["kind"] == "train"]
    assert steps == [2, 4, 6, 8, 10, 12]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy reports the overflow on its way to inf
def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(data, tmp_path):
    model = tiny_model()
    initial = [to_numpy(p).copy() for p in model.parameters()]
    with pytest.raises(TrainingDiverged, match=r"became (nan|inf) at step 1 .*The last good checkpoint, from step 0, "
                       r"is untouched in .*last.*Lower the learning rate"):
        train(model, data, tiny_config(tmp_path, lr=1e30, warmup_steps=0))  # step 0's update blows the weights up
    checkpoint = load_checkpoint(tmp_path / "last")
    assert checkpoint.train_state["step"] == 0
    for saved, start in zip(checkpoint.build_model().parameters(), initial):
        np.testing.assert_array_equal(to_numpy(saved), start)


def test_a_context_longer_than_the_model_or_the_data_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match="block_size 64 is longer than the model's max_seq_len 32"):
        train(tiny_model(), data, tiny_config(tmp_path, block_size=64))
    with pytest.raises(ValueError, match="the val split has .* tokens, but one batch row needs"):
        train(tiny_model(), data, tiny_config(tmp_path, block_size=len(data.val)))


# -- the logger --------------------------------------------------------------------------------------------


def read_log(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_logger_writes_one_json_line_per_record_and_resumes_cleanly(tmp_path):
    logger = TrainingLogger(tmp_path)
    logger.log("train", 10, loss=np.float32(2.5), lr=1e-3, tokens_per_second=100.0)
    logger.log("eval", 10, val_loss=2.25, val_bpc=float("nan"))
    logger.log("train", 20, loss=2.0, lr=1e-3, tokens_per_second=100.0)
    records = read_log(tmp_path / "log.jsonl")
    assert [(r["kind"], r["step"]) for r in records] == [("train", 10), ("eval", 10), ("train", 20)]
    assert records[0]["loss"] == 2.5 and records[1]["val_bpc"] is None  # JSON has no NaN
    assert all(r["time"] >= 0 for r in records)

    TrainingLogger(tmp_path, resume_step=10)  # a run resumed from step 10 drops what came after it
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl")] == [10, 10]
    TrainingLogger(tmp_path)  # a new run starts a new log
    assert (tmp_path / "log.jsonl").read_text() == ""


def test_logger_draws_a_png_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    logger = TrainingLogger(tmp_path)
    for step, loss in ((1, 5.0), (2, 4.0), (3, 3.5)):
        logger.log("train", step, loss=loss)
    logger.log("eval", 3, val_loss=3.7)
    assert logger.plot() == tmp_path / "loss.png"
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_logger_works_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    logger = TrainingLogger(tmp_path)
    logger.log("eval", 0, val_loss=5.0)
    assert not logger.can_plot() and logger.plot() is None
    assert not (tmp_path / "loss.png").exists() and len(read_log(tmp_path / "log.jsonl")) == 1


# -- the example, end to end --------------------------------------------------------------------------------


def run_example(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO_ROOT / "examples" / "train_shakespeare.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


def test_the_example_trains_in_tiny_mode_and_resumes(tmp_path):
    text_path = SHAKESPEARE
    if not text_path.exists():
        text_path = tmp_path / "stand_in.txt"
        text_path.write_text(shakespeare_text(60_000), encoding="utf-8")
    out = tmp_path / "out"
    run = run_example("--preset", "tiny", "--data", str(text_path), "--out-dir", str(out), "--no-progress",
                      "--sample-tokens", "10")
    assert run.returncode == 0, run.stderr
    evals = [r for r in read_log(out / "log.jsonl") if r["kind"] == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert load_checkpoint(out / "last").train_state["step"] == 40
    assert (out / "best" / "checkpoint.json").exists()
    assert "done: step 40" in run.stdout and "bits per character" in run.stdout and "--- sample" in run.stdout

    more = run_example("--resume", "--max-steps", "50", "--data", str(text_path), "--out-dir", str(out),
                       "--no-progress", "--sample-tokens", "0")
    assert more.returncode == 0, more.stderr
    assert "resuming at step 40" in more.stdout and "done: step 50" in more.stdout


def test_the_example_explains_an_unavailable_backend(tmp_path):
    if cupy_skip_reason() is None:
        pytest.skip("CuPy works here")
    run = run_example("--backend", "cupy", "--out-dir", str(tmp_path))
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and "pip install" in run.stderr and "Traceback" not in run.stderr
