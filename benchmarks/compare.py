"""fastopt side by side with PyTorch and scikit-learn, in one process, on the issue's workloads.

    python benchmarks/compare.py [--quick] [--threads 1 2]
                                 [--workloads tiny mnist wide epoch optim]
                                 [--frameworks fastopt torch sklearn] [--breakdown]
                                 [--out benchmarks/results/]

Workloads (float32; see benchmarks/workloads.py):
  tiny   training step, 32→64→64→1 relu, MSE, SGD momentum 0.9, batch 64
  mnist  training step, 784→256→128→10, Dense+BatchNorm+relu+Dropout(0.2), CE, Adam, batch 128
  wide   training step, 1024→2048→2048→10 relu, CE, Adam, batch 512
  epoch  one epoch of 60,000×784 through mnist (shuffle, batch, step): fastopt Trainer.fit,
         PyTorch eager (randperm + index_select batches), scikit-learn MLPClassifier
         (hidden (256, 128), adam, batch 128: no BatchNorm/Dropout in sklearn)
  optim  Adam/AdamW/SGD-momentum steps on 10M and 235,914 params (benchmarks/compare_optim.py)

A step is zero_grad + forward + loss + backward + update (fastopt's also takes the global
gradient norm). PyTorch runs in its default configuration (``torch.optim.Adam(params)``)
and its best (``fused=True``). Contenders run round by round (A, B, C, A, B, C, ...)
after a warm-up; each round times a block of steps after one untimed step (which pays for
the previous contender's cache footprint and spinning threads); tables give medians over
rounds. Ratios > 1 mean fastopt is faster. In the same run: the sgemm peak (the faster
of scipy's OpenBLAS and fastopt's own GEMM entry point, 1024³) and the step's "GEMMs
alone": the same GEMM shapes through fastopt's GEMM entry point (the dispatch the step
uses) on preallocated buffers at the same thread count.
GFLOP/s counts the step's GEMM FLOPs only. ``--breakdown`` times each fastopt kernel of
the steps against its roofline.

Writes OUT/compare.md and OUT/compare.png (matplotlib optional) and prints the table.
"""

import argparse
import datetime
import importlib.metadata
import os
import platform
import statistics
import sys
import time
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy
from scipy.linalg import blas as scipy_blas
from threadpoolctl import ThreadpoolController

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastopt as fo  # noqa: E402
from fastopt._kernels import _testing  # noqa: E402
from fastopt.threads import blas_single_thread, get_num_threads  # noqa: E402

from benchmarks import compare_optim  # noqa: E402
from benchmarks.workloads import (LEARNING_RATE, MOMENTUM, WORKLOADS, data,  # noqa: E402
                                  fastopt_step, fastopt_targets, fastopt_trainer,
                                  gemm_calls, gemm_flops)

STEP_WORKLOADS = ("tiny", "mnist", "wide", "mlp")
ALL_WORKLOADS = STEP_WORKLOADS + ("epoch", "optim")
EPOCH_ROWS = 60_000
CONTROLLER = None  # threadpoolctl's view of the process, made once


def _controller():
    global CONTROLLER
    if CONTROLLER is None:
        CONTROLLER = ThreadpoolController()
    return CONTROLLER


class Settings:
    def __init__(self, quick, rounds=None):
        self.budget_s = 15 if quick else 60                 # per workload and thread count
        self.rounds = rounds or (5 if quick else 15)       # step workloads
        self.slow_rounds = rounds or (3 if quick else 9)   # steps over 50 ms (wide)
        self.block_s = 0.01 if quick else 0.03             # seconds per timed block
        self.epoch_rounds = rounds or (1 if quick else 5)
        self.peak_n = 1024 if quick else 2048
        self.optim_sizes = [235_914] if quick else [10_000_000, 235_914]
        self.optim_rounds = rounds or (5 if quick else None)  # None: compare_optim's defaults
        self.alloc_steps = 10 if quick else 50
        self.breakdown_steps = 10 if quick else 40


# ---------------------------------------------------------------- the machine

def machine_info():
    cpu = platform.processor() or platform.machine()
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in fields:
        simd = [f for f in ("avx512f", "avx2", "fma") if f in fields.get("flags", "").split()]
        cpu = (f"{fields['model name']} (family {fields.get('cpu family', '?')} model "
               f"{fields.get('model', '?')}, {' '.join(simd) or 'no AVX2'})")
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from fastopt.threads import _physical_cores_available
    return {"cpu": cpu, "logical": logical, "cores": _physical_cores_available()}


def _dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions(torch):
    out = {"python": platform.python_version(), "numpy": np.__version__,
           "scipy": scipy.__version__, "fastopt": fo.__version__,
           "torch": _dist_version("torch"), "scikit-learn": _dist_version("scikit-learn"),
           "threadpoolctl": _dist_version("threadpoolctl")}
    blas = []
    for lib in _controller().info():
        if lib["user_api"] == "blas":
            owner = "scipy" if "scipy.libs" in lib["filepath"] else \
                "numpy" if "numpy.libs" in lib["filepath"] else os.path.basename(lib["filepath"])
            blas.append(f"{owner}: {lib['internal_api']} {lib.get('version')} "
                        f"({lib.get('architecture')} kernel, {lib.get('threading_layer')})")
    if torch is not None:
        mkl = "MKL" if torch.backends.mkl.is_available() else "no MKL"
        dnn = "oneDNN" if torch.backends.mkldnn.is_available() else "no oneDNN"
        blas.append(f"torch: {mkl}, {dnn}")
    out["blas"] = "; ".join(blas)
    return out


