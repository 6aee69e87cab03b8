"""asv benchmarks: Dropout forward (Philox mask generation) and backward (stored bits),
backward by regenerating the mask instead (the measurement behind storing bits), and
the mask alone (the floor under any exact dropout)."""

import numpy as np

import fastopt as fo
from fastopt._kernels import _testing
from fastopt.threads import get_num_threads

SHAPES = [(128, 256), (512, 2048), (4096, 1024)]


class Dropout:
    params = (SHAPES,)
    param_names = ["shape"]
    timeout = 120

    def setup(self, shape):
        rows, d = shape
        self.model = fo.Sequential([fo.Dropout(0.2)], input_dim=d, dtype="float32", seed=0)
        self.layer = self.model.layers[0]
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((rows, d)).astype(np.float32)
        self.dy = rng.standard_normal((rows, d)).astype(np.float32)
        self.model._forward(self.x, True)
        self.model._backward(self.dy, True)
        self.out = np.empty_like(self.x)
        self.bits = np.zeros_like(self.layer._out["bits"])

    def time_forward(self, shape):
        self.model._forward(self.x, True)

    def time_backward_stored_bits(self, shape):
        self.model._backward(self.dy, True)

    def time_mask_bits_alone(self, shape):
        seed, step, layer = self.layer.key()
        _testing.mask_bits(self.bits, shape[1], seed, step, layer, self.layer.threshold,
                           n_threads=get_num_threads())

    def time_backward_regenerated(self, shape):
        seed, step, layer = self.layer.key()
        _testing.regenerate_backward(self.dy, self.out, self.bits, seed, step, layer,
                                     self.layer.threshold, self.layer.scale,
                                     n_threads=get_num_threads())


class Philox:
    """Raw generator throughput: 2^18 blocks = 2^20 32-bit words."""

    def setup(self):
        self.out = np.empty(1 << 20, np.uint32)

    def time_philox_fill_simd(self):
        _testing.philox_fill_blocks(self.out, 0, 1, 2, 3, 4, 5)

    def time_philox_fill_scalar(self):
        _testing.philox_fill_blocks(self.out, 0, 1, 2, 3, 4, 5, scalar=True)
