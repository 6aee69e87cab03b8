"""Whole training steps (forward, loss, backward, update) on preallocated batches."""

import fastopt as fo

from .common import classification_batch, mlp


class TrainingStep:
    """The 784-256-128-10 relu MLP at batch 128 (the foundation issue's bar), SGD."""

    params = [["float32", "float64"], [1, 2]]
    param_names = ["dtype", "threads"]

    def setup(self, dtype, threads):
        self.model = mlp([784, 256, 128, 10], dtype=dtype)
        self.trainer = fo.Trainer(self.model, "softmax_cross_entropy", fo.optim.SGD(lr=0.01))
        X, y = classification_batch(128, 784, 10, dtype)
        self.X = X
        self.T = self.trainer.loss.prepare_targets(y, 10, dtype)
        self.threads = fo.threads(threads)
        self.threads.__enter__()
        from fastopt.threads import blas_single_thread
        self.blas = blas_single_thread
        self.blas.__enter__()
        self.trainer._train_step(self.X, self.T)

    def teardown(self, *args):
        self.blas.__exit__(None, None, None)
        self.threads.__exit__(None, None, None)

    def time_mnist_mlp_step(self, *args):
        self.trainer._train_step(self.X, self.T)


class TinyTabularStep:
    """32-64-64-1 relu MLP, MSE, batch 64: per-call overhead dominates."""

    def setup(self):
        import numpy as np
        self.model = mlp([32, 64, 64, 1])
        self.trainer = fo.Trainer(self.model, "mse", fo.optim.SGD(lr=0.01))
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((64, 32)).astype("float32")
        self.T = self.trainer.loss.prepare_targets(rng.standard_normal(64), 1, "float32")
        self.trainer._train_step(self.X, self.T)

    def time_tiny_tabular_step(self):
        self.trainer._train_step(self.X, self.T)


class Predict:
    params = [[1000, 10000]]
    param_names = ["rows"]

    def setup(self, rows):
        import numpy as np
        self.model = mlp([784, 256, 128, 10])
        self.X = np.random.default_rng(0).standard_normal((rows, 784)).astype("float32")

    def time_predict(self, rows):
        self.model.predict(self.X)
