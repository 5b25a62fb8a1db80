"""AdamW counts a step per parameter, only when that parameter has a gradient, as torch.optim.AdamW
(issue 18 item 14); optimizers skip parameters whose ``.grad`` is None, frozen ones included (issue 15).

The torch trajectory is a committed fixture made by scripts/make_adamw_sparse_fixture.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES, on_device, to_numpy
from safetensors.numpy import load_file

import tinyllm as tl
from tinyllm.checkpoint import load_checkpoint, restore, save_checkpoint
from tinyllm.models import ModelConfig, Transformer
from tinyllm.nn import Parameter
from tinyllm.optim import SGD, AdamW

SPARSE = FIXTURES / "reference" / "adamw_sparse.safetensors"
SPARSE_META = FIXTURES / "reference" / "adamw_sparse.json"


def sparse_setup() -> tuple[dict, dict, list[Parameter], AdamW]:
    ref = load_file(SPARSE)
    meta = json.loads(SPARSE_META.read_text())
    backend = tl.get_backend()
    params = [
        Parameter(backend.asarray(ref[f"param.step0.p{j}"].copy()), requires_grad=j not in meta["frozen"])
        for j in range(len(meta["shapes"]))
    ]
    groups = [
        {"params": [params[j] for j in g["params"]], "weight_decay": g["weight_decay"]} for g in meta["param_groups"]
    ]
    hp = meta["hyperparameters"]
    return ref, meta, params, AdamW(groups, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"])


def set_grads(ref: dict, params: list[Parameter], step: int) -> None:
    """The gradients of the fixture's `step`-th call; None where torch's parameter had none."""
    for j, p in enumerate(params):
        key = f"grad.step{step}.p{j}"
        p.grad = tl.get_backend().asarray(ref[key].copy()) if key in ref else None


def position(meta: dict, j: int) -> int:
    """Where parameter j sits in the optimizer's order (groups in order, then params in each)."""
    return [k for g in meta["param_groups"] for k in g["params"]].index(j)


def test_adamw_matches_torch_when_some_parameters_have_no_gradient() -> None:
    ref, meta, params, opt = sparse_setup()
    for step in range(1, meta["steps"] + 1):
        set_grads(ref, params, step)
        opt.step()
        for j, p in enumerate(params):
            np.testing.assert_allclose(
                to_numpy(p.data), ref[f"param.step{step}.p{j}"], rtol=0, atol=1e-12, err_msg=f"p{j} after step {step}"
            )
        expected_steps = meta["param_steps_after_call"][step - 1]
        assert [opt.param_steps[position(meta, j)] for j in range(len(params))] == expected_steps
    for j in range(len(params)):
        state = opt.state[position(meta, j)]
        if j in meta["frozen"]:
            assert state == {}  # a frozen parameter gets no moments, as in torch
            np.testing.assert_array_equal(to_numpy(params[j].data), ref[f"param.step0.p{j}"])
            continue
        for name in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(to_numpy(state[name]), ref[f"{name}.final.p{j}"], rtol=0, atol=1e-12)


def test_a_parameter_whose_first_gradient_comes_at_step_3_moves_lr() -> None:
    """The issue's numbers: with lr 0.1 and no decay, the first update of any parameter is lr * g / |g|
    (bias correction with its own t = 1), so it moves 0.1; a global t = 3 moved it 0.058."""
    early, late = Parameter(np.zeros(1)), Parameter(np.zeros(1))
    opt = AdamW([early, late], lr=0.1, betas=(0.9, 0.999), weight_decay=0.0)
    for step in range(1, 4):
        early.grad = on_device(np.array([1.0]))
        late.grad = on_device(np.array([1.0])) if step == 3 else None
        opt.step()
    assert float(late.data[0]) == pytest.approx(-0.1, abs=1e-6)
    assert opt.param_steps == [3, 1]


def test_optimizers_accept_frozen_parameters_and_skip_them() -> None:
    """AdamW(model.parameters()) on a partly frozen model works, as in PyTorch: frozen ones are left alone."""
    for make in (lambda ps: AdamW(ps, lr=0.1, weight_decay=0.1), lambda ps: SGD(ps, lr=0.1, momentum=0.9)):
        frozen = Parameter(np.ones(2), requires_grad=False)
        trained = Parameter(np.ones(2))
        opt = make([frozen, trained])
        for _ in range(2):
            trained.grad = on_device(np.ones(2))
            opt.step()
        np.testing.assert_array_equal(to_numpy(frozen.data), [1.0, 1.0])
        assert float(trained.data[0]) < 1.0
        assert opt.state[0] == {}


