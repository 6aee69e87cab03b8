"""The issue's bars for batch norm and dropout, measured in one run.

(a) BatchNorm + relu + Dropout(0.2) forward plus backward on a (512, 2048) float32
    tensor against the time of moving that tensor's bytes the minimum number of times:
    5 passes (forward reads x, writes y; backward reads dy and x, writes dx; the
    dropout mask is 1/32 of that in bits). Two bandwidths price the floor:
      - np.copyto on the same size, one thread (what earlier reports used);
      - a streaming pass at the run's thread count: Dropout.backward with every unit
        kept (reads dy and the bits, writes dx), fastopt's own read-one-write-one loop.
    Also printed: generating the mask and nothing else (_testing.mask_bits), the floor
    under any exact Philox4x32-10 dropout, whatever it is fused with.
(b) The 784-256-128-10 MLP, BatchNorm + relu + Dropout(0.2) per hidden block, Adam,
    batch 128, float32: a full training step against the same network without BN and
    dropout.

    python -m benchmarks.bar_norm [--threads 1 2] [--repeat 15]

Times are the best of ``repeat`` rounds, the variants interleaved round by round, so
a noisy neighbour on a shared machine slows every variant alike. Each timing starts
with one untimed call, so the variant's 16-24 MiB working set is back in L3 (32 MiB
here) as it would be in a training loop; the floors are measured the same way.
"""

import argparse
import timeit

import numpy as np

import fastopt as fo
from fastopt._kernels import dropout as _dropout
from fastopt._kernels import _testing
from fastopt.layers import mask_bits_buffer
from fastopt.threads import blas_single_thread, get_num_threads


def _interleaved_best(fns, number, repeat):
    """{name: seconds per call}, the best of ``repeat`` rounds, variants interleaved."""
    best = {}
    for fn in fns.values():
        fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            fn()
            t = timeit.timeit(fn, number=number) / number
            best[name] = min(best.get(name, t), t)
    return best


def _block(layers, d, rows, planned=True):
    """Forward + backward (input gradient included) of ``layers``: through the compiled
    step plan (the training path, which fuses BatchNorm with what follows it), or layer
    by layer."""
    model = fo.Sequential(layers, input_dim=d, dtype="float32", seed=0)
    x = np.random.default_rng(0).standard_normal((rows, d)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal((rows, d)).astype(np.float32)
    if planned:
        from fastopt.plan import StepPlan
        plan = StepPlan(model, rows, True, input_grad=True)
        plan.bind(x)
        np.copyto(plan.dout, dy)

        def step():
            model.train_step += 1
            plan.forward(model.train_step)
            plan.backward()
        return step

    def step():
        model._forward(x, True)
        model._backward(dy, True)
    return step


def _unfused_block(d, rows):
    """BatchNorm, Activation and Dropout as three layers run one by one (the per-layer
    path: ``Sequential.forward``/``backward`` never fuse)."""
    return _block([fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2)], d, rows,
                  planned=False)


