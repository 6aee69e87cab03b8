"""Whole training steps of the foundation's reference net, and batched prediction.

(The issue workloads tiny / mnist / wide are in bench_workloads.py.)
"""

import numpy as np

import fastopt as fo
from fastopt.threads import blas_single_thread


def _relu_mlp(sizes, dtype):
    layers = [fo.Dense(n, activation="relu") for n in sizes[1:-1]] + [fo.Dense(sizes[-1])]
    return fo.Sequential(layers, input_dim=sizes[0], dtype=dtype, seed=0)


class TrainingStep:
    """784-256-128-10 relu MLP, plain SGD, batch 128 (the foundation issue's bar)."""

    params = [["float32", "float64"], [1, 2]]
    param_names = ["dtype", "threads"]

    def setup(self, dtype, threads):
        rng = np.random.default_rng(0)
        self.trainer = fo.Trainer(_relu_mlp([784, 256, 128, 10], dtype), "softmax_cross_entropy",
                                  fo.optim.SGD(lr=0.01))
        self.X = rng.standard_normal((128, 784)).astype(dtype)
        self.T = self.trainer.loss.prepare_targets(rng.integers(0, 10, 128), 10, dtype)
        self.threads = fo.threads(threads)
        self.threads.__enter__()
        blas_single_thread.__enter__()
        self.trainer._train_step(self.X, self.T)

    def teardown(self, *args):
        blas_single_thread.__exit__(None, None, None)
        self.threads.__exit__(None, None, None)

    def time_mnist_mlp_step(self, *args):
        self.trainer._train_step(self.X, self.T)


class Predict:
    params = [[1000, 10000]]
    param_names = ["rows"]

    def setup(self, rows):
        self.model = _relu_mlp([784, 256, 128, 10], "float32")
        self.X = np.random.default_rng(0).standard_normal((rows, 784)).astype("float32")

    def time_predict(self, rows):
        self.model.predict(self.X)
