"""Reading the launcher's environment: was this process started as one of N, and which one?

A launcher starts the same program N times and tells each copy who it is through environment
variables. Nothing here imports MPI: a plain ``python train.py`` must not pay for it, and the
CuPy backend reads ``local_rank`` to pick its GPU before anything else touches the device.

=====================================  ========================  ==========================  ===================
launcher                               rank                      world size                  rank on this machine
=====================================  ========================  ==========================  ===================
``mpiexec`` of MPICH (and Intel MPI)   ``PMI_RANK``              ``PMI_SIZE``                ``MPI_LOCALRANKID``
``mpirun`` / ``mpiexec`` of Open MPI   ``OMPI_COMM_WORLD_RANK``  ``OMPI_COMM_WORLD_SIZE``    ``OMPI_COMM_WORLD_LOCAL_RANK``
``torchrun`` style (NCCL only)         ``RANK``                  ``WORLD_SIZE``              ``LOCAL_RANK``
=====================================  ========================  ==========================  ===================

The torchrun style also needs ``MASTER_ADDR`` and ``MASTER_PORT``: where rank 0 listens so the
others can fetch NCCL's unique id from it (under ``mpiexec``, MPI itself carries that id).

    >>> detect_launch({"PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1"})
    Launch(kind='mpi', rank=1, world_size=4, local_rank=1, master_addr=None, master_port=None)
    >>> detect_launch({}).world_size     # plain ``python train.py``
    1
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# (rank, world size, local rank) variables of each MPI launcher, in the order they are tried.
MPI_VARIABLES = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),  # Open MPI
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),  # MPICH's hydra, Intel MPI
)
ENV_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # torchrun and the like


@dataclass(frozen=True)
class Launch:
    """Who this process is. ``kind``: "mpi" (started by an MPI launcher), "env" (torchrun-style
    variables) or "single" (no launcher, or a world of one)."""

    kind: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect_launch(environ: Mapping[str, str] | None = None) -> Launch:
    """Read ``environ`` (default ``os.environ``) and say how this process was launched.

    MPI's variables win over torchrun's (a job script may set ``RANK`` for other reasons).
    A world of one is a single process: ``mpiexec -n 1 python train.py`` is ``python train.py``.
    """
    env = os.environ if environ is None else environ
    for rank_var, size_var, local_var in MPI_VARIABLES:
        if size_var in env:
            world_size = _int(env, size_var)
            if world_size <= 1:
                return Launch("single")
            return Launch("mpi", _int(env, rank_var), world_size, _int(env, local_var, default=0))
    if "WORLD_SIZE" in env and _int(env, "WORLD_SIZE") > 1:
        rank, world_size = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={world_size} says this is one of several processes, but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set: set MASTER_ADDR to rank 0's host name and "
                f"MASTER_PORT to a free port on it (torchrun sets both), or launch with mpiexec"
            )
        local_rank = _int(env, "LOCAL_RANK", default=rank)
        return Launch("env", rank, world_size, local_rank, env["MASTER_ADDR"], _int(env, "MASTER_PORT"))
    return Launch("single")


def local_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's index among those on its machine (0 when not distributed): the GPU it should use."""
    return detect_launch(environ).local_rank


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    if name not in env and default is not None:
        return default
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise RuntimeError(
            f"the launcher's environment variable {name} is {env.get(name)!r}, not an integer; "
            f"launch with mpiexec, mpirun or torchrun, which set it"
        ) from None