def bar_a(repeat):
    rows, d = 512, 2048
    a = np.random.default_rng(0).standard_normal((rows, d)).astype(np.float32)
    b = np.empty_like(a)
    keep_all = np.full_like(mask_bits_buffer(rows, d), 0xFFFFFFFF)
    bits = mask_bits_buffer(rows, d)
    threshold = int(0.8 * 2**32)
    t = _interleaved_best({
        "copyto": lambda: np.copyto(b, a),
        "stream": lambda: _dropout.backward(a, keep_all, b, 1.0, n_threads=get_num_threads()),
        "fused": _block([fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2)], d, rows),
        "unfused": _unfused_block(d, rows),
        "bn_relu": _block([fo.BatchNorm(), fo.Activation("relu")], d, rows),
        "bn": _block([fo.BatchNorm()], d, rows),
        "dropout": _block([fo.Dropout(0.2)], d, rows),
        "mask": lambda: _testing.mask_bits(bits, d, 0, 1, 0, threshold,
                                           n_threads=get_num_threads()),
    }, 10, repeat)
    nbytes = a.nbytes
    bw_copy = 2 * nbytes / t["copyto"]
    bw_stream = 2 * nbytes / t["stream"]
    floor_copy = 5 * nbytes / bw_copy
    floor_stream = 5 * nbytes / bw_stream
    fused = t["fused"]
    print(f"(a) ({rows}, {d}) float32, {fo.get_num_threads()} thread(s); the floor is 5 passes "
          f"over {nbytes / 2**20:.0f} MiB")
    print(f"    np.copyto (1 thread):       {t['copyto'] * 1e3:.3f} ms = "
          f"{bw_copy / 1e9:.1f} GB/s -> floor {floor_copy * 1e3:.3f} ms")
    print(f"    streaming pass ({fo.get_num_threads()} thr.):   {t['stream'] * 1e3:.3f} ms = "
          f"{bw_stream / 1e9:.1f} GB/s -> floor {floor_stream * 1e3:.3f} ms")
    print(f"    BN+relu+dropout fused fwd+bwd: {fused * 1e3:.3f} ms = "
          f"{fused / floor_copy:.2f}x the copyto floor, {fused / floor_stream:.2f}x the "
          f"streaming floor; {5 * nbytes / fused / 1e9:.1f} GB/s effective")
    print(f"    the mask alone (Philox4x32-10, one word per element): {t['mask'] * 1e3:.3f} ms"
          f" = {t['mask'] / floor_copy:.2f}x / {t['mask'] / floor_stream:.2f}x those floors")
    bar_floor = floor_stream + t["mask"]
    print(f"    bar (issue 11): fused / (5 streaming passes + the mask alone) = "
          f"{fused * 1e3:.3f} / {bar_floor * 1e3:.3f} ms = {fused / bar_floor:.2f}x "
          f"(target <= 2x)")
    print(f"    same three layers, unfused:    {t['unfused'] * 1e3:.3f} ms "
          f"({t['unfused'] / fused:.2f}x fused)")
    print(f"    BN+relu (no dropout) fwd+bwd:  {t['bn_relu'] * 1e3:.3f} ms = "
          f"{t['bn_relu'] / floor_copy:.2f}x / {t['bn_relu'] / floor_stream:.2f}x")
    print(f"    BN alone fwd+bwd:              {t['bn'] * 1e3:.3f} ms")
    print(f"    Dropout alone fwd+bwd:         {t['dropout'] * 1e3:.3f} ms")


def _mlp(with_bn):
    if with_bn:
        layers = [fo.Dense(256), fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2),
                  fo.Dense(128), fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2),
                  fo.Dense(10)]
    else:
        layers = [fo.Dense(256, activation="relu"), fo.Dense(128, activation="relu"),
                  fo.Dense(10)]
    model = fo.Sequential(layers, input_dim=784, dtype="float32", seed=0)
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.Adam(lr=1e-3))
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((128, 784)).astype(np.float32)
    tb = trainer.loss.prepare_targets(rng.integers(0, 10, 128), 10, model.dtype)

    def step():
        with blas_single_thread:
            trainer._train_step(xb, tb)
    return step


def bar_b(repeat):
    t = _interleaved_best({"plain": _mlp(False), "bn": _mlp(True)}, 20, repeat)
    print(f"(b) 784-256-128-10 MLP, Adam, batch 128, float32, {fo.get_num_threads()} thread(s)")
    print(f"    without BN/dropout: {t['plain'] * 1e3:.3f} ms/step")
    print(f"    with BN+relu+Dropout(0.2) per hidden block: {t['bn'] * 1e3:.3f} ms/step"
          f" = {t['bn'] / t['plain']:.3f}x")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    for n in args.threads:
        with fo.threads(n):
            bar_a(args.repeat)
            bar_b(args.repeat)


if __name__ == "__main__":
    main()
