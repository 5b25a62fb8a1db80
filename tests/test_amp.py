"""Mixed precision (tinyllm/amp.py): float16 forward/backward, float32 masters, dynamic loss scaling.

The tests run on the backend under test (TINYLLM_BACKEND; scripts/gpu_check.sh runs them on CuPy).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, to_numpy

import tinyllm as tl
from tinyllm.amp import GradScaler, MixedPrecision, check_backend_runs
from tinyllm.autograd import Tensor
from tinyllm.autograd.ops.cross_entropy import cross_entropy
from tinyllm.backends import backend_name_from_environment
from tinyllm.checkpoint import load_checkpoint
from tinyllm.data import TokenDataset
from tinyllm.models import ModelConfig, Transformer
from tinyllm.nn.fused.attention import scaled_dot_product_attention
from tinyllm.nn.fused.layer_norm import layer_norm
from tinyllm.nn.fused.rms_norm import rms_norm
from tinyllm.train import TrainConfig, configure_optimizer, train, train_step

CONFIG = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)


def batches(n_steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """A learnable stream: each row counts up by a fixed stride mod 64, so the loss falls within a few steps."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n_steps):
        start, stride = rng.integers(0, 64, (4, 1)), rng.integers(1, 4, (4, 1))
        ids = (start + stride * np.arange(17)) % 64  # (4, 17)
        out.append((ids[:, :16], ids[:, 1:]))
    return out


def run(dtype: str, n_steps: int = 8, scale: float | None = None) -> tuple[list[float], Transformer, object, object]:
    tl.set_backend(backend_name_from_environment(), seed=0)
    model = Transformer(CONFIG)
    optimizer = configure_optimizer(model, TrainConfig(lr=1e-2))
    amp = None if dtype == "float32" else MixedPrecision(model, dtype)
    if scale is not None:
        amp.scaler.scale = scale
    losses = [train_step(model, optimizer, [(x, y)], 1e-2, 1.0, 1, amp)[0] for x, y in batches(n_steps)]
    return losses, model, optimizer, amp


def test_a_float16_run_follows_the_float32_run():
    fp32, _, _, _ = run("float32")
    fp16, model, optimizer, amp = run("float16")
    assert fp32[-1] < fp32[0] - 0.3  # it learns
    differences = np.abs(np.array(fp16) - np.array(fp32))
    assert differences.max() < 0.01, (fp16, fp32)  # measured: 0.0016 at most over the 8 steps
    assert differences.max() > 0  # and it really ran in float16
    assert amp.scaler.skipped_steps == 0 and amp.scaler.scale == 2.0**16


def test_masters_and_optimizer_state_stay_float32_and_the_shadow_is_their_float16_copy():
    _, model, optimizer, amp = run("float16", n_steps=2)
    for master, shadow in zip(model.parameters(), amp.shadow.parameters()):
        assert master.dtype == np.float32 and shadow.dtype == np.float16 and shadow.grad is None
        np.testing.assert_array_equal(to_numpy(shadow.data), to_numpy(master.data).astype(np.float16))
    assert all(v.dtype == np.float32 for state in optimizer.state for v in state.values() if hasattr(v, "dtype"))
    logits, loss = amp.shadow(*batches(1)[0])
    assert logits.dtype == np.float16 and loss.dtype == np.float32  # activations in float16, the loss in float32