def load_average():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ---------------------------------------------------------------- timing

def interleave(contenders, rounds, block, prime=True, budget_s=None):
    """Median seconds per call of each contender, and the rounds run: up to ``rounds``
    rounds, each contender in turn running one untimed call (if ``prime``) then
    ``block`` timed ones inside its own context. Past ``budget_s`` seconds (a machine
    made slow by other processes) it stops after at least 3 rounds.

    contenders: list of (label, fn, context factory)."""
    times = {label: [] for label, _, _ in contenders}
    start = time.perf_counter()
    for done in range(rounds):
        if budget_s is not None and done >= 3 and time.perf_counter() - start > budget_s:
            break
        for label, fn, context in contenders:
            with context():
                if prime:
                    fn()
                t0 = time.perf_counter()
                for _ in range(block):
                    fn()
                times[label].append((time.perf_counter() - t0) / block)
    n_rounds = len(next(iter(times.values())))
    return {label: statistics.median(ts) for label, ts in times.items()}, n_rounds


def warm_and_size(contenders, block_s, warm=3):
    """Run each contender ``warm`` times; the block size that takes ~block_s for the
    slowest, and that slowest call's time."""
    slowest = 0.0
    for _, fn, context in contenders:
        with context():
            for _ in range(warm):
                fn()
            t0 = time.perf_counter()
            fn()
            slowest = max(slowest, time.perf_counter() - t0)
    return max(1, int(block_s / max(slowest, 1e-7))), slowest


def fastopt_context(threads):
    class _Ctx:
        def __enter__(self):
            self._t = fo.threads(threads)
            self._t.__enter__()
            blas_single_thread.__enter__()

        def __exit__(self, *exc):
            blas_single_thread.__exit__(*exc)
            self._t.__exit__(*exc)
    return _Ctx


def blas_context(threads):
    return lambda: _controller().limit(limits=threads, user_api="blas")


def fmt_time(t):
    if t is None:
        return "—"
    if t < 1e-3:
        return f"{t * 1e6:.1f} µs"
    if t < 1:
        return f"{t * 1e3:.3g} ms"
    return f"{t:.3g} s"


def ratio(a, b):
    return None if a is None or b is None else a / b


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}x"


# ---------------------------------------------------------------- ceilings

