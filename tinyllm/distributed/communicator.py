"""Communicators: the few collective operations data parallelism needs, on MPI or on NCCL.

We write no communication layer of our own. Each class below wraps an engine that HPC and deep
learning already trust, behind the same five methods:

=====================  ===============================================================
``all_reduce_sum_(a)``  every rank's ``a`` becomes the elementwise sum over all ranks, in place
``broadcast_(a, root)`` every rank's ``a`` becomes rank ``root``'s ``a``, in place
``barrier()``           wait until every rank has arrived here
``abort(code)``         end every rank of the job now (a failing rank must not leave the
                        others waiting forever inside a collective)
``rank, world_size``    who this process is, among how many
=====================  ===============================================================

- ``MPICommunicator``: mpi4py on host (NumPy) arrays. ``mpiexec`` starts the processes;
  ``Allreduce`` with ``MPI.IN_PLACE`` sums a buffer without a second copy.
- ``NCCLCommunicator``: NCCL through CuPy (``cupyx.distributed``) on GPU arrays: the reduction
  runs GPU to GPU over NVLink or the network, never through the host. NCCL needs every rank to
  share one "unique id" made by rank 0: under ``mpiexec`` MPI broadcasts it (as llm.c and
  ChainerMN do); with torchrun-style variables rank 0 serves it over TCP at MASTER_ADDR.
  **Written from CuPy's documented API and not yet run on a GPU.**
- ``SingleProcess``: a world of one, where every collective is the identity.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from .launcher import Launch

MPI_INSTALL_HINT = (
    'install it with `pip install "tinyllm[mpi]"` (mpi4py and the MPICH wheel, which brings mpiexec), '
    "or run one process without mpiexec"
)


class DistributedError(RuntimeError):
    """Distributed training cannot start as launched; the message says what to change."""


class Communicator:
    """The interface; see the module docstring."""

    name = "base"
    rank = 0
    world_size = 1

    def all_reduce_sum_(self, buffer: Any) -> None:
        raise NotImplementedError

    def broadcast_(self, buffer: Any, root: int = 0) -> None:
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def abort(self, code: int = 1) -> NoReturn:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} rank {self.rank} of {self.world_size}>"


class SingleProcess(Communicator):
    """One process: the sum over one rank is the array itself, so every collective does nothing."""

    name = "single"

    def all_reduce_sum_(self, buffer: Any) -> None:
        pass

    def broadcast_(self, buffer: Any, root: int = 0) -> None:
        pass

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> NoReturn:
        os._exit(code)


def import_mpi(launch: Launch) -> Any:
    """``mpi4py.MPI``, or a ``DistributedError`` that says which launcher needs it and how to install it."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(
            f"this process is rank {launch.rank} of {launch.world_size} started by an MPI launcher "
            f"(mpiexec/mpirun set its environment), but mpi4py is not installed, so the processes cannot "
            f"talk to each other and each would train alone: {MPI_INSTALL_HINT}"
        ) from None
    return MPI


class MPICommunicator(Communicator):
    """MPI's ``COMM_WORLD`` through mpi4py, for NumPy arrays."""

    name = "mpi"

    def __init__(self, launch: Launch) -> None:
        self.MPI = import_mpi(launch)  # importing mpi4py.MPI initialises MPI (and finalises it at exit)
        self.comm = self.MPI.COMM_WORLD
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        if self.world_size != launch.world_size:
            # The classic mix-up: mpi4py linked to one MPI, the job started by another's mpiexec.
            raise DistributedError(
                f"the launcher started {launch.world_size} processes, but MPI in this process sees a world of "
                f"{self.world_size}: mpi4py is linked to a different MPI ({self.MPI.Get_library_version().split()[0]}) "
                f"than the mpiexec that started it. Use the mpiexec of the same installation (with "
                f'`pip install "tinyllm[mpi]"`, the one next to this Python: {os.path.dirname(sys.executable)}/mpiexec)'
            )

    def all_reduce_sum_(self, buffer: Any) -> None:
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)

    def broadcast_(self, buffer: Any, root: int = 0) -> None:
        self.comm.Bcast(buffer, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> NoReturn:
        self.comm.Abort(code)  # the launcher kills every rank, on every machine
        os._exit(code)  # not reached


class NCCLCommunicator(Communicator):
    """NCCL through ``cupyx.distributed``, for CuPy arrays. Untested on a GPU (none was available).

    The backend must already use this rank's GPU (the CuPy backend selects ``local_rank`` when
    it is created under a launcher), because an NCCL communicator belongs to the current device.
    """

    name = "nccl"

    def __init__(self, launch: Launch) -> None:
        import cupyx.distributed

        self.rank, self.world_size = launch.rank, launch.world_size
        self.MPI = None
        if launch.kind == "mpi":
            # MPI carries NCCL's unique id from rank 0 to the others, and can abort the whole job.
            self.MPI = import_mpi(launch)
            self.comm = cupyx.distributed.init_process_group(self.world_size, self.rank, use_mpi=True)
        else:
            self.comm = cupyx.distributed.init_process_group(
                self.world_size, self.rank, host=launch.master_addr, port=rendezvous_port(launch)
            )

    def all_reduce_sum_(self, buffer: Any) -> None:
        self.comm.all_reduce(buffer, buffer, op="sum")  # in place: NCCL allows sendbuff == recvbuff

    def broadcast_(self, buffer: Any, root: int = 0) -> None:
        self.comm.broadcast(buffer, root)

    def barrier(self) -> None:
        self.comm.barrier()

    def abort(self, code: int = 1) -> NoReturn:
        if self.MPI is not None:
            self.MPI.COMM_WORLD.Abort(code)
        os._exit(code)  # torchrun notices a worker that died and stops the others


def rendezvous_port(launch: Launch) -> int:
    """The port where rank 0 serves NCCL's unique id: ``TINYLLM_NCCL_PORT``, else ``MASTER_PORT``.

    Under torchrun itself (``TORCHELASTIC_RUN_ID`` is set) torch's own store already listens on
    MASTER_PORT, so MASTER_PORT + 1 is used instead.
    """
    if os.environ.get("TINYLLM_NCCL_PORT"):
        return int(os.environ["TINYLLM_NCCL_PORT"])
    assert launch.master_port is not None
    return launch.master_port + (1 if os.environ.get("TORCHELASTIC_RUN_ID") else 0)