def test_an_overflowing_gradient_skips_the_step_and_halves_the_scale():
    tl.set_backend(backend_name_from_environment(), seed=0)
    model = Transformer(CONFIG)
    optimizer = configure_optimizer(model, TrainConfig(lr=1e-2))
    amp = MixedPrecision(model, "float16")
    amp.scaler.scale = 2.0**40  # the scaled gradients overflow float16 (largest 65504)
    before = [to_numpy(p.data) for p in model.parameters()]
    (x, y), = batches(1)
    loss, norm = train_step(model, optimizer, [(x, y)], 1e-2, 1.0, 1, amp)
    assert np.isfinite(loss) and norm == np.inf
    assert amp.scaler.scale == 2.0**39 and amp.scaler.skipped_steps == 1 and amp.scaler.growth_tracker == 0
    assert optimizer.step_count == 0 and all(p.grad is None for p in model.parameters())
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(to_numpy(p.data), b)
    skips = 1
    while train_step(model, optimizer, [(x, y)], 1e-2, 1.0, 1, amp)[1] == np.inf:  # halve until the gradients fit
        skips += 1
    assert 2 < skips < 40 and amp.scaler.skipped_steps == skips
    assert amp.scaler.scale == 2.0 ** (40 - skips) and amp.scaler.growth_tracker == 1 and optimizer.step_count == 1


def test_the_scaler_follows_torch_grad_scaler():
    fixture = json.loads((REPO_ROOT / "tests/fixtures/grad_scaler.json").read_text())
    scaler = GradScaler(**fixture["settings"])
    for expected in fixture["steps"]:
        scaler.update(found_inf=expected["found_inf"])
        assert (scaler.scale, scaler.growth_tracker) == (expected["scale"], expected["growth_tracker"]), expected
    assert scaler.skipped_steps == sum(s["skipped"] for s in fixture["steps"]) == 4


def test_the_scaler_by_its_definition():
    scaler = GradScaler(init_scale=2.0**16, growth_interval=2000)
    for _ in range(1999):
        scaler.update(False)
    assert scaler.scale == 2.0**16 and scaler.growth_tracker == 1999
    scaler.update(False)
    assert scaler.scale == 2.0**17 and scaler.growth_tracker == 0
    scaler.update(True)
    assert scaler.scale == 2.0**16 and scaler.growth_tracker == 0
    restored = GradScaler()
    restored.load_state_dict(json.loads(json.dumps(scaler.state_dict())))
    assert restored.state_dict() == scaler.state_dict()
    with pytest.raises(ValueError, match="growth_factor > 1"):
        GradScaler(growth_factor=0.5)


def train_config(out_dir, **changes) -> TrainConfig:
    return TrainConfig(**{"batch_size": 4, "block_size": 16, "grad_accum_steps": 2, "max_steps": 6, "lr": 1e-2,
                          "min_lr": 1e-3, "warmup_steps": 1, "eval_interval": 3, "eval_iters": 1, "log_interval": 1,
                          "out_dir": str(out_dir), "progress": False, "dtype": "float16"} | changes)


def test_checkpoints_keep_float32_masters_and_the_scaler_and_resume_exactly(tmp_path):
    ids = np.concatenate([(s + np.arange(300)) % 64 for s in range(8)]).astype(np.uint16)
    data = TokenDataset(ids[:2000], ids[2000:], 64, 1.0, None)

    def fresh(seed: int) -> Transformer:
        tl.set_backend(backend_name_from_environment(), seed=seed)
        return Transformer(CONFIG)

    uninterrupted = fresh(0)
    result = train(uninterrupted, data, train_config(tmp_path / "a"))
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["loss_scale"] for r in log if r["kind"] == "train"] == [2.0**16] * 6

    first = fresh(0)
    train(first, data, train_config(tmp_path / "b"), stop_at_step=3)
    checkpoint = load_checkpoint(tmp_path / "b" / "last")
    assert checkpoint.train_state["grad_scaler"]["scale"] == 2.0**16
    assert checkpoint.train_state["grad_scaler"]["growth_tracker"] == 3
    assert checkpoint.train_config["dtype"] == "float16"
    assert all(array.dtype == np.float32 for array in checkpoint.model_state.values())
    resumed = fresh(99)
    resumed_result = train(resumed, data, train_config(tmp_path / "b"), checkpoint=checkpoint)
    for (name, a), b in zip(uninterrupted.named_parameters(), resumed.parameters()):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=name)
    assert resumed_result["val_loss"] == result["val_loss"]
    final = load_checkpoint(tmp_path / "b" / "last").train_state["grad_scaler"]
    assert final["growth_tracker"] == 6


