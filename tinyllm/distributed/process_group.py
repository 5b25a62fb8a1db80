"""The process group: this process's place among the ranks of the job, and the collectives on plain numbers.

One communicator per process, made the first time anything asks (``init``): a ``SingleProcess``
when no launcher started us, ``MPICommunicator`` on the NumPy backend, ``NCCLCommunicator`` on
CuPy. So a plain ``python train.py`` never imports mpi4py, and the same script under
``mpiexec -n 4`` becomes one of four. Choose the backend before the first call here.

    >>> rank(), world_size(), is_main_process()       # a plain run: one process
    (0, 1, True)
    >>> all_reduce_sum([2.5, 3])                       # the sum over one rank
    [2.5, 3.0]

When one rank fails, the others would wait forever for it inside the next collective. So in a
job of several ranks, an exception that nobody catches (``sys.excepthook``), or one that leaves
``train()``, prints its traceback with the rank's number and ends the whole job through the
communicator's ``abort`` (``MPI_Abort``: the launcher kills every rank, on every machine).
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from ..backends import get_backend
from .communicator import Communicator, DistributedError, MPICommunicator, NCCLCommunicator, SingleProcess
from .launcher import detect_launch

_communicator: Communicator | None = None


def init(communicator: Communicator | None = None) -> Communicator:
    """Join the job the launcher started (once; later calls return the same communicator).

    Raises ``DistributedError`` when the launcher asks for several processes but they cannot
    communicate: mpi4py missing, or linked to another MPI than the launcher's.

    ``communicator``: use this one instead from now on. A launcher's world of one is a plain
    run; a check of the engine itself (benchmarks/distributed.py ``--one-rank``) passes an
    ``NCCLCommunicator`` or ``MPICommunicator`` of one rank here, whose collectives do run.
    """
    global _communicator
    if communicator is not None:
        _communicator = communicator
    if _communicator is not None:
        return _communicator
    launch = detect_launch()
    if not launch.distributed:
        _communicator = SingleProcess()
        return _communicator
    backend = get_backend().name
    if backend == "cupy":
        communicator: Communicator = NCCLCommunicator(launch)
    elif launch.kind == "mpi":
        communicator = MPICommunicator(launch)
    else:
        raise DistributedError(
            f"WORLD_SIZE={launch.world_size} asks for {launch.world_size} processes on the {backend} backend, "
            f"which communicates through MPI: launch with `mpiexec -n {launch.world_size} python ...` "
            f"(torchrun-style variables serve the cupy backend, whose gradients travel through NCCL)"
        )
    _communicator = communicator
    sys.excepthook = _abort_on_uncaught_exception
    return communicator


def rank() -> int:
    """This process's number, 0 .. world_size - 1 (0 in a plain run)."""
    return init().rank


def world_size() -> int:
    """How many processes train together (1 in a plain run)."""
    return init().world_size


def is_main_process() -> bool:
    """True on rank 0, the one rank that writes checkpoints and logs and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank has called ``barrier``."""
    init().barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the body on rank 0 first, then on the other ranks: for work that fills a cache on disk.

    Rank 0 builds the files (tokenizer, token files); the others wait at a barrier, then run the
    same body and find the files ready, instead of N processes writing them at once.
    """
    if not is_main_process():
        barrier()  # wait for rank 0 to finish the body
    yield
    if is_main_process():
        barrier()  # let the others in


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """The sum over all ranks of each number, in float64 (one collective for the whole list)."""
    communicator = init()
    if communicator.alone:
        return [float(v) for v in values]
    backend = get_backend()
    buffer = backend.xp.asarray([float(v) for v in values], dtype=backend.xp.float64)  # (n,)
    communicator.all_reduce_sum_(buffer)
    return [float(v) for v in backend.to_host(buffer)]


def all_reduce_mean(value: float) -> float:
    """The mean over all ranks of one number (the step's training loss, for the log)."""
    return all_reduce_sum([value])[0] / world_size()


def abort(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` (with this rank's number) to stderr and end every rank of the job."""
    communicator = init()
    print(f"[rank {communicator.rank} of {communicator.world_size}] {message}", file=sys.stderr, flush=True)
    if communicator.world_size > 1:  # the launcher relays output through processes that the abort kills:
        time.sleep(0.5)  # give it a moment to pass this message on (without it, about 1 in 10 was lost under load)
    communicator.abort(code)


def abort_on_error(error: BaseException) -> None:
    """In a job of several ranks, end them all because ``error`` stopped this one; in a plain run, do nothing.

    ``train()`` calls this for any exception leaving its loop: the other ranks are, or soon will
    be, waiting for this one in a collective, and would wait forever.
    """
    if not _several_ranks():
        return
    details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    abort(f"failed, stopping all {_communicator.world_size} ranks:\n{details.rstrip()}")


def abort_if_distributed(message: str, code: int = 1) -> None:
    """In a job of several ranks, print ``message`` and end every rank with ``code``; in a plain run, do nothing.

    For an error this rank caught and reported itself (the examples turn a user error into one line and an
    exit status): returning would leave the other ranks waiting for this one in a collective forever.
    """
    if _several_ranks():
        abort(message, code)


def _several_ranks() -> bool:
    """True in a job of several ranks that has started (without starting one: a plain run stays plain)."""
    return _communicator is not None and _communicator.world_size > 1


def _abort_on_uncaught_exception(kind: type[BaseException], error: BaseException, tb: object) -> None:
    abort_on_error(error)


__all__ = [
    "DistributedError",
    "abort",
    "abort_if_distributed",
    "abort_on_error",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "init",
    "is_main_process",
    "main_process_first",
    "rank",
    "world_size",
]
