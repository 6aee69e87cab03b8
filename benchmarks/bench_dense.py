"""Dense kernels: GEMM + fused epilogue forward, fused activation-gradient + bias sum + GEMMs backward."""

import numpy as np

import fastopt as fo
from fastopt._kernels import dense
from fastopt.threads import blas_single_thread, get_num_threads


class DenseKernels:
    params = ([(128, 784, 256), (128, 256, 128), (512, 1024, 2048), (64, 32, 64)],
              ["relu", "gelu", "tanh"], [1, 2])
    param_names = ["N_in_out", "activation", "threads"]

    def setup(self, shape, activation, threads):
        N, n_in, n_out = shape
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((N, n_in)).astype(np.float32)
        self.W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
        self.b = rng.standard_normal(n_out).astype(np.float32)
        self.act = dense.ACTIVATIONS[activation]
        self.A = np.empty((N, n_out), np.float32)
        self.Z = np.empty_like(self.A) if self.act in dense.NEEDS_PREACTIVATION else self.A
        self.dA = rng.standard_normal((N, n_out)).astype(np.float32)
        self.dZ = np.empty_like(self.A)
        self.dW = np.empty_like(self.W)
        self.db = np.empty_like(self.b)
        self.dX = np.empty_like(self.X)
        self.threads = fo.threads(threads)
        self.threads.__enter__()
        blas_single_thread.__enter__()
        dense.forward(self.X, self.W, self.b, self.Z, self.A, self.act, 0.0, True,
                      n_threads=get_num_threads())

    def teardown(self, *args):
        blas_single_thread.__exit__(None, None, None)
        self.threads.__exit__(None, None, None)

    def time_forward(self, *args):
        dense.forward(self.X, self.W, self.b, self.Z, self.A, self.act, 0.0, True,
                      n_threads=get_num_threads())

    def time_backward(self, *args):
        dense.backward(self.dA, self.X, self.W, self.A, self.Z, self.dZ, self.dW, self.db,
                       self.dX, self.act, 0.0, True, True, n_threads=get_num_threads())


class ActivationEpilogue:
    """The elementwise passes alone (no GEMM), to watch their vectorisation."""

    params = [["relu", "gelu", "sigmoid", "softplus"], [(512, 2048)]]
    param_names = ["activation", "shape"]

    def setup(self, activation, shape):
        rng = np.random.default_rng(0)
        self.Z = rng.standard_normal(shape).astype(np.float32)
        self.A = np.empty_like(self.Z)
        self.dZ = np.empty_like(self.Z)
        self.act = dense.ACTIVATIONS[activation]
        dense.activation_forward(self.Z, self.A, self.act, 0.0, n_threads=get_num_threads())

    def time_activation_forward(self, *args):
        dense.activation_forward(self.Z, self.A, self.act, 0.0, n_threads=get_num_threads())

    def time_activation_backward(self, *args):
        dense.activation_backward(self.Z, self.A, self.Z, self.dZ, self.act, 0.0,
                                  n_threads=get_num_threads())
