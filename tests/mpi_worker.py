"""The program tests/test_distributed.py starts with ``mpiexec -n 2``: one rank of a data-parallel job.

    mpiexec -n 2 python tests/mpi_worker.py JOB.json

JOB.json names the prepared data (``text``, ``cache``), the model and training settings, and a
list of ``runs``, each one call of ``train()`` (a fresh run, or a resume from a checkpoint)
writing to ``<out>/rank<r>`` so the test can see which rank wrote what. ``"collectives"``
checks the gradient all-reduce on hand-made gradients first; ``"fail"`` makes rank 1 raise,
inside train() at a given step or before any training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import tinyllm as tl
import tinyllm.distributed as dist
from tinyllm.checkpoint import load_checkpoint
from tinyllm.data import prepare_tokens
from tinyllm.models import ModelConfig, Transformer
from tinyllm.train import TrainConfig, train


def check_collectives(out: Path) -> None:
    """Rank r's gradients are r + 1 + i / 4 (float32, float64); the float16 ones are 60000 and 60064, whose
    sum overflows float16 (largest 65504) but not the float32 it is reduced in; one parameter has a
    gradient on rank 1 only, one on no rank. Tiny buckets force several collectives. Rank 0 saves the results."""
    shapes = [(3, 4), (5,), (7,), (2, 2), (6,), (1,)]
    dtypes = [np.float32, np.float32, np.float16, np.float64, np.float32, np.float32]
    params = [tl.Tensor(np.zeros(s, d), requires_grad=True) for s, d in zip(shapes, dtypes)]
    for i, p in enumerate(params[:4]):
        p.grad = np.full(p.shape, dist.rank() + 1.0 + 0.25 * i, dtype=p.dtype)
    params[2].grad[:] = 60000 + 64 * dist.rank()
    if dist.rank() == 1:
        params[4].grad = np.full(params[4].shape, 4.0, dtype=np.float32)
    dist.all_reduce_gradients(params, bucket_bytes=48)  # at most 12 float32 per bucket
    broadcast = np.full(5, float(dist.rank()), dtype=np.float32)
    weight = tl.Tensor(broadcast, requires_grad=True)
    dist.broadcast_parameters([weight])
    if dist.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        arrays = {f"grad{i}": p.grad for i, p in enumerate(params) if p.grad is not None}
        np.savez(out / "collectives.npz", broadcast=weight.data, none=[p.grad is None for p in params], **arrays)


def failing_after(get_batch, calls: int):  # noqa: ANN001, ANN201
    """``get_batch`` that raises once it has been called ``calls`` times (evaluation draws count too)."""
    count = [0]

    def failing_get_batch(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        count[0] += 1
        if count[0] > calls:
            raise RuntimeError("rank 1 fails on purpose in training")
        return get_batch(*args, **kwargs)

    return failing_get_batch


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(job["out"])
    tl.set_backend("numpy", seed=0)
    if job.get("fail") == "before_training" and dist.rank() == 1:
        raise RuntimeError("rank 1 fails on purpose before training")
    if job.get("collectives"):
        check_collectives(out)
    data = prepare_tokens(job["text"], job["tokenizer"], job["cache"])  # the test built the cache: read only
    for run in job["runs"]:
        tl.set_backend("numpy", seed=run.get("model_seed", 0))
        model = Transformer(ModelConfig(**(job["model"] | run.get("model", {}))))
        checkpoint = load_checkpoint(out / run["resume_from"]) if run.get("resume_from") else None
        config = TrainConfig(**(job["train"] | {"out_dir": str(out / run["name"] / f"rank{dist.rank()}")}))
        if job.get("fail") == "in_training" and dist.rank() == 1:
            data.get_batch = failing_after(data.get_batch, calls=3)
        result = train(model, data, config, checkpoint=checkpoint, stop_at_step=run.get("stop_at_step"))
        print(f"rank {dist.rank()} of {dist.world_size()}: {run['name']} done at step {result['step']}", flush=True)


if __name__ == "__main__":
    main()
