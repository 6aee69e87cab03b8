"""The issue's bars for batch norm and dropout, measured in one run.

(a) BatchNorm + relu + Dropout(0.2) forward plus backward on a (512, 2048) float32
    tensor against the time of moving that tensor's bytes the minimum number of times
    (5: forward reads x, writes y; backward reads dy and x, writes dx; the dropout mask
    is 1/32 of that in bits), at the copy bandwidth of np.copyto on the same size.
(b) The 784-256-128-10 MLP, BatchNorm + relu + Dropout(0.2) per hidden block, SGD,
    batch 128, float32: a full training step against the same network without BN and
    dropout.

    python -m benchmarks.bar_norm [--threads 2] [--repeat 7]
"""

import argparse
import timeit

import numpy as np

import fastopt as fo
from fastopt.threads import blas_single_thread


def _best(fn, number, repeat):
    fn()
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def _block(layers, d, rows):
    model = fo.Sequential(layers, input_dim=d, dtype="float32", seed=0)
    x = np.random.default_rng(0).standard_normal((rows, d)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal((rows, d)).astype(np.float32)

    def step():
        model._forward(x, True)
        model._backward(dy, True)
    return step


def bar_a(repeat):
    rows, d = 512, 2048
    a = np.random.default_rng(0).standard_normal((rows, d)).astype(np.float32)
    b = np.empty_like(a)
    copy = _best(lambda: np.copyto(b, a), 50, repeat)
    bw = 2 * a.nbytes / copy
    fused = _best(_block([fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2)], d, rows),
                  20, repeat)
    bn_relu = _block([fo.BatchNorm(), fo.Activation("relu")], d, rows)
    bn_relu = _best(bn_relu, 20, repeat)
    bn_only = _best(_block([fo.BatchNorm()], d, rows), 20, repeat)
    drop_only = _best(_block([fo.Dropout(0.2)], d, rows), 20, repeat)
    # The same three layers run one by one (BatchNorm.absorb disabled).
    absorb = fo.BatchNorm.absorb
    fo.BatchNorm.absorb = lambda self, following: 0
    try:
        unfused = _best(_block([fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2)],
                               d, rows), 20, repeat)
    finally:
        fo.BatchNorm.absorb = absorb
    floor = 5 * a.nbytes / bw
    print(f"(a) ({rows}, {d}) float32, {fo.get_num_threads()} thread(s)")
    print(f"    np.copyto: {copy * 1e3:.3f} ms = {bw / 1e9:.1f} GB/s (read + write)")
    print(f"    floor, 5 tensor passes at that bandwidth: {floor * 1e3:.3f} ms")
    print(f"    BN+relu+dropout fused fwd+bwd: {fused * 1e3:.3f} ms = {fused / floor:.2f}x floor,"
          f" {5 * a.nbytes / fused / 1e9:.1f} GB/s effective")
    print(f"    same, unfused (3 layers):      {unfused * 1e3:.3f} ms ({unfused / fused:.2f}x fused)")
    print(f"    BN+relu (no dropout) fwd+bwd:  {bn_relu * 1e3:.3f} ms = {bn_relu / floor:.2f}x floor")
    print(f"    BN alone fwd+bwd:              {bn_only * 1e3:.3f} ms")
    print(f"    Dropout alone fwd+bwd:         {drop_only * 1e3:.3f} ms")


def _mlp(with_bn):
    if with_bn:
        layers = [fo.Dense(256), fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2),
                  fo.Dense(128), fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2),
                  fo.Dense(10)]
    else:
        layers = [fo.Dense(256, activation="relu"), fo.Dense(128, activation="relu"),
                  fo.Dense(10)]
    model = fo.Sequential(layers, input_dim=784, dtype="float32", seed=0)
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.01))
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((128, 784)).astype(np.float32)
    tb = trainer.loss.prepare_targets(rng.integers(0, 10, 128), 10, model.dtype)

    def step():
        with blas_single_thread:
            trainer._train_step(xb, tb)
    return step


def bar_b(repeat):
    plain = _mlp(False)
    bn = _mlp(True)
    t_plain = _best(plain, 100, repeat)
    t_bn = _best(bn, 100, repeat)
    print(f"(b) 784-256-128-10 MLP, SGD, batch 128, float32, {fo.get_num_threads()} thread(s)")
    print(f"    without BN/dropout: {t_plain * 1e3:.3f} ms/step")
    print(f"    with BN+relu+Dropout(0.2) per hidden block: {t_bn * 1e3:.3f} ms/step"
          f" = {t_bn / t_plain:.3f}x")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for n in args.threads:
        with fo.threads(n):
            bar_a(args.repeat)
            bar_b(args.repeat)


if __name__ == "__main__":
    main()
