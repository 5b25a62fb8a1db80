"""Sharing the work of one step among the ranks so that the result does not depend on how many there are.

One optimizer step uses a *global batch* of ``grad_accum_steps x world_size`` micro-batches of
``batch_size`` sequences each. Micro-batch i goes to rank ``i % world_size``::

    global micro-batches   0   1   2   3   4   5   6   7        (grad_accum_steps 4, 2 ranks)
    rank 0 computes        0       2       4       6
    rank 1 computes            1       3       5       7

Two things make the run the same for any number of ranks with the same global batch (1
process with grad_accum_steps 8, 2 ranks with 4, 4 ranks with 2, 8 ranks with 1):

- the data: every rank draws the offsets of *every* micro-batch from the host generator of the
  batches and keeps its own, so all ranks' generators stay in step with a single process's
  (drawing offsets is cheap; the forward and backward passes are what is shared);
- the dropout masks: while micro-batch i is computed, the backend's generator is one seeded by
  (seed, step, i) alone, so the masks of micro-batch i do not depend on which rank draws them
  (nor on whether the run was resumed: CuPy cannot save a generator's state, so none is saved).

    >>> [i for i in range(8) if is_my_share(i)]      # a plain run does everything
    [0, 1, 2, 3, 4, 5, 6, 7]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..backends import get_backend
from .process_group import rank, world_size


def is_my_share(index: int) -> bool:
    """True when item ``index`` of a shared loop (micro-batch, evaluation batch) is this rank's to compute."""
    return index % world_size() == rank()


def micro_batch_seed(seed: int, step: int, index: int) -> int:
    """The seed of micro-batch ``index`` of optimizer step ``step``: a hash of the three numbers.

    NumPy's ``SeedSequence`` mixes them so that neighbouring (step, index) pairs give unrelated
    streams: ``micro_batch_seed(1337, 0, 1) != micro_batch_seed(1337, 1, 0)``.
    """
    entropy = [value % 2**64 for value in (seed, step, index)]  # SeedSequence wants non-negative integers
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])  # 32 bits: any backend's generator takes it


def local_micro_batches(
    data: Any, batch_size: int, block_size: int, grad_accum_steps: int, seed: int, step: int, rng: np.random.Generator
) -> Iterator[tuple[Any, Any]]:
    """Yield this rank's ``grad_accum_steps`` micro-batches ``(x, y)``, each (batch_size, block_size), of step ``step``.

    ``data`` is a ``TokenDataset``; ``rng`` is the host generator of the batch offsets (the one a
    checkpoint saves), from which every rank draws every micro-batch of the global batch. While
    the body of the caller's loop runs for micro-batch i, the backend's generator (dropout) is
    one seeded by ``micro_batch_seed(seed, step, i)``.
    """
    backend = get_backend()
    n_ranks, me = world_size(), rank()
    for index in range(grad_accum_steps * n_ranks):  # every micro-batch of the global batch
        x, y = data.get_batch("train", batch_size, block_size, rng=rng)  # (B, T) each; drawn by every rank
        if index % n_ranks != me:
            continue  # another rank's share
        backend.seed(micro_batch_seed(seed, step, index))  # this micro-batch's dropout masks, on any rank
        yield x, y


def resumed_grad_accum_steps(saved_grad_accum_steps: int, saved_world_size: int) -> int:
    """The per-rank ``grad_accum_steps`` that keeps a checkpoint's global batch on this run's number of ranks.

    A run saved by 2 ranks with grad_accum_steps 2 had 4 micro-batches a step; resumed on 1
    process it needs 4, on 4 ranks 1. Raises ``ValueError`` when the ranks cannot share them evenly.
    """
    global_micro_batches = saved_grad_accum_steps * saved_world_size
    n_ranks = world_size()
    if global_micro_batches % n_ranks:
        divisors = [n for n in range(1, global_micro_batches + 1) if global_micro_batches % n == 0]
        raise ValueError(
            f"the checkpoint's global batch has {global_micro_batches} micro-batches a step "
            f"({saved_world_size} rank(s) x grad_accum_steps {saved_grad_accum_steps}), which {n_ranks} ranks "
            f"cannot share evenly: resume on {', '.join(map(str, divisors))} rank(s)"
        )
    return global_micro_batches // n_ranks
