"""fastopt's optimizer steps side by side with torch.optim, in one process.

For each size and thread count, every contender (fastopt; torch default; torch
fused=True) takes a block of steps in turn, round after round (interleaved, so drift
in the machine's load hits all of them alike); the table shows medians and ratios.
PyTorch is optional: without it, fastopt's times are printed alone.

    python benchmarks/compare_optim.py [--sizes 10000000 235914] [--threads 1 2]
                                       [--rounds 10] [--block 3] [--optimizers adam adamw sgd-momentum]

Bytes per parameter moved by one step (float32): Adam/AdamW 28 (read p, g, m, v;
write p, m, v), SGD with momentum 20, Adagrad 20, RMSprop 20; GB/s = bytes / time.
"""

import argparse
import time

import numpy as np

import fastopt
from fastopt import optim

RECIPES = {
    # name: (fastopt name, kwargs, torch class name, torch kwargs, bytes per float32 param)
    "adam": ("adam", {"lr": 1e-3}, "Adam", {"lr": 1e-3}, 28),
    "adamw": ("adamw", {"lr": 1e-3}, "AdamW", {"lr": 1e-3}, 28),
    "sgd-momentum": ("sgd", {"lr": 1e-2, "momentum": 0.9}, "SGD",
                     {"lr": 1e-2, "momentum": 0.9}, 20),
    "adagrad": ("adagrad", {}, "Adagrad", {}, 20),
    "rmsprop": ("rmsprop", {}, "RMSprop", {}, 20),
}


def contenders(recipe, n, torch):
    """(label, step function) for each contender, each on its own arrays."""
    name, kw, tname, tkw, _ = RECIPES[recipe]
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n).astype(np.float32)
    g0 = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    p, g = p0.copy(), g0.copy()
    opt = optim.get_optimizer(name, **kw)
    out = [("fastopt", lambda: opt.step(p, g))]
    if torch is not None:
        for label, extra in (("torch default", {}), ("torch fused", {"fused": True})):
            x = torch.tensor(p0.copy(), requires_grad=True)
            x.grad = torch.tensor(g0.copy())
            try:
                topt = getattr(torch.optim, tname)([x], **tkw, **extra)
            except (RuntimeError, TypeError, ValueError) as exc:
                print(f"  ({tname} {label}: {exc})")
                continue
            out.append((label, (lambda o: o.step)(topt)))
            out[-1][1].__self__._keep = x  # keep the tensor alive with its optimizer
    for _, step in out:     # allocate state, warm caches and kernels
        step()
        step()
    return out


def measure(steps, rounds, block, pause):
    """Rounds of ``block`` timed steps per contender; the first step after each switch
    is run untimed: it pays for the other library's cache footprint and its OpenMP
    threads still spinning on the cores, which no single-library training loop sees."""
    times = {label: [] for label, _ in steps}
    for _ in range(rounds):
        for label, step in steps:
            if pause:
                time.sleep(pause)
            step()
            for _ in range(block):
                t0 = time.perf_counter()
                step()
                times[label].append(time.perf_counter() - t0)
    return {label: float(np.median(ts)) for label, ts in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 235914])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--optimizers", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds (default: 10 for >1M params, 30 below)")
    ap.add_argument("--block", type=int, default=None,
                    help="timed steps per contender per round (default: 3 for >1M, 10 below)")
    ap.add_argument("--pause", type=float, default=0.0,
                    help="seconds of sleep before each contender's block")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed: timing fastopt alone "
              "(pip install torch to compare).\n")

    rows = []
    for n in args.sizes:
        rounds = args.rounds or (10 if n > 1_000_000 else 30)
        block = args.block or (3 if n > 1_000_000 else 10)
        for nt in args.threads:
            if torch is not None:
                torch.set_num_threads(nt)
            with fastopt.threads(nt):
                for recipe in args.optimizers:
                    steps = contenders(recipe, n, torch)
                    med = measure(steps, rounds, block, args.pause)
                    rows.append((recipe, n, nt, med))
                    print(f"  {recipe} n={n} threads={nt}: " +
                          ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in med.items()),
                          flush=True)
    print()
    head = "| optimizer | params | threads | fastopt µs | GB/s |"
    sep = "| --- | ---: | ---: | ---: | ---: |"
    if torch is not None:
        head += " torch default µs | torch fused µs | default / fastopt | fused / fastopt |"
        sep += " ---: | ---: | ---: | ---: |"
    print(head)
    print(sep)
    for recipe, n, nt, med in rows:
        ours = med["fastopt"]
        gbs = RECIPES[recipe][4] * n / ours / 1e9
        line = f"| {recipe} | {n:,} | {nt} | {ours * 1e6:.1f} | {gbs:.1f} |"
        if torch is not None:
            d, f = med.get("torch default"), med.get("torch fused")
            fmt = lambda v: "n/a" if v is None else f"{v * 1e6:.1f}"
            ratio = lambda v: "n/a" if v is None else f"{v / ours:.2f}x"
            line += f" {fmt(d)} | {fmt(f)} | {ratio(d)} | {ratio(f)} |"
        print(line)
    print(f"\ntorch {torch.__version__ if torch else 'absent'}, fastopt {fastopt.__version__}; "
          "ratios > 1 mean fastopt is faster. Medians over interleaved rounds.")


if __name__ == "__main__":
    main()
