"""The GEMM layer: micro-kernel against the backends per shape class, and each step's GEMM share.

asv: ``MicroKernel`` times one single-threaded call per path (micro-kernel, OpenBLAS,
MKL when installed) on one shape per class; ``StepGemmShare`` times a workload's step and
the same step's GEMMs alone through fastopt's tiled entry point.

As a script (prints the CPU, one table per measurement, ranges over rounds):

    python benchmarks/bench_gemm.py shapes [--dtype float32]    # crossover table
    python benchmarks/bench_gemm.py share [--threads 1 2] [--workloads tiny wide]
                                          [--backends openblas:0 openblas mkl:0 mkl]

(``BACKEND:0``: that backend with the micro-kernel off, i.e. fastopt before it.)
"""

import argparse
import itertools
import os
import platform
import statistics
import sys
import time

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastopt as fo  # noqa: E402
from fastopt import config  # noqa: E402
from fastopt._kernels import _gemm  # noqa: E402
from fastopt._kernels import _testing  # noqa: E402
from fastopt.threads import blas_single_thread, get_num_threads  # noqa: E402

from benchmarks.workloads import (WORKLOADS, data, fastopt_step, fastopt_targets,  # noqa: E402
                                  fastopt_trainer, gemm_calls, gemm_flops)

# One shape per class (m, n, k): the tiny step's products, its n = 1 and k = 1 ends,
# an mnist-sized product and tiles of the wide step.
SHAPE_CLASSES = {
    "tiny 64x64x32": (64, 64, 32),
    "gemv 64x1x64": (64, 1, 64),
    "outer 64x64x1": (64, 64, 1),
    "cube 128": (128, 128, 128),
    "mnist 128x256x784": (128, 256, 784),
    "wide tile 256x256x1024": (256, 256, 1024),
}
TRANS = {"fwd (B^T)": (False, True), "dW (A^T)": (True, False), "dX (none)": (False, False)}


def _paths():
    paths = ["micro", "openblas"]
    if config._mkl.load():
        paths.append("mkl")
    return paths


