"""Optimizers against torch.optim.AdamW trajectories (fixture), SGD, clipping, schedule, state_dict."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import FIXTURES, on_device, to_numpy
from safetensors.numpy import load_file

import tinyllm as tl
from tinyllm.nn import Parameter
from tinyllm.optim import SGD, AdamW, clip_grad_norm_, get_lr

ADAMW = FIXTURES / "reference" / "adamw.safetensors"


def run_adamw(groups_spec: list[dict], prefix: str, state_prefix: str) -> None:
    ref = load_file(ADAMW)
    meta = json.loads((FIXTURES / "reference" / "adamw.json").read_text())
    hp = meta["hyperparameters"]
    params = [Parameter(ref[f"param.step0.p{j}"].copy()) for j in range(meta["n_params"])]
    groups = [{"params": [params[j] for j in g["params"]], "weight_decay": g["weight_decay"]} for g in groups_spec]
    opt = AdamW(groups, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"])
    for step in range(1, meta["steps"] + 1):
        for j, p in enumerate(params):
            p.grad = tl.get_backend().asarray(ref[f"grad.step{step}.p{j}"].copy())
        opt.step()
        for j, p in enumerate(params):
            np.testing.assert_allclose(to_numpy(p.data), ref[f"{prefix}step{step}.p{j}"], rtol=0, atol=1e-6)
    order = [j for g in groups_spec for j in g["params"]]
    for position, j in enumerate(order):
        expected = ref[f"{state_prefix}exp_avg.final.p{j}"]
        np.testing.assert_allclose(to_numpy(opt.state[position]["exp_avg"]), expected, atol=1e-6)


def test_adamw_matches_torch_all_decay() -> None:
    meta = json.loads((FIXTURES / "reference" / "adamw.json").read_text())
    run = meta["runs"]["all_decay"]
    run_adamw(run["param_groups"], run["param_prefix"], run["state_prefix"])


def test_adamw_matches_torch_with_groups() -> None:
    meta = json.loads((FIXTURES / "reference" / "adamw.json").read_text())
    run = meta["runs"]["grouped"]
    run_adamw(run["param_groups"], run["param_prefix"], run["state_prefix"])


def test_adamw_updates_in_place() -> None:
    p = Parameter(np.ones((3, 3), dtype=np.float32))
    before = p.data
    p.grad = tl.get_backend().xp.ones((3, 3), dtype=np.float32)
    AdamW([p], lr=0.1).step()
    assert p.data is before
    assert float(p.data[0, 0]) < 1.0


def test_adamw_state_dict_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((4, 3)) for _ in range(6)]

    def make() -> tuple[Parameter, AdamW]:
        p = Parameter(np.arange(12, dtype=np.float64).reshape(4, 3))
        return p, AdamW([p], lr=0.01, weight_decay=0.1)

    p1, opt1 = make()
    for g in grads:
        p1.grad = on_device(g.copy())
        opt1.step()
    p2, opt2 = make()
    for g in grads[:3]:
        p2.grad = on_device(g.copy())
        opt2.step()
    state = opt2.state_dict()
    p3, opt3 = make()
    p3.data[...] = p2.data
    opt3.load_state_dict(state)
    for g in grads[3:]:
        p3.grad = on_device(g.copy())
        opt3.step()
    np.testing.assert_array_equal(to_numpy(p3.data), to_numpy(p1.data))


def test_optimizer_state_dict_rejects_other_shapes() -> None:
    p = Parameter(np.zeros((2, 2)))
    p.grad = on_device(np.ones((2, 2)))
    opt = AdamW([p])
    opt.step()
    other = AdamW([Parameter(np.zeros((2, 2))), Parameter(np.zeros(3))])
    with pytest.raises(ValueError, match="groups"):
        other.load_state_dict(opt.state_dict())


def test_optimizer_rejects_unknown_group_option() -> None:
    with pytest.raises(ValueError, match="unknown optimizer options"):
        AdamW([{"params": [Parameter(np.zeros(2))], "weight_dacay": 0.1}])


def test_sgd_momentum_matches_formula() -> None:
    p = Parameter(np.array([1.0, 2.0]))
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad = on_device(np.array([1.0, 1.0]))
    opt.step()  # b = g; p = p - 0.1 g
    p.grad = on_device(np.array([1.0, 1.0]))
    opt.step()  # b = 0.9 + 1 = 1.9
    np.testing.assert_allclose(to_numpy(p.data), [1.0 - 0.1 - 0.19, 2.0 - 0.1 - 0.19])


def test_clip_grad_norm_returns_pre_clip_norm_and_scales() -> None:
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(1))
    a.grad, b.grad = on_device(np.array([3.0, 0.0])), on_device(np.array([4.0]))
    norm = clip_grad_norm_([a, b], max_norm=1.0)
    assert norm == pytest.approx(5.0)
    total = math.sqrt(float((a.grad**2).sum() + (b.grad**2).sum()))
    assert total == pytest.approx(1.0, rel=1e-5)
    assert clip_grad_norm_([a, b], max_norm=10.0) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(to_numpy(a.grad), [0.6, 0.0], rtol=1e-5)


def test_get_lr_warmup_cosine_and_floor() -> None:
    assert get_lr(0, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    assert get_lr(9, 1.0, 10, 100, 0.1) == pytest.approx(1.0)
    assert get_lr(55, 1.0, 10, 100, 0.1) == pytest.approx(0.55)
    assert get_lr(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    lrs = [get_lr(s, 1.0, 10, 100, 0.1) for s in range(10, 101)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:]))
