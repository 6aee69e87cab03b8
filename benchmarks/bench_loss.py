"""Loss kernels: value + gradient in one pass."""

import numpy as np

from fastopt._kernels import loss
from fastopt.threads import get_num_threads


class LossKernels:
    params = [[(128, 10), (512, 10), (4096, 1000)], ["float32", "float64"]]
    param_names = ["N_K", "dtype"]

    def setup(self, shape, dtype):
        rng = np.random.default_rng(0)
        N, K = shape
        self.Z = rng.standard_normal(shape).astype(dtype)
        self.y = rng.integers(0, K, N)
        self.P = np.full(shape, 1.0 / K, dtype)
        self.Y = rng.uniform(size=shape).round().astype(dtype)
        self.w = np.ones(N, dtype)
        self.dZ = np.empty_like(self.Z)
        self.rows = np.empty(N)
        self.scale = 1.0 / N

    def time_softmax_cross_entropy(self, *args):
        loss.softmax_cross_entropy(self.Z, self.y, self.w, self.scale, 0.0, self.dZ, self.rows,
                                   n_threads=get_num_threads())

    def time_softmax_cross_entropy_proba(self, *args):
        loss.dense_target_loss(loss.FUSED_KINDS["softmax_cross_entropy_proba"], self.Z, self.P,
                               self.w, self.scale, self.dZ, self.rows, n_threads=get_num_threads())

    def time_binary_cross_entropy(self, *args):
        loss.dense_target_loss(loss.FUSED_KINDS["binary_cross_entropy"], self.Z, self.Y, self.w,
                               self.scale, self.dZ, self.rows, n_threads=get_num_threads())

    def time_mean_squared_error(self, *args):
        loss.dense_target_loss(loss.FUSED_KINDS["mse"], self.Z, self.Y, self.w, self.scale,
                               self.dZ, self.rows, n_threads=get_num_threads())
