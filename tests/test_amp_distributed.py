"""Mixed precision under mpiexec -n 2: float16 shadows on each rank, float32 masters all-reduced.

The gradient sum over the micro-batches is made in the float32 masters on either side, the
all-reduce averages float32 masters' gradients, and the unscale + overflow check runs after it, so
2 ranks x accumulation 1 must give what 1 process x accumulation 2 gives, as in float32.
"""

from __future__ import annotations

from pathlib import Path

from test_distributed import (  # noqa: F401 (prepared is a fixture)
    MODEL,
    TRAIN,
    largest_relative_difference,
    prepared,
    run_mpiexec,
    write_job,
)

import tinyllm as tl
from tinyllm.checkpoint import load_checkpoint
from tinyllm.data import prepare_tokens
from tinyllm.models import ModelConfig, Transformer
from tinyllm.train import TrainConfig, train

HALF = TRAIN | {"dtype": "float16"}


def test_two_float16_ranks_give_one_float16_process_with_twice_the_accumulation(prepared, tmp_path):  # noqa: F811
    job = write_job(tmp_path, prepared, train=HALF, runs=[{"name": "h"}])
    result = run_mpiexec(["tests/mpi_worker.py", str(job)])
    assert result.returncode == 0, result.stdout + result.stderr
    two_ranks = tmp_path / "out" / "h" / "rank0" / "last"

    data = prepare_tokens(prepared["text"], prepared["tokenizer"], prepared["cache"])
    tl.set_backend("numpy", seed=0)
    one = Transformer(ModelConfig(**MODEL))
    train(one, data, TrainConfig(**(HALF | {"out_dir": str(tmp_path / "one"), "grad_accum_steps": 2})))
    one_process = Path(tmp_path / "one" / "last")

    state = load_checkpoint(two_ranks).train_state
    assert state["world_size"] == 2 and state["grad_scaler"]["growth_tracker"] == HALF["max_steps"]
    assert largest_relative_difference(two_ranks, one_process) == 0  # the mean over micro-batches is taken in float32
