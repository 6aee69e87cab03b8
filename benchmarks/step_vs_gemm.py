"""The foundation bar: a whole training step against its GEMMs alone, side by side.

784-256-128-10 relu MLP, softmax cross-entropy, plain SGD, batch 128, float32. The floor
is the step's 8 GEMMs (3 forward, 3 dW, 2 dX; the input gradient is not needed) through
scipy's sgemm on preallocated Fortran-ordered buffers (no copies), with scipy's BLAS at
the same thread count. Interleaved rounds, medians.

    python benchmarks/step_vs_gemm.py [--rounds 30] [--steps 50]
"""

import argparse
import statistics
import time

import numpy as np
from scipy.linalg import blas
from threadpoolctl import threadpool_limits

import fastopt as fo
from fastopt.threads import blas_single_thread

SIZES = [784, 256, 128, 10]
N = 128


def gemm_floor():
    rng = np.random.default_rng(0)
    f = lambda *shape: np.asfortranarray(rng.standard_normal(shape).astype(np.float32))
    X = f(N, 784)
    W = [f(o, i) for i, o in zip(SIZES[:-1], SIZES[1:])]
    A = [f(N, o) for o in SIZES[1:]]
    dZ = [f(N, o) for o in SIZES[1:]]
    dW = [f(o, i) for i, o in zip(SIZES[:-1], SIZES[1:])]
    dA = [f(N, o) for o in SIZES[1:-1]]
    inputs = [X] + A[:-1]
    calls = []
    for l in range(3):   # forward: A_l = in_l · W_lᵀ
        calls.append((inputs[l], W[l], A[l], False, True))
    for l in range(3):   # dW_l = dZ_lᵀ · in_l
        calls.append((dZ[l], inputs[l], dW[l], True, False))
    for l in (1, 2):     # dA_{l-1} = dZ_l · W_l
        calls.append((dZ[l], W[l], dA[l - 1], False, False))

    def run():
        for a, b, c, ta, tb in calls:
            blas.sgemm(1.0, a, b, 0.0, c, trans_a=ta, trans_b=tb, overwrite_c=1)
    flops = 2 * sum((c.shape[0] * c.shape[1] * (a.shape[0] if ta else a.shape[1]))
                    for a, b, c, ta, tb in calls)
    return run, flops


def fastopt_step():
    model = fo.Sequential([fo.Dense(256, activation="relu"), fo.Dense(128, activation="relu"),
                           fo.Dense(10)], input_dim=784, seed=0)
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.01))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, 784)).astype(np.float32)
    T = trainer.loss.prepare_targets(rng.integers(0, 10, N), 10, np.float32)
    return lambda: trainer._train_step(X, T)


def timed(fn, steps):
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    floor, flops = gemm_floor()
    step = fastopt_step()
    print(f"784-256-128-10 relu MLP, batch {N}, float32, SGD: {flops / 1e6:.1f} MFLOP of GEMM per step")
    print("| threads | GEMMs alone (scipy sgemm) | fastopt step | step / GEMMs |")
    print("| --- | --- | --- | --- |")
    for threads in (1, 2):
        t_floor, t_step = [], []
        with fo.threads(threads):
            for _ in range(3):
                with threadpool_limits(threads, user_api="blas"):
                    floor()
                with blas_single_thread:
                    step()
            for _ in range(args.rounds):
                with threadpool_limits(threads, user_api="blas"):
                    t_floor.append(timed(floor, args.steps))
                with blas_single_thread:
                    t_step.append(timed(step, args.steps))
        f, s = statistics.median(t_floor), statistics.median(t_step)
        print(f"| {threads} | {f * 1e3:.3f} ms ({flops / f / 1e9:.0f} GFLOP/s) | {s * 1e3:.3f} ms "
              f"| {s / f:.2f}x |")


if __name__ == "__main__":
    main()
