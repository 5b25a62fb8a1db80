"""Make the fixture for AdamW's per-parameter step: torch.optim.AdamW where some parameters have no
gradient on some steps (issue 18 item 14), and one is frozen.

PyTorch keeps a step count per parameter (``optimizer.state[p]["step"]``), advanced only on the
calls of ``step()`` where that parameter has a gradient; the bias correction uses it. A parameter
whose ``.grad`` is None is skipped entirely (no weight decay either), and a frozen parameter
(``requires_grad=False``) never gets optimizer state. This script records that behaviour once so
that tinyllm's tests (tests/test_adamw_per_parameter_step.py) need no torch.

Writes ``tests/fixtures/reference/adamw_sparse.safetensors`` and ``adamw_sparse.json`` (layout in
tests/fixtures/README.md). Deterministic (seed 7, float64, CPU). Any environment with torch and
safetensors runs it, e.g. the development venv::

    /work/venv/bin/python scripts/make_adamw_sparse_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "reference"

torch.set_num_threads(1)

SHAPES = [(4, 3), (5,), (2, 3, 2), (3,)]
STEPS = 8
# Which 1-based steps give each parameter a gradient. p1 first gets one at step 3 (and misses step
# 5), p2 misses steps 3-5 and 7, p3 is frozen (requires_grad=False) and never gets one.
HAS_GRAD = [
    list(range(1, STEPS + 1)),
    [3, 4, 6, 7, 8],
    [1, 2, 6, 8],
    [],
]
FROZEN = [3]
HPARAMS = {"lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8}
GROUPS = [{"params": [0, 2], "weight_decay": 0.1}, {"params": [1, 3], "weight_decay": 0.0}]


def main() -> None:
    gen = torch.Generator().manual_seed(7)
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES] for _ in range(STEPS)]

    params = [p.clone().requires_grad_(j not in FROZEN) for j, p in enumerate(init)]
    groups = [{"params": [params[j] for j in g["params"]], "weight_decay": g["weight_decay"]} for g in GROUPS]
    opt = torch.optim.AdamW(groups, lr=HPARAMS["lr"], betas=tuple(HPARAMS["betas"]), eps=HPARAMS["eps"])

    tensors: dict[str, torch.Tensor] = {f"param.step0.p{j}": p for j, p in enumerate(init)}
    steps_per_call: list[list[int]] = []
    for i in range(1, STEPS + 1):
        for j, p in enumerate(params):
            if i in HAS_GRAD[j]:
                p.grad = grads[i - 1][j].clone()
                tensors[f"grad.step{i}.p{j}"] = grads[i - 1][j]
            else:
                p.grad = None
        opt.step()
        for j, p in enumerate(params):
            tensors[f"param.step{i}.p{j}"] = p.detach().clone()
        steps_per_call.append([int(opt.state[p]["step"]) if p in opt.state else 0 for p in params])
    for j, p in enumerate(params):
        if p in opt.state:
            tensors[f"exp_avg.final.p{j}"] = opt.state[p]["exp_avg"].clone()
            tensors[f"exp_avg_sq.final.p{j}"] = opt.state[p]["exp_avg_sq"].clone()
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(OUT / "adamw_sparse.safetensors"), metadata={"format": "pt"})

    meta = {
        "description": "torch.optim.AdamW with missing gradients and a frozen parameter, float64; "
        "see tests/fixtures/README.md",
        "made_by": "scripts/make_adamw_sparse_fixture.py",
        "torch_version": torch.__version__,
        "shapes": [list(s) for s in SHAPES],
        "steps": STEPS,
        "has_grad": HAS_GRAD,
        "frozen": FROZEN,
        "hyperparameters": HPARAMS,
        "param_groups": GROUPS,
        "param_steps_after_call": steps_per_call,
        "step_indexing": "param.step0 = initial; grad.step{i}.p{j} exists only when p{j} had a gradient "
        "at the i-th optimizer.step() (else .grad was None); param.step{i} = params after that call",
    }
    (OUT / "adamw_sparse.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"adamw_sparse: {len(tensors)} arrays; per-parameter steps at the end {steps_per_call[-1]}")


if __name__ == "__main__":
    main()
