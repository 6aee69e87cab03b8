"""Soak run (not a CI test): long training with the resident set size sampled.

Two runs, each at 1 and at 2 threads:

- tiny: 32→64→64→1 relu, MSE, SGD momentum 0.9, batch 64 (benchmarks/workloads.py), for
  ``--tiny-steps`` optimizer steps (default 1,000,000) through ``Trainer.fit``;
- mnist: 784→256→128→10 with BatchNorm + relu + Dropout(0.2) blocks, Adam, batch 128, for
  ``--mnist-epochs`` epochs (default 20) on synthetic data of MNIST's shape (60,000 × 784
  in [0, 1), 10 classes; the real digits change nothing here).

RSS (``/proc/self/statm``, else ``ru_maxrss``) is sampled every ``--every`` steps; the report
gives RSS after warm-up (the first 5 % of the steps) and at the end, the largest growth after
warm-up, and whether the final weights of the 1- and 2-thread runs are bitwise equal. It
exits 1 when RSS grew by more than ``--max-growth-mib`` after warm-up or the weights differ.

    python -m benchmarks.soak                                   # the full run (~1 h on 2 cores)
    python -m benchmarks.soak --tiny-steps 100000 --mnist-epochs 2   # a shortened run
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

import fastopt as fo

try:
    from benchmarks.workloads import WORKLOADS, fastopt_trainer
except ImportError:  # run as a script from benchmarks/
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.workloads import WORKLOADS, fastopt_trainer

MIB = 2 ** 20


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class RSSSampler(fo.callbacks.Callback):
    def __init__(self, every):
        self.every = every
        self.samples = []   # (step, rss bytes, seconds)
        self._start = time.perf_counter()

    def on_train_begin(self, trainer):
        self.samples.append((trainer.step_count, rss_bytes(), 0.0))

    def on_batch_end(self, trainer, step, logs):
        if step % self.every == 0:
            self.samples.append((step, rss_bytes(), time.perf_counter() - self._start))

    def on_train_end(self, trainer, logs):
        self.samples.append((trainer.step_count, rss_bytes(), time.perf_counter() - self._start))


def summarize(samples, warmup_fraction=0.05):
    last_step = samples[-1][0]
    after = [s for s in samples if s[0] >= warmup_fraction * last_step]
    start = after[0][1]
    peak = max(s[1] for s in after)
    return {"steps": last_step, "rss_start_mib": round(samples[0][1] / MIB, 2),
            "rss_after_warmup_mib": round(start / MIB, 2),
            "rss_end_mib": round(samples[-1][1] / MIB, 2),
            "max_growth_after_warmup_mib": round((peak - start) / MIB, 2),
            "seconds": round(samples[-1][2], 1), "samples": len(samples)}


def tiny_run(steps, threads, every):
    w = WORKLOADS["tiny"]
    rng = np.random.default_rng(0)
    # 5,000 steps per epoch: the History (a few numbers per epoch, by design) stays small,
    # so what RSS shows is the engine's steady state.
    per_epoch = min(5000, steps)
    X = rng.random((64 * per_epoch, w.sizes[0]), dtype=np.float32)
    y = (X[:, :4].sum(axis=1, keepdims=True) - 2.0).astype(np.float32)
    trainer = fastopt_trainer(w, seed=0)
    sampler = RSSSampler(every)
    epochs = -(-steps // per_epoch)
    with fo.threads(threads):
        trainer.fit(X, y, epochs=epochs, batch_size=w.batch, seed=1, verbose=0,
                    callbacks=[sampler])
    return trainer, sampler


def mnist_run(epochs, threads, every):
    w = WORKLOADS["mnist"]
    rng = np.random.default_rng(0)
    X = rng.random((60_000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 60_000)
    trainer = fastopt_trainer(w, seed=0)
    sampler = RSSSampler(every)
    with fo.threads(threads):
        trainer.fit(X, y, epochs=epochs, batch_size=w.batch, seed=1, verbose=0,
                    callbacks=[sampler])
    return trainer, sampler


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-steps", type=int, default=1_000_000)
    parser.add_argument("--mnist-epochs", type=int, default=20)
    parser.add_argument("--every", type=int, default=1000, help="sample RSS every N steps")
    parser.add_argument("--max-growth-mib", type=float, default=4.0)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)

    report = {"fastopt": fo.__version__, "cpus": os.cpu_count()}
    ok = True
    for name, run, size in (("tiny", tiny_run, args.tiny_steps),
                            ("mnist", mnist_run, args.mnist_epochs)):
        if size <= 0:
            continue
        finals = {}
        for threads in (1, 2):
            trainer, sampler = run(size, threads, args.every)
            summary = summarize(sampler.samples)
            finals[threads] = trainer.model.parameters.copy()
            report[f"{name}_{threads}t"] = summary
            print(f"{name:5s} {threads} thread(s): {summary['steps']:,} steps in "
                  f"{summary['seconds']} s; RSS {summary['rss_start_mib']} MiB at the start, "
                  f"{summary['rss_after_warmup_mib']} MiB after "
                  f"warm-up, {summary['rss_end_mib']} MiB at the end (max growth "
                  f"{summary['max_growth_after_warmup_mib']} MiB)", flush=True)
            ok &= summary["max_growth_after_warmup_mib"] <= args.max_growth_mib
            del trainer, sampler
        same = bool(np.array_equal(finals[1], finals[2]))
        report[f"{name}_weights_equal_1t_2t"] = same
        print(f"{name:5s} final weights bitwise equal for 1 and 2 threads: {same}", flush=True)
        ok &= same
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
