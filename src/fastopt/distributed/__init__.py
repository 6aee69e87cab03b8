"""Data-parallel training over MPI processes (and machines): ``Trainer(..., comm=world())``.

    mpiexec -n 4 python train.py                   # every rank runs the same script
    mpiexec -n 8 -hosts a,b python train.py        # 4 ranks on each of two machines

Every rank holds the whole data set; each global batch (``batch_size`` is the GLOBAL
batch) is cut into contiguous shares, one per rank, that differ by at most one row. A
step is the compiled plan's forward, loss and backward on the share (dropout masks of the
share's GLOBAL row indices, batch norm on the global batch's statistics), ONE
``Allreduce`` of the flat gradient arena (plus the batch's loss and an interrupt flag),
then the same clipping and optimizer pass on every rank: N ranks compute what one
process computes with the same global batch, up to the order of floating-point sums.

Install: ``pip install "fastopt[mpi]"`` (mpi4py and the ``mpich`` wheel, which brings
``mpiexec``). See the README, "More than one machine".
"""

from ._data_parallel import DataParallel, shares, share_of

__all__ = ["world", "rank", "size", "DataParallel", "shares", "share_of", "load",
           "gather_shards", "default_threads", "MPI_MISSING"]

MPI_MISSING = ('fastopt.distributed needs mpi4py and an MPI library: '
               'pip install "fastopt[mpi]" (mpi4py with the mpich wheel, which provides '
               'mpiexec)')


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"{MPI_MISSING} ({exc})") from None
    return MPI


def world():
    """The communicator of every process ``mpiexec`` started (mpi4py's ``COMM_WORLD``)."""
    return _mpi().COMM_WORLD


def rank(comm=None):
    """This process's rank in ``comm`` (the world by default)."""
    return (comm if comm is not None else world()).Get_rank()


def size(comm=None):
    """The number of processes in ``comm`` (the world by default)."""
    return (comm if comm is not None else world()).Get_size()


def default_threads(comm):
    """Threads per rank: the physical cores of this host shared by the ranks on it
    (``physical cores // ranks on this host``, at least 1); ``OMP_NUM_THREADS`` wins
    when set."""
    import os

    from ..threads import _physical_cores_available

    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    MPI = _mpi()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, comm.Get_rank())
    try:
        on_host = local.Get_size()
    finally:
        local.Free()
    return max(1, _physical_cores_available() // on_host)


def load(path, comm=None):
    """``fastopt.load`` for every rank of ``comm``: rank 0 reads the file (only it needs
    to see it) and sends its bytes to the others. A saved Trainer comes back training
    data-parallel on ``comm``; a model comes back as it is."""
    import os
    import tempfile

    from ..io import load as _load

    comm = comm if comm is not None else world()
    if comm.Get_rank() == 0:
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError as exc:
            blob = exc
    else:
        blob = None
    blob = comm.bcast(blob, root=0)
    if isinstance(blob, OSError):
        raise blob
    if comm.Get_rank() == 0:
        obj = _load(path)
    else:
        fd, tmp = tempfile.mkstemp(suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            obj = _load(tmp)
        finally:
            os.unlink(tmp)
    if hasattr(obj, "optimizer"):
        obj.distribute(comm)
    return obj


def gather_shards(comm, X, y=None, sample_weight=None):
    """Every rank's rows, concatenated in rank order, on every rank: rank-local shards
    (each rank read its part of the data) made into the one data set that data-parallel
    training shares out again by global batch. numpy arrays, lists or pandas frames;
    ``y`` and ``sample_weight`` may be None (on every rank alike)."""
    import numpy as np

    def join(parts):
        if parts[0] is None:
            if any(p is not None for p in parts):
                raise ValueError("gather_shards: some ranks passed None where others passed "
                                 "data")
            return None
        if hasattr(parts[0], "iloc"):
            import pandas as pd
            return pd.concat(parts, axis=0, ignore_index=True)
        return np.concatenate([np.asarray(p) for p in parts], axis=0)

    every = comm.allgather((X, y, sample_weight))
    return tuple(join([part[k] for part in every]) for k in range(3))