def fastopt_gemm_peak(n, threads, reps=5):
    """Best GFLOP/s of fastopt's own GEMM entry point on an n×n×n float32 product."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    c = np.zeros((n, n), np.float32)
    best = float("inf")
    with fastopt_context(threads)():
        _testing.gemm_rowmajor(a, b, c, False, False, n_threads=get_num_threads())
        for _ in range(reps):
            t0 = time.perf_counter()
            _testing.gemm_rowmajor(a, b, c, False, False, n_threads=get_num_threads())
            best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def sgemm_peak(n, threads, reps=5):
    """Best GFLOP/s of scipy's sgemm on n×n×n Fortran-ordered float32 (no copies)."""
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.random((n, n), dtype=np.float32))
    b = np.asfortranarray(rng.random((n, n), dtype=np.float32))
    c = np.zeros((n, n), np.float32, order="F")
    best = float("inf")
    with _controller().limit(limits=threads, user_api="blas"):
        scipy_blas.sgemm(1.0, a, b, 0.0, c, overwrite_c=1)
        for _ in range(reps):
            t0 = time.perf_counter()
            scipy_blas.sgemm(1.0, a, b, 0.0, c, overwrite_c=1)
            best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def torch_sgemm_peak(torch, n, threads, reps=5):
    """Best GFLOP/s of torch.mm (MKL) on n×n float32: the GEMM PyTorch's steps stand on."""
    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def copy_bandwidth(threads, nbytes=8 << 20, reps=20):
    """GB/s of np.copyto (read + write counted) on a cache-sized float32 buffer, split
    over ``threads`` Python threads (numpy releases the GIL while copying)."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    parts = np.array_split(np.arange(a.shape[0]), threads)
    bounds = [(p[0], p[-1] + 1) for p in parts]
    pool = ThreadPoolExecutor(threads)

    def copy():
        if threads == 1:
            np.copyto(b, a)
        else:
            list(pool.map(lambda s: np.copyto(b[s[0]:s[1]], a[s[0]:s[1]]), bounds))
    copy()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        copy()
        best = min(best, time.perf_counter() - t0)
    pool.shutdown()
    return 2 * nbytes / best / 1e9


def gemm_floor(w, rows=None):
    """The step's GEMMs alone, through fastopt's own GEMM entry point (the tiled,
    dispatched one the step uses: micro-kernel or backend per shape) on preallocated
    row-major buffers of the step's shapes: a callable running them all, and one per GEMM
    (for the breakdown). Run it under ``fastopt_context``."""
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.random(shape, dtype=np.float32)
    calls = []
    for m, n, k, what in gemm_calls(w, rows):
        if what.startswith("fwd"):    # Z (m×n) = X (m×k) · Wᵀ, W (n×k)
            a, b, ta, tb = f(m, k), f(n, k), False, True
        elif what.startswith("dW"):   # dW (m×n) = dZᵀ · X, dZ (k×m), X (k×n)
            a, b, ta, tb = f(k, m), f(k, n), True, False
        else:                         # dX (m×n) = dZ (m×k) · W (k×n)
            a, b, ta, tb = f(m, k), f(k, n), False, False
        c = np.zeros((m, n), np.float32)
        calls.append((what, lambda a=a, b=b, c=c, ta=ta, tb=tb: _testing.gemm_rowmajor(
            a, b, c, ta, tb, n_threads=get_num_threads())))

    def run():
        for _, call in calls:
            call()
    return run, calls


# ---------------------------------------------------------------- PyTorch side

def torch_model(torch, w, fo_model=None):
    """The same architecture as fastopt's; weights copied from ``fo_model`` when given."""
    nn = torch.nn
    layers = []
    for i, o in zip(w.sizes[:-2], w.sizes[1:-1]):
        layers.append(nn.Linear(i, o))
        if w.block == "bn-dropout":
            layers += [nn.BatchNorm1d(o, momentum=0.1, eps=1e-5), nn.ReLU(), nn.Dropout(w.dropout)]
        else:
            layers.append(nn.ReLU())
    layers.append(nn.Linear(w.sizes[-2], w.sizes[-1]))
    model = nn.Sequential(*layers)
    if fo_model is not None:
        dense = [layer for layer in fo_model.layers if isinstance(layer, fo.Dense)]
        linear = [m for m in model if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for d, lin in zip(dense, linear):
                lin.weight.copy_(torch.from_numpy(d.params["W"]))
                lin.bias.copy_(torch.from_numpy(d.params["b"]))
    return model.train()


def torch_optimizer(torch, w, params, fused):
    extra = {"fused": True} if fused else {}
    lr = LEARNING_RATE[w.optimizer]
    if w.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, **extra)
    momentum = MOMENTUM if w.optimizer == "sgd-momentum" else 0.0
    return torch.optim.SGD(params, lr=lr, momentum=momentum, **extra)


def torch_loss(torch, w):
    return torch.nn.MSELoss() if w.loss == "mse" else torch.nn.CrossEntropyLoss()


def torch_step(torch, w, X, y, fused, fo_model=None):
    model = torch_model(torch, w, fo_model)
    opt = torch_optimizer(torch, w, model.parameters(), fused)
    loss_fn = torch_loss(torch, w)
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y if w.loss == "mse" else y.astype(np.int64))

    def step():
        opt.zero_grad()
        loss = loss_fn(model(Xt), yt)
        loss.backward()
        opt.step()
    return step


def torch_epoch(torch, w, X, y, fused, fo_model=None):
    """One epoch, the idiomatic fast eager way: a permutation, batches by index_select."""
    model = torch_model(torch, w, fo_model)
    opt = torch_optimizer(torch, w, model.parameters(), fused)
    loss_fn = torch_loss(torch, w)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(0)

    def epoch():
        perm = torch.randperm(Xt.shape[0], generator=gen)
        for start in range(0, Xt.shape[0], w.batch):
            idx = perm[start:start + w.batch]
            opt.zero_grad()
            loss = loss_fn(model(Xt.index_select(0, idx)), yt.index_select(0, idx))
            loss.backward()
            opt.step()
    return epoch


def torch_context(torch, threads):
    class _Ctx:
        def __enter__(self):
            torch.set_num_threads(threads)

        def __exit__(self, *exc):
            pass
    return _Ctx


# ---------------------------------------------------------------- measurements

def measure_step(w, threads, settings, torch):
    trainer = fastopt_trainer(w)
    X, y = data(w)
    T = fastopt_targets(trainer, y)
    floor, _ = gemm_floor(w)
    contenders = [("fastopt", lambda: fastopt_step(trainer, X, T), fastopt_context(threads)),
                  ("gemms", floor, fastopt_context(threads))]
    if torch is not None:
        ctx = torch_context(torch, threads)
        contenders += [("torch default", torch_step(torch, w, X, y, False, trainer.model), ctx),
                       ("torch best", torch_step(torch, w, X, y, True, trainer.model), ctx)]
    block, slowest = warm_and_size(contenders, settings.block_s)
    # Steps of tens of ms do not feel the previous contender's caches: no untimed prime.
    rounds = settings.rounds if slowest < 0.05 else settings.slow_rounds
    med, done = interleave(contenders, rounds, block, prime=slowest < 0.05,
                           budget_s=settings.budget_s)
    return {"fastopt": med["fastopt"], "gemms": med["gemms"], "rounds": done,
            "torch default": med.get("torch default"), "torch best": med.get("torch best"),
            "flops": gemm_flops(w)}


