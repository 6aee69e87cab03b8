"""Data-parallel scaling measurements (README, "More than one machine").

    python benchmarks/distributed_scaling.py epoch [--rounds 3]        # 1 process
    mpiexec -n 2 python benchmarks/distributed_scaling.py epoch        # 2 ranks
    mpiexec -n 2 python benchmarks/distributed_scaling.py allreduce    # loopback Allreduce
    python benchmarks/distributed_scaling.py step --workload wide      # compute per step

``epoch``: one epoch of 60,000 random 784-feature rows through the mnist workload
(784→256→128→10, Dense+BN+relu+Dropout(0.2), Adam, batch 128; benchmarks/workloads.py),
``Trainer.fit``, after a short warm-up; under mpiexec data-parallel (global batch 128).
``allreduce``: Allreduce (sum, in place) of a float32 buffer the size of the mnist arena
(235,914) and of the wide arena (6,316,042). ``step``: a training step's time on one
process (the compute term of the README's model). Threads: OMP_NUM_THREADS, else
fastopt's default (physical cores // ranks on the host). Prints one JSON line (rank 0).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.workloads import WORKLOADS, data, fastopt_model, fastopt_optimizer  # noqa: E402


def _comm():
    if int(os.environ.get("PMI_SIZE", "1")) > 1:
        from fastopt.distributed import world
        return world()
    return None


def epoch(args):
    import fastopt as fo

    comm = _comm()
    w = WORKLOADS["mnist"]
    X, y = data(w, rows=args.rows, seed=1)
    trainer = fo.Trainer(fastopt_model(w), w.loss, fastopt_optimizer(w), comm=comm)
    trainer.fit(X[:1280], y[:1280], epochs=1, batch_size=w.batch, verbose=0)   # warm-up
    times = []
    for _ in range(args.rounds):
        if comm is not None:
            comm.Barrier()
        t0 = time.perf_counter()
        trainer.fit(X, y, epochs=1, batch_size=w.batch, seed=0, verbose=0)
        times.append(time.perf_counter() - t0)
    return {"what": "epoch", "ranks": 1 if comm is None else comm.size,
            "threads": fo.get_num_threads(), "rows": args.rows, "seconds": times}


def allreduce(args):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    out = {"what": "allreduce", "ranks": comm.size}
    for name, n in (("mnist", 235914), ("wide", 6316042)):
        buf = np.ones(n, np.float32)
        reps = args.reps if n < 10 ** 6 else max(5, args.reps // 20)
        for _ in range(5):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        times = []
        for _ in range(reps):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        times.sort()
        out[name] = {"params": n, "median_ms": 1e3 * times[len(times) // 2],
                     "min_ms": 1e3 * times[0], "p90_ms": 1e3 * times[int(0.9 * len(times))]}
    return out


def step(args):
    import fastopt as fo

    w = WORKLOADS[args.workload]
    X, y = data(w, rows=w.batch, seed=1)
    trainer = fo.Trainer(fastopt_model(w), w.loss, fastopt_optimizer(w))
    for _ in range(3):
        trainer._train_step(X, trainer.loss.prepare_targets(y, w.sizes[-1], X.dtype))
    T = trainer.loss.prepare_targets(y, w.sizes[-1], X.dtype)
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        trainer._train_step(X, T)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"what": "step", "workload": w.name, "batch": w.batch,
            "threads": fo.get_num_threads(), "params": trainer.model.arena.size,
            "median_ms": 1e3 * times[len(times) // 2], "min_ms": 1e3 * times[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("epoch", "allreduce", "step"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--workload", default="mnist")
    args = ap.parse_args()
    result = {"epoch": epoch, "allreduce": allreduce, "step": step}[args.what](args)
    rank = int(os.environ.get("PMI_RANK", "0"))
    if rank == 0:
        result["loadavg"] = os.getloadavg()
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
