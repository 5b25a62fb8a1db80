"""Data-parallel training: N processes, one model each, one global batch shared among them.

Each rank (process) holds a full copy of the model and computes the gradient on its share of
every global batch; an all-reduce averages the gradients, so every rank takes the same
optimizer step and the copies stay equal. ``tinyllm.train.train`` does all of this by itself
when a launcher started it, so the same script runs alone or as N ranks::

    python examples/train_shakespeare.py                  # one process
    mpiexec -n 4 python examples/train_shakespeare.py     # four ranks, 4x the global batch per step

The pieces, one file each (read in this order; docs/distributed.md explains the why):

- ``launcher.py``: who am I? Rank and world size from mpiexec's, mpirun's or torchrun's variables.
- ``communicator.py``: the collectives, on MPI (mpi4py, NumPy arrays) or NCCL (CuPy, GPU arrays).
- ``process_group.py``: ``rank``, ``world_size``, ``is_main_process``, ``barrier``, sums of numbers,
  and ending every rank when one fails.
- ``buckets.py``: ``all_reduce_gradients`` (a few flat buckets, one collective each, then the
  mean) and ``broadcast_parameters``.
- ``sharding.py``: which micro-batches are this rank's, with data and dropout independent of N.

    >>> import tinyllm.distributed as dist
    >>> dist.world_size(), dist.is_main_process()    # a plain run
    (1, True)
"""

from .buckets import BUCKET_BYTES, all_reduce_gradients, broadcast_parameters, plan_buckets
from .communicator import DistributedError
from .launcher import Launch, detect_launch, local_rank
from .process_group import (
    abort,
    abort_if_distributed,
    abort_on_error,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    init,
    is_main_process,
    main_process_first,
    rank,
    world_size,
)
from .sharding import is_my_share, local_micro_batches, micro_batch_seed, resumed_grad_accum_steps

__all__ = [
    "BUCKET_BYTES",
    "DistributedError",
    "Launch",
    "abort",
    "abort_if_distributed",
    "abort_on_error",
    "all_reduce_gradients",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "broadcast_parameters",
    "detect_launch",
    "init",
    "is_main_process",
    "is_my_share",
    "local_micro_batches",
    "local_rank",
    "main_process_first",
    "micro_batch_seed",
    "plan_buckets",
    "rank",
    "resumed_grad_accum_steps",
    "world_size",
]