def test_bad_dtypes_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"TrainConfig.dtype must be one of \['float32', 'float16', 'bfloat16'\]"):
        TrainConfig(dtype="half")
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # "import ml_dtypes" raises ImportError
    with pytest.raises(ValueError, match="bfloat16 needs the ml_dtypes package .* pip install ml_dtypes"):
        TrainConfig(dtype="bfloat16")


def test_norms_and_the_loss_compute_half_precision_inputs_in_float32():
    backend = tl.set_backend(backend_name_from_environment(), seed=0)
    x32 = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32) * 1000  # x^2 overflows float16
    x = Tensor(backend.asarray(x32.astype(np.float16)), requires_grad=True)
    weight = Tensor(backend.asarray(np.ones(64, np.float16)), requires_grad=True)
    bias = Tensor(backend.asarray(np.zeros(64, np.float16)), requires_grad=True)
    exact = x32.astype(np.float16).astype(np.float64)
    for name, y, expected in [
        ("rms_norm", rms_norm(x, weight, eps=1e-6), exact / np.sqrt((exact**2).mean(-1, keepdims=True))),
        ("layer_norm", layer_norm(x, weight, bias), (exact - exact.mean(-1, keepdims=True)) / exact.std(-1, keepdims=True)),
    ]:
        assert y.dtype == np.float16, name
        np.testing.assert_allclose(to_numpy(y).astype(np.float64), expected, atol=4e-3, err_msg=name)
        (y * Tensor(backend.asarray(np.full((3, 64), 300.0, np.float16)))).sum().backward()  # large loss-scaled grads
        assert x.grad.dtype == np.float16 and np.isfinite(to_numpy(x.grad)).all(), name
        x.grad = weight.grad = bias.grad = None
    logits = Tensor(backend.asarray((x32 / 100).astype(np.float16)), requires_grad=True)  # (3, 64)
    loss = cross_entropy(logits, backend.asarray(np.array([1, 2, 3])))
    assert loss.dtype == np.float32  # times a loss scale of 2**16, a float16 loss would overflow
    (loss * 2.0**16).backward()
    assert logits.grad.dtype == np.float16 and np.isfinite(to_numpy(logits.grad)).all()


def test_bfloat16_runs_on_cupy_and_is_a_clear_error_on_numpy():
    if backend_name_from_environment() == "numpy":  # its matmul turns bfloat16 into float32
        tl.set_backend("numpy", seed=0)
        with pytest.raises(ValueError, match="bfloat16 runs on the cupy backend only: NumPy's matrix product"):
            check_backend_runs("bfloat16")
        check_backend_runs("float16")  # no error
        return
    fp32, _, _, _ = run("float32")  # CuPy 14+ with ml_dtypes (experimental in CuPy): the device check runs this
    bf16, model, _, amp = run("bfloat16")
    assert all(p.dtype.name == "bfloat16" for p in amp.shadow.parameters()) and amp.loss_scale == 1.0
    assert np.abs(np.array(bf16) - np.array(fp32)).max() < 0.05, (bf16, fp32)  # 8 bits of mantissa


def test_float16_attention_draws_its_dropout_mask_and_backpropagates():
    # NumPy's and CuPy's generators draw only float32/float64: the fused attention draws its mask's
    # uniforms in float32 whatever the scores' dtype, so a float16 run with dropout works.
    tl.set_backend(backend_name_from_environment(), seed=3)
    rng = np.random.default_rng(0)
    q, k, v = (Tensor(rng.standard_normal((1, 2, 8, 4)).astype(np.float16), requires_grad=True) for _ in range(3))
    out = scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.5)
    out.sum().backward()
    assert out.dtype == np.float16 and q.grad.dtype == np.float16
    assert np.isfinite(to_numpy(out.data)).all() and np.isfinite(to_numpy(q.grad)).all()
    assert (to_numpy(out.data) == 0).any()  # half of the probabilities dropped: some rows lose all their weight