def test_optimizer_still_rejects_things_that_are_not_tensors() -> None:
    with pytest.raises(TypeError, match="must be Tensors"):
        AdamW([np.zeros(2)])


# ---------------------------------------------------------------- checkpoints

CONFIG = ModelConfig(vocab_size=32, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=8)


def sparse_training(model: Transformer, opt: AdamW, steps: range) -> None:
    """Steps where parameters have no gradient: parameter k joins at step k % 3 and skips steps where (k + s) % 4 == 0."""
    rng = np.random.default_rng(0)
    grads = {s: [rng.standard_normal(p.shape).astype(p.dtype) for p in model.parameters()] for s in range(max(steps) + 1)}
    for s in steps:
        for k, p in enumerate(model.parameters()):
            p.grad = None if s < k % 3 or (k + s) % 4 == 0 else tl.get_backend().asarray(grads[s][k])
        opt.step()


def fresh(seed: int) -> tuple[Transformer, AdamW]:
    tl.set_backend(tl.get_backend().name, seed=seed)
    model = Transformer(CONFIG)
    return model, AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


def test_checkpoint_keeps_the_per_parameter_steps(tmp_path) -> None:
    straight, opt_straight = fresh(0)
    sparse_training(straight, opt_straight, range(6))

    first, opt_first = fresh(0)
    sparse_training(first, opt_first, range(3))
    assert len(set(opt_first.param_steps)) > 1  # the steps really differ between parameters
    save_checkpoint(tmp_path / "ckpt", first, opt_first)
    resumed, opt_resumed = fresh(1)
    restore(load_checkpoint(tmp_path / "ckpt"), resumed, opt_resumed)
    assert opt_resumed.param_steps == opt_first.param_steps
    sparse_training(resumed, opt_resumed, range(3, 6))

    assert opt_resumed.param_steps == opt_straight.param_steps
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(to_numpy(b), to_numpy(a))


class OldAdamW(AdamW):
    """Writes the optimizer state as tinyllm did before per-parameter steps: moments only, and the
    single global step in the manifest (``state_dict()["step"]``)."""

    def state_dict(self) -> dict:
        state = super().state_dict()
        for values in state["state"].values():
            values.pop("step", None)
        return state


def test_an_old_checkpoint_with_one_global_step_still_loads(tmp_path) -> None:
    # Every parameter has a gradient at every step here, which is all the old code did right; the old
    # global step then equals every per-parameter step, so resuming must continue exactly.
    def dense(model: Transformer, opt: AdamW, steps: range) -> None:
        rng = np.random.default_rng(1)
        grads = {s: [rng.standard_normal(p.shape).astype(p.dtype) for p in model.parameters()] for s in range(6)}
        for s in steps:
            for k, p in enumerate(model.parameters()):
                p.grad = tl.get_backend().asarray(grads[s][k])
            opt.step()

    straight, opt_straight = fresh(0)
    dense(straight, opt_straight, range(6))

    old_model, _ = fresh(0)
    old_opt = OldAdamW(old_model.parameters(), lr=1e-2, weight_decay=0.1)
    dense(old_model, old_opt, range(4))
    save_checkpoint(tmp_path / "old", old_model, old_opt)
    saved = load_checkpoint(tmp_path / "old").optimizer_state
    assert saved["step"] == 4 and all("step" not in values for values in saved["state"].values())

    resumed, opt_resumed = fresh(1)
    restore(load_checkpoint(tmp_path / "old"), resumed, opt_resumed)
    assert opt_resumed.param_steps == [4] * len(resumed.parameters())
    dense(resumed, opt_resumed, range(4, 6))
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(to_numpy(b), to_numpy(a))


def test_a_bad_saved_step_is_refused() -> None:
    p = Parameter(np.zeros(2))
    p.grad = on_device(np.ones(2))
    opt = AdamW([p])
    opt.step()
    state = opt.state_dict()
    state["state"][0]["step"] = np.array([1.5])
    with pytest.raises(ValueError, match="step of parameter 0"):
        AdamW([Parameter(np.zeros(2))]).load_state_dict(state)