def _operands(m, n, k, trans_a, trans_b, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return A, B, np.empty((m, n), dtype)


class MicroKernel:
    params = (list(SHAPE_CLASSES), list(TRANS), ["micro", "openblas", "mkl"])
    param_names = ["shape", "case", "path"]

    def setup(self, shape, case, path):
        if path not in _paths():
            raise NotImplementedError("MKL is not installed")
        m, n, k = SHAPE_CLASSES[shape]
        self.trans = TRANS[case]
        self.A, self.B, self.C = _operands(m, n, k, *self.trans)
        self.reps = max(1, int(2e6 / (m * n * k + 2000)))
        self.path = path
        blas_single_thread.__enter__()

    def teardown(self, shape, case, path):
        blas_single_thread.__exit__(None, None, None)

    def time_gemm(self, shape, case, path):
        _gemm.gemm(self.A, self.B, self.C, *self.trans, path=self.path, repeat=self.reps)


def _step_gemms(w):
    """Buffers and a runner for the step's GEMMs through _testing.gemm_rowmajor."""
    ops = []
    for m, n, k, what in gemm_calls(w):
        trans = (False, True) if what.startswith("fwd") else (
            (True, False) if what.startswith("dW") else (False, False))
        ops.append((*_operands(m, n, k, *trans), *trans))

    def run():
        for A, B, C, ta, tb in ops:
            _testing.gemm_rowmajor(A, B, C, ta, tb, n_threads=get_num_threads())
    return run


class StepGemmShare:
    params = (["tiny", "wide"], [1, 2])
    param_names = ["workload", "threads"]
    timeout = 120

    def setup(self, workload, threads):
        w = WORKLOADS[workload]
        self.trainer = fastopt_trainer(w)
        X, y = data(w)
        self.X, self.T = X, fastopt_targets(self.trainer, y)
        self.gemms = _step_gemms(w)
        self.ctx = fo.threads(threads)
        self.ctx.__enter__()
        blas_single_thread.__enter__()
        fastopt_step(self.trainer, self.X, self.T)

    def teardown(self, workload, threads):
        blas_single_thread.__exit__(None, None, None)
        self.ctx.__exit__(None, None, None)

    def time_step(self, workload, threads):
        fastopt_step(self.trainer, self.X, self.T)

    def time_gemms_alone(self, workload, threads):
        self.gemms()


# ---------------------------------------------------------------- script

def cpu_model():
    try:
        import subprocess
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return platform.processor()


def _timed(fn, reps, rounds):
    fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out.append((time.perf_counter() - t0) / reps)
    return out


def _range(ts, scale=1e6):
    ts = sorted(ts)
    return f"{ts[0] * scale:.2f}–{ts[len(ts) // 2] * scale:.2f}"


def _range_auto(ts):
    unit, scale = ("µs", 1e6) if max(ts) < 1e-3 else ("ms", 1e3)
    return _range(ts, scale) + " " + unit


def shapes_table(dtype, rounds):
    print(f"# single-threaded calls, {np.dtype(dtype).name}, µs: best–median of {rounds} rounds")
    paths = _paths()
    print("| shape | case | " + " | ".join(paths) + " | best backend / micro |")
    print("| --- | --- |" + " ---: |" * (len(paths) + 1))
    with blas_single_thread:
        for (name, (m, n, k)), (case, trans) in itertools.product(SHAPE_CLASSES.items(),
                                                                  TRANS.items()):
            A, B, C = _operands(m, n, k, *trans, dtype=dtype)
            reps = max(1, int(2e6 / (m * n * k + 2000)))
            res = {}
            for p in paths:
                res[p] = [t / reps for t in _timed(
                    lambda: _gemm.gemm(A, B, C, *trans, path=p, repeat=reps), 1, rounds)]
            best = min(min(res[p]) for p in paths if p != "micro")
            cells = " | ".join(_range(res[p]) for p in paths)
            print(f"| {name} | {case} | {cells} | {best / min(res['micro']):.2f}x |")


def gemm_peak(threads, n=1024, rounds=5):
    """sgemm GFLOP/s of an n³ product through fastopt's tiled entry point (best round)."""
    A, B, C = _operands(n, n, n, False, False)
    with fo.threads(threads), blas_single_thread:
        nt = get_num_threads()
        best = min(_timed(lambda: _testing.gemm_rowmajor(A, B, C, False, False, n_threads=nt),
                          1, rounds))
    return 2 * n ** 3 / best / 1e9


def share_table(workloads, threads_list, backends, rounds):
    print("# step vs its GEMMs alone (fastopt's tiled entry point): best–median of "
          f"{rounds} rounds")
    print("| workload | threads | backend | micro limit | step | GEMMs alone | GEMM share | "
          "GEMM GFLOP/s | 1024³ peak GFLOP/s | step / its FLOPs at that peak |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, threads, spec in itertools.product(workloads, threads_list, backends):
        # "openblas:0" = the backend with the micro-kernel off (fastopt before it).
        backend, _, limit = spec.partition(":")
        if fo.set_gemm_backend(backend) != backend:
            continue
        if limit:
            _gemm.set_micro_limit(int(limit))
        w = WORKLOADS[name]
        trainer = fastopt_trainer(w)
        X, y = data(w)
        T = fastopt_targets(trainer, y)
        gemms = _step_gemms(w)
        flops = gemm_flops(w)
        reps = max(1, int(0.05 / max(flops / 100e9, 1e-6)))
        with fo.threads(threads), blas_single_thread:
            step, alone = [], []
            for _ in range(rounds):  # interleaved rounds: both see the same noise
                step += _timed(lambda: fastopt_step(trainer, X, T), reps, 1)
                alone += _timed(gemms, reps, 1)
        share = statistics.median(alone) / statistics.median(step)
        peak = gemm_peak(threads)
        print(f"| {name} | {threads} | {spec} | {_gemm.get_micro_limit()} | "
              f"{_range_auto(step)} | {_range_auto(alone)} | {share:.0%} | "
              f"{flops / min(alone) / 1e9:.0f} | {peak:.0f} | "
              f"{statistics.median(step) / (flops / (peak * 1e9)):.2f}x |", flush=True)
    fo.set_gemm_backend("auto")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["shapes", "share"])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workloads", nargs="+", default=["tiny", "wide"])
    ap.add_argument("--backends", nargs="+", default=None)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    print(f"CPU: {cpu_model()}; micro-kernel ISA {_gemm.micro_isa()}; "
          f"OpenBLAS {config._openblas_info().get('version')} "
          f"{config._openblas_info().get('architecture')}; "
          f"MKL {config._mkl.version if config._mkl.load() else 'not installed'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    if args.what == "shapes":
        shapes_table(np.dtype(args.dtype).type, args.rounds)
    else:
        backends = args.backends or (["openblas:0", "openblas"]
                                     + (["mkl:0", "mkl"] if config._mkl.load() else []))
        share_table(args.workloads, args.threads, backends, args.rounds)


if __name__ == "__main__":
    main()