def measure_epoch(threads, settings, torch, sklearn, rows):
    w = WORKLOADS["mnist"]
    X, y = data(w, rows=rows, seed=1)
    warm_rows = min(rows, 10 * w.batch)
    trainer = fastopt_trainer(w)
    contenders = [("fastopt",
                   lambda: trainer.fit(X, y, epochs=1, batch_size=w.batch, seed=0, verbose=0),
                   fastopt_context(threads))]
    warm = [lambda: trainer.fit(X[:warm_rows], y[:warm_rows], epochs=1, batch_size=w.batch,
                                verbose=0)]
    # The epoch's steps on their own (a second trainer, the same number of full batches
    # and the tail, on one cache-hot batch each), timed in the same interleaved rounds:
    # the epoch's overhead (input checks, shuffling, gathering from memory, the loop) is
    # the ratio of the two.
    stepper = fastopt_trainer(w)
    T = fastopt_targets(stepper, y)
    full, tail = rows // w.batch, rows % w.batch
    batches = [(X[:w.batch], T[:w.batch])] * full + ([(X[:tail], T[:tail])] if tail else [])

    def steps_only():
        for xb, tb in batches:
            fastopt_step(stepper, xb, tb)
    contenders.append(("fastopt steps", steps_only, fastopt_context(threads)))
    warm.append(lambda: [fastopt_step(stepper, xb, tb) for xb, tb in batches[:10]])
    if torch is not None:
        ctx = torch_context(torch, threads)
        for label, fused in (("torch default", False), ("torch best", True)):
            run = torch_epoch(torch, w, X, y, fused, trainer.model)
            contenders.append((label, run, ctx))
            small = torch_epoch(torch, w, X[:warm_rows], y[:warm_rows], fused)
            warm.append(small)
    if sklearn is not None:
        from sklearn.neural_network import MLPClassifier
        clf = MLPClassifier(hidden_layer_sizes=w.sizes[1:-1], solver="adam", batch_size=w.batch,
                            learning_rate_init=LEARNING_RATE["adam"], shuffle=True,
                            random_state=0)
        classes = np.arange(w.sizes[-1])

        def sk_epoch():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf.partial_fit(X, y, classes=classes)
        contenders.append(("sklearn", sk_epoch, blas_context(threads)))
        warm.append(lambda: clf.partial_fit(X[:warm_rows], y[:warm_rows], classes=classes))
    for (_, _, context), run in zip(contenders, warm):
        with context():
            run()
    # An epoch is long enough to need no untimed prime (it would double the run time).
    med, done = interleave(contenders, settings.epoch_rounds, 1, prime=False,
                           budget_s=2 * settings.budget_s)
    steps = -(-rows // w.batch)
    flops = gemm_flops(w) * (rows // w.batch) + gemm_flops(w, rows % w.batch)
    return {"fastopt": med["fastopt"], "torch default": med.get("torch default"),
            "torch best": med.get("torch best"), "sklearn": med.get("sklearn"),
            "flops": flops, "steps": steps, "rounds": done,
            "steps_time": med.get("fastopt steps")}


def measure_optim(threads, settings, torch):
    rows = []
    torch_for_optim = torch
    for n in settings.optim_sizes:
        rounds = settings.optim_rounds or (10 if n > 1_000_000 else 30)
        block = 3 if n > 1_000_000 else 10
        if torch is not None:
            torch.set_num_threads(threads)
        with fo.threads(threads):
            for recipe in ("adam", "adamw", "sgd-momentum"):
                steps = compare_optim.contenders(recipe, n, torch_for_optim)
                med = compare_optim.measure(steps, rounds, block, 0.0)
                rows.append({"optimizer": recipe, "params": n, "threads": threads,
                             "fastopt": med["fastopt"], "torch default": med.get("torch default"),
                             "torch best": med.get("torch fused"),
                             "bytes": compare_optim.RECIPES[recipe][4] * n})
    return rows


def steady_state_allocations(w, steps):
    """Peak and retained bytes that tracemalloc sees over ``steps`` warm fastopt steps."""
    trainer = fastopt_trainer(w)
    X, y = data(w)
    T = fastopt_targets(trainer, y)
    with fastopt_context(1)():
        for _ in range(3):
            fastopt_step(trainer, X, T)
        tracemalloc.start()
        tracemalloc.reset_peak()
        for _ in range(steps):
            fastopt_step(trainer, X, T)
        retained, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, retained


# ---------------------------------------------------------------- breakdown

def _kernel_cost(stage, rows, phase):
    """(FLOPs, bytes moved at least once, GEMM FLOPs) of one plan stage's forward or
    backward."""
    need_dx = stage["need_dx"]
    if stage["kind"] == "dense":
        i, o = stage["d_in"], stage["d_out"]
        gemm = 2 * rows * i * o
        if phase == "fwd":
            return gemm + 2 * rows * o, 4 * (rows * i + i * o + o + rows * o), gemm
        gemm *= 2 if need_dx else 1
        nbytes = 4 * (2 * rows * o + rows * i + 2 * i * o + o + (rows * i if need_dx else 0))
        return gemm + 2 * rows * o, nbytes, gemm
    d = stage["d_out"]
    mask = rows * d / 8 if stage.get("dropout") else 0
    if phase == "fwd":   # BatchNorm(+act+dropout), activation, dropout: x read, y written
        return 10 * rows * d, 4 * 2 * rows * d + mask, 0
    return 12 * rows * d, 4 * 3 * rows * d + mask, 0


_ACT_NAMES = {0: "", 1: "+relu", 2: "+leaky_relu", 3: "+elu", 4: "+gelu_tanh", 5: "+gelu",
              6: "+sigmoid", 7: "+tanh", 8: "+softplus"}


def _stage_name(stage):
    act = _ACT_NAMES.get(stage.get("act", 0), "")
    if stage["kind"] == "dense":
        return f"Dense {stage['d_in']}→{stage['d_out']}{act}"
    if stage["kind"] == "batchnorm":
        return f"BatchNorm({stage['d_out']}){act}" + ("+Dropout" if stage.get("dropout") else "")
    return f"{stage['kind']}({stage['d_out']}){act}"


def breakdown(w, threads, settings, peak, bandwidth):
    """Each stage of fastopt's compiled step plan timed on its own (forward stages, the
    fused loss, backward stages in reverse, the gradient norm, the optimizer), with its
    FLOPs, bytes and roofline time max(FLOPs / sgemm peak, bytes / copy bandwidth)."""
    trainer = fastopt_trainer(w)
    model, opt = trainer.model, trainer.optimizer
    X, y = data(w)
    T = fastopt_targets(trainer, y)
    rows = w.batch
    plan = model.step_plan(rows, True, trainer.loss, T)
    plan.bind(X, T)
    stages, kernel = plan.stages, plan._plan
    n_params = model.n_params
    rec = {}
    order = []

    def timed(label, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        rec.setdefault(label, []).append(time.perf_counter() - t0)
        if label not in order:
            order.append(label)
        return out

    floor_all, floor_calls = gemm_floor(w)
    floor_times = {}
    whole = []
    with fastopt_context(threads)():
        for s in range(settings.breakdown_steps + 3):
            model.train_step += 1
            plan.forward(model.train_step)     # places the batch
            for i in range(len(stages)):
                timed(("fwd", i), kernel.forward_stage, i, model.train_step, n_threads=threads)
            timed(("loss",), kernel.loss_only, n_threads=threads)
            for i in range(len(stages) - 1, -1, -1):
                if stages[i]["backprop"]:
                    timed(("bwd", i), kernel.backward_stage, i, n_threads=threads)
            timed(("norm",), kernel.norm_only, n_threads=threads)
            timed(("optim",), opt._apply, model.arena.data, model.arena.grad,
                  trainer._segments, 1.0)
            t0 = time.perf_counter()
            fastopt_step(trainer, X, T)
            whole.append(time.perf_counter() - t0)
    with fastopt_context(threads)():
        for _ in range(3):
            floor_all()
        for what, call in floor_calls:
            ts = []
            for _ in range(max(3, settings.breakdown_steps // 2)):
                t0 = time.perf_counter()
                call()
                ts.append(time.perf_counter() - t0)
            floor_times[what] = statistics.median(ts)
    med = {k: statistics.median(v[3:]) for k, v in rec.items()}
    step_time = statistics.median(whole[3:])
    opt_bytes = {"adam": 28, "sgd-momentum": 20, "sgd": 12}[w.optimizer] * n_params
    opt_flops = {"adam": 14, "sgd-momentum": 4, "sgd": 2}[w.optimizer] * n_params
    out_dim = w.sizes[-1]
    lines = []
    for key in order:
        if key[0] in ("fwd", "bwd"):
            stage = stages[key[1]]
            flops, nbytes, gemm = _kernel_cost(stage, rows, key[0])
            name = f"{_stage_name(stage)} {'forward' if key[0] == 'fwd' else 'backward'}"
            alone = None
            if stage["kind"] == "dense":
                tag = f"{stage['d_in']}→{stage['d_out']}"
                kinds = (("fwd",) if key[0] == "fwd" else ("dW", "dX") if stage["need_dx"]
                         else ("dW",))
                alone = sum(floor_times[f"{k} {tag}"] for k in kinds)
        elif key[0] == "loss":
            name, flops, nbytes, alone = f"loss {w.loss}", 6 * rows * out_dim, 8 * rows * out_dim, None
        elif key[0] == "norm":
            name, flops, nbytes, alone = "global gradient norm", 2 * n_params, 4 * n_params, None
        else:
            name, flops, nbytes, alone = f"optimizer {w.optimizer}", opt_flops, opt_bytes, None
        t = med[key]
        roof = max(flops / (peak * 1e9), nbytes / (bandwidth * 1e9))
        lines.append((name, t, flops, nbytes, roof, alone))
    total = sum(line[1] for line in lines)
    return {"lines": lines, "sum": total, "step": step_time, "threads": threads,
            "workload": w, "peak": peak, "bandwidth": bandwidth}


def breakdown_markdown(b):
    w = b["workload"]
    out = [f"#### {w.name} ({w.title}), {b['threads']} thread(s)", "",
           f"Roofline: sgemm peak {b['peak']:.0f} GFLOP/s, copy bandwidth "
           f"{b['bandwidth']:.0f} GB/s (8 MiB, cache-resident). Whole step "
           f"{fmt_time(b['step'])}; sum of kernels timed one by one {fmt_time(b['sum'])} "
           f"(the rest is the Trainer's glue and timer overhead).", "",
           "| kernel | median | % of step | MFLOP | KiB moved | GFLOP/s | GB/s | roofline | "
           "roofline / time | GEMMs alone (fastopt's GEMM entry point) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, t, flops, nbytes, roof, alone in b["lines"]:
        out.append(f"| {name} | {fmt_time(t)} | {100 * t / b['step']:.1f}% | {flops / 1e6:.2f} | "
                   f"{nbytes / 1024:.0f} | {flops / t / 1e9:.1f} | {nbytes / t / 1e9:.1f} | "
                   f"{fmt_time(roof)} | {roof / t:.2f} | {fmt_time(alone)} |")
    return out


# ---------------------------------------------------------------- report

def step_row(name, threads, r, peak):
    gflops = r["flops"] / r["fastopt"] / 1e9
    return {
        "workload": name, "threads": threads, "fastopt": r["fastopt"],
        "torch default": r.get("torch default"), "torch best": r.get("torch best"),
        "sklearn": r.get("sklearn"), "gemms": r.get("gemms"),
        "gflops": gflops, "peak_pct": 100 * gflops / peak, "rounds": r["rounds"],
        "steps_time": r.get("steps_time"),
    }


def results_markdown(header, rows, optim_rows, allocs, targets, breakdowns, notes):
    out = ["# fastopt vs PyTorch vs scikit-learn", ""]
    out += [f"- {k}: {v}" for k, v in header.items()]
    out += ["", "## Training steps and epoch (float32)", "",
            "| workload | threads | fastopt | torch default | torch best | sklearn | "
            "torch default / fastopt | torch best / fastopt | sklearn / fastopt | "
            "GEMMs alone | fastopt / GEMMs alone | GFLOP/s | % of sgemm peak | rounds |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(
            f"| {r['workload']} | {r['threads']} | {fmt_time(r['fastopt'])} | "
            f"{fmt_time(r['torch default'])} | {fmt_time(r['torch best'])} | "
            f"{fmt_time(r['sklearn'])} | {fmt_ratio(ratio(r['torch default'], r['fastopt']))} | "
            f"{fmt_ratio(ratio(r['torch best'], r['fastopt']))} | "
            f"{fmt_ratio(ratio(r['sklearn'], r['fastopt']))} | {fmt_time(r['gemms'])} | "
            f"{fmt_ratio(ratio(r['fastopt'], r['gemms']))} | {r['gflops']:.1f} | "
            f"{r['peak_pct']:.0f}% | {r['rounds']} |")
    if optim_rows:
        out += ["", "## Optimizer steps (float32, flat parameter array)", "",
                "| optimizer | params | threads | fastopt | torch default | torch fused | "
                "torch default / fastopt | torch fused / fastopt | fastopt GB/s |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in optim_rows:
            out.append(
                f"| {r['optimizer']} | {r['params']:,} | {r['threads']} | {fmt_time(r['fastopt'])} | "
                f"{fmt_time(r['torch default'])} | {fmt_time(r['torch best'])} | "
                f"{fmt_ratio(ratio(r['torch default'], r['fastopt']))} | "
                f"{fmt_ratio(ratio(r['torch best'], r['fastopt']))} | "
                f"{r['bytes'] / r['fastopt'] / 1e9:.1f} |")
    if allocs:
        out += ["", "## Steady-state allocations of fastopt's step (tracemalloc)", "",
                "| workload | steps | peak bytes | retained bytes |", "| --- | ---: | ---: | ---: |"]
        out += [f"| {name} | {steps} | {peak} | {kept} |" for name, steps, peak, kept in allocs]
    if targets:
        out += ["", "## Targets (ratios from this run)", "",
                "| target | measured | met |", "| --- | --- | --- |"]
        out += [f"| {t} | {m} | {ok} |" for t, m, ok in targets]
    if breakdowns:
        out += ["", "## Where fastopt's step time goes (--breakdown)", ""]
        for b in breakdowns:
            out += breakdown_markdown(b) + [""]
    out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def check_targets(rows, allocs):
    by = {(r["workload"], r["threads"]): r for r in rows}
    out = []

    def add(label, value, goal, higher=True):
        if value is None:
            return
        ok = value >= goal if higher else value <= goal
        out.append((label, f"{value:.2f}x (target {'≥' if higher else '≤'} {goal}x)",
                    "yes" if ok else "**no**"))

    def fastest_torch(r):
        ts = [t for t in (r["torch default"], r["torch best"]) if t is not None]
        return min(ts) if ts else None

    for (name, nt), r in by.items():
        f = r["fastopt"]
        if name == "tiny":
            add(f"tiny step vs fastest PyTorch eager, {nt}t", ratio(fastest_torch(r), f), 20)
            add(f"tiny step / the time of its FLOPs at the sgemm peak, {nt}t",
                100.0 / r["peak_pct"] if r["peak_pct"] else None, 2.0, higher=False)
        elif name == "mnist":
            add(f"mnist step vs PyTorch fused Adam, {nt}t", ratio(r["torch best"], f), 2.5)
            add(f"mnist step / its GEMMs alone, {nt}t", ratio(f, r["gemms"]), 1.15, higher=False)
        elif name == "wide":
            add(f"wide step vs PyTorch fused Adam (this run's GEMM backend), {nt}t",
                ratio(r["torch best"], f), 1.0)
        elif name == "mlp":
            add(f"784-256-128-10 SGD step / its GEMMs alone (foundation bar), {nt}t",
                ratio(f, r["gemms"]), 1.3, higher=False)
        elif name.startswith("epoch"):
            add(f"epoch vs fastest PyTorch eager, {nt}t", ratio(fastest_torch(r), f), 2.5)
            add(f"epoch vs scikit-learn, {nt}t", ratio(r["sklearn"], f), 2.5)
            add(f"epoch / (its steps × step time, same run), {nt}t",
                ratio(f, r.get("steps_time")), 1.05, higher=False)
    for name, steps, peak, kept in allocs:
        # Nothing retained, and a transient peak under 16 KiB: small Python objects, not
        # a workspace (the wide step's smallest activation buffer is 20 KiB).
        ok = kept == 0 and peak < 16384
        out.append((f"{name}: zero allocations per step", f"peak {peak} B, retained {kept} B "
                    f"over {steps} steps", "yes" if ok else "**no**"))
    return out


def chart(rows, optim_rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)")
        return None
    labels, series = [], {"torch default / fastopt": [], "torch best / fastopt": [],
                          "sklearn / fastopt": []}
    for r in rows:
        labels.append(f"{r['workload']}\n{r['threads']}t")
        for key, other in (("torch default / fastopt", "torch default"),
                           ("torch best / fastopt", "torch best"), ("sklearn / fastopt", "sklearn")):
            series[key].append(ratio(r[other], r["fastopt"]) or 0.0)
    for r in optim_rows:
        n = f"{r['params'] / 1e6:.1f}M" if r["params"] >= 1e6 else f"{r['params'] / 1e3:.0f}k"
        labels.append(f"{r['optimizer']}\n{n} {r['threads']}t")
        series["torch default / fastopt"].append(ratio(r["torch default"], r["fastopt"]) or 0.0)
        series["torch best / fastopt"].append(ratio(r["torch best"], r["fastopt"]) or 0.0)
        series["sklearn / fastopt"].append(0.0)
    series = {k: v for k, v in series.items() if any(v)}
    if not series:
        print("nothing to chart (no peer was measured)")
        return None
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(labels) + 2), 4.5))
    width = 0.8 / len(series)
    x = np.arange(len(labels))
    for j, (key, vals) in enumerate(series.items()):
        ax.bar(x + (j - (len(series) - 1) / 2) * width, [v or np.nan for v in vals], width,
               label=key)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.2f", fontsize=6, padding=1)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("time of peer / time of fastopt (>1: fastopt faster)")
    ax.set_title("fastopt vs peers, float32, medians of interleaved rounds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- main

def _optional(module, wanted, dist):
    if not wanted:
        return None
    try:
        return __import__(module)
    except ImportError:
        print(f"{dist} is not installed: its columns are skipped (pip install {dist}).")
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (about 2 minutes)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workloads", nargs="+", default=list(ALL_WORKLOADS), choices=ALL_WORKLOADS)
    ap.add_argument("--frameworks", nargs="+", default=["fastopt", "torch", "sklearn"],
                    choices=["fastopt", "torch", "sklearn"],
                    help="peers to measure (fastopt always runs)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time each fastopt kernel of the step workloads")
    ap.add_argument("--rounds", type=int, default=None, help="override the number of rounds")
    ap.add_argument("--epoch-rows", type=int, default=EPOCH_ROWS, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results"))
    args = ap.parse_args(argv)
    settings = Settings(args.quick, args.rounds)
    torch = _optional("torch", "torch" in args.frameworks, "torch")
    sklearn = _optional("sklearn", "sklearn" in args.frameworks and "epoch" in args.workloads,
                        "scikit-learn")
    started = time.perf_counter()
    load_start = load_average()
    info = machine_info()
    vers = versions(torch)

    scipy_peaks = {nt: sgemm_peak(settings.peak_n, nt) for nt in args.threads}
    own_peaks = {nt: fastopt_gemm_peak(settings.peak_n, nt) for nt in args.threads}
    # The peak the rooflines and "% of sgemm peak" use: the faster of the two, so a ratio
    # to it never flatters fastopt.
    peaks = {nt: max(scipy_peaks[nt], own_peaks[nt]) for nt in args.threads}
    torch_peaks = {nt: torch_sgemm_peak(torch, settings.peak_n, nt) for nt in args.threads} \
        if torch is not None else {}
    print("sgemm peak (%d³): " % settings.peak_n +
          ", ".join(f"{nt}t scipy {scipy_peaks[nt]:.0f} / fastopt {own_peaks[nt]:.0f} GFLOP/s"
                    for nt in args.threads), flush=True)

    rows, optim_rows, breakdowns = [], [], []
    for name in args.workloads:
        for nt in args.threads:
            if name in STEP_WORKLOADS:
                r = measure_step(WORKLOADS[name], nt, settings, torch)
                rows.append(step_row(name, nt, r, peaks[nt]))
            elif name == "epoch":
                r = measure_epoch(nt, settings, torch, sklearn, args.epoch_rows)
                label = "epoch" if args.epoch_rows == EPOCH_ROWS else f"epoch ({args.epoch_rows:,} rows)"
                rows.append(step_row(label, nt, r, peaks[nt]))
            else:
                optim_rows += measure_optim(nt, settings, torch)
                continue
            r = rows[-1]
            print(f"  {r['workload']} {nt}t: fastopt {fmt_time(r['fastopt'])}, torch default "
                  f"{fmt_time(r['torch default'])}, torch best {fmt_time(r['torch best'])}, "
                  f"sklearn {fmt_time(r['sklearn'])}, GEMMs alone {fmt_time(r['gemms'])}",
                  flush=True)
    allocs = []
    for name in args.workloads:
        if name in STEP_WORKLOADS:
            steps = settings.alloc_steps if name != "wide" else max(5, settings.alloc_steps // 5)
            allocs.append((name, steps, *steady_state_allocations(WORKLOADS[name], steps)))
    if args.breakdown:
        bandwidth = {nt: copy_bandwidth(nt) for nt in args.threads}
        for name in args.workloads:
            if name in STEP_WORKLOADS:
                for nt in args.threads:
                    breakdowns.append(breakdown(WORKLOADS[name], nt, settings, peaks[nt],
                                                bandwidth[nt]))

    header = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{info['cpu']}, {info['cores']} physical cores ({info['logical']} logical "
                   f"CPUs available)",
        "versions": ", ".join(f"{k} {v}" for k, v in vers.items() if k != "blas"),
        "BLAS": vers["blas"],
        "sgemm peak (%d³, best of 5; rooflines use the faster)" % settings.peak_n:
            ", ".join(f"scipy's OpenBLAS {scipy_peaks[nt]:.0f}, fastopt's GEMM entry point "
                      f"({fo.get_gemm_backend()} + micro-kernel) {own_peaks[nt]:.0f} GFLOP/s "
                      f"at {nt} thread(s)" for nt in args.threads),
        "PyTorch's torch.mm peak (same size, for reference)":
            ", ".join(f"{p:.0f} GFLOP/s at {nt} thread(s)" for nt, p in torch_peaks.items())
            or "—",
        "load average (1, 5, 15 min) at start / end": f"{load_start} / {load_average()}",
        "command": "python benchmarks/compare.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:]),
        "run time": f"{time.perf_counter() - started:.0f} s",
    }
    notes = [
        "Times are medians over interleaved rounds (each round: one untimed step, then a "
        "timed block; steps over 50 ms and epochs have no untimed step); ratios > 1 mean "
        "fastopt is faster.",
        "torch default: torch.optim.Adam/SGD(params) as constructed by default; torch best: "
        "fused=True. PyTorch and fastopt start from the same weights.",
        "GEMMs alone: the step's exact GEMM shapes through fastopt's own GEMM entry point "
        "(tiles, micro-kernel or backend per shape: what the step runs) on preallocated "
        "buffers at the same thread count. GFLOP/s and % of sgemm peak count those GEMM "
        "FLOPs only.",
        "epoch: 60,000×784 random float32 rows in [0, 1), 10 random classes; fastopt "
        "Trainer.fit(epochs=1) (input checks, seeded shuffle, batch gathering included); "
        "PyTorch randperm + index_select batches; scikit-learn MLPClassifier.partial_fit over "
        "all rows (one epoch, shuffled; no BatchNorm/Dropout: sklearn has neither).",
        "The machine is shared: 2-thread figures suffer most from other processes; compare "
        "ratios within one run, not absolute times across runs.",
    ]
    targets = check_targets(rows, allocs)
    text = results_markdown(header, rows, optim_rows, allocs, targets, breakdowns, notes)
    os.makedirs(args.out, exist_ok=True)
    md = os.path.join(args.out, "compare.md")
    with open(md, "w") as f:
        f.write(text)
    png = chart(rows, optim_rows, os.path.join(args.out, "compare.png"))
    print()
    print(text)
    print(f"wrote {md}" + (f" and {png}" if png else ""))
    return {"rows": rows, "optim": optim_rows, "allocs": allocs, "targets": targets,
            "breakdowns": breakdowns, "markdown": md, "chart": png}


if __name__ == "__main__":
    main()
