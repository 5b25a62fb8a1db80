"""Make tests/fixtures/grad_scaler.json: what torch.amp.GradScaler does to its scale, step by step.

A one-parameter model; at each step its gradient is finite or infinite (the list ``found_inf``).
We record torch's scale after ``scaler.update()``, its growth tracker, and whether
``scaler.step(optimizer)`` skipped the step (the parameter did not move). tests/test_amp.py feeds
the same flags to tinyllm.amp.GradScaler and expects the same numbers.

    python scripts/make_amp_fixture.py        # needs torch (any build; the CPU one does)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

FOUND_INF = [False, False, False, True, False, True, True, False, False, False, False, False, True, False, False]
SETTINGS = {"init_scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 3}


def main() -> None:
    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", **SETTINGS)
    steps = []
    for found_inf in FOUND_INF:
        optimizer.zero_grad()
        loss = (weight * (float("inf") if found_inf else 1.0)).sum()
        scaler.scale(loss).backward()
        before = weight.item()
        scaler.step(optimizer)
        scaler.update()
        steps.append({"found_inf": found_inf, "skipped": weight.item() == before,
                      "scale": scaler.get_scale(), "growth_tracker": int(scaler._growth_tracker.item())})
    out = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "grad_scaler.json"
    out.write_text(json.dumps({"torch": torch.__version__, "settings": SETTINGS, "steps": steps}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
