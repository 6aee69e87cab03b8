"""asv benchmarks: one optimizer step over a flat float32 parameter array, and the
global gradient norm.

Sizes: 10,000,000 parameters (memory-bound: an Adam step moves 7 floats per
parameter) and 235,914, the arena of the 784-256-128-10 MLP (per-call overhead and
cache bandwidth). Runs as plain Python too:
``python -c "import benchmarks.bench_optim as b; b.run()"``.
"""

import time

import numpy as np

import fastopt
from fastopt import optim

MLP_ARENA = 235914
LARGE = 10_000_000

# name -> (optimizer, constructor arguments)
RECIPES = {
    "sgd": ("sgd", {"lr": 0.01}),
    "sgd-momentum": ("sgd", {"lr": 0.01, "momentum": 0.9}),
    "sgd-nesterov": ("sgd", {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
    "adagrad": ("adagrad", {}),
    "rmsprop": ("rmsprop", {}),
    "rmsprop-centered-momentum": ("rmsprop", {"centered": True, "momentum": 0.9}),
    "adam": ("adam", {}),
    "adam-amsgrad": ("adam", {"amsgrad": True}),
    "adamw": ("adamw", {}),
}


class OptimizerStep:
    params = (list(RECIPES), [MLP_ARENA, LARGE], [1, 2])
    param_names = ["optimizer", "n_params", "threads"]

    def setup(self, recipe, n, threads):
        self._previous = fastopt.get_num_threads()
        fastopt.set_num_threads(threads)
        rng = np.random.default_rng(0)
        self.p = rng.standard_normal(n).astype(np.float32)
        self.g = (rng.standard_normal(n) * 1e-3).astype(np.float32)
        name, kwargs = RECIPES[recipe]
        self.opt = optim.get_optimizer(name, **kwargs)
        self.opt.step(self.p, self.g)          # allocates the state
        # The arena's two segments (decayed weights first, then biases): the Trainer's path.
        cut = n - n // 100
        self.segments = [(0, cut, True), (cut, n, False)]

    def teardown(self, recipe, n, threads):
        fastopt.set_num_threads(self._previous)

    def time_step(self, recipe, n, threads):
        self.opt.step(self.p, self.g)

    def time_step_segments_clipped(self, recipe, n, threads):
        self.opt._apply(self.p, self.g, self.segments, 0.5)


class GlobalNorm:
    params = ([MLP_ARENA, LARGE], [1, 2])
    param_names = ["n_params", "threads"]

    def setup(self, n, threads):
        self._previous = fastopt.get_num_threads()
        fastopt.set_num_threads(threads)
        self.g = np.random.default_rng(0).standard_normal(n).astype(np.float32)

    def teardown(self, n, threads):
        fastopt.set_num_threads(self._previous)

    def time_global_norm(self, n, threads):
        optim.global_norm(self.g)


def run(repeat=20):
    """Plain-Python run of every benchmark: median times."""
    for cls in (OptimizerStep, GlobalNorm):
        names = [m for m in dir(cls) if m.startswith("time_")]
        grids = np.array(np.meshgrid(*cls.params, indexing="ij"), dtype=object)
        for args in grids.reshape(len(cls.params), -1).T:
            bench = cls()
            bench.setup(*args)
            try:
                for name in names:
                    method = getattr(bench, name)
                    reps = repeat if args[cls.param_names.index("n_params")] > 1e6 else 10 * repeat
                    ts = []
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        method(*args)
                        ts.append(time.perf_counter() - t0)
                    print(f"{cls.__name__}.{name}{tuple(args)}: {np.median(ts) * 1e6:.1f} us")
            finally:
                bench.teardown(*args)


if __name__ == "__main__":
    run()
