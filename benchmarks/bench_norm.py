"""asv benchmarks: BatchNorm forward/backward and the fused BN + relu + Dropout block.

Timed through the layers (as a training step calls them), float32, on shapes from a
small MLP's hidden layer to a wide one.
"""

import numpy as np

import fastopt as fo

SHAPES = [(128, 256), (512, 2048), (4096, 1024)]


def _layers(kind):
    if kind == "bn":
        return [fo.BatchNorm()]
    if kind == "bn_relu_dropout":
        return [fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2)]
    raise ValueError(kind)


class _Block:
    params = (SHAPES, ["bn", "bn_relu_dropout"])
    param_names = ["shape", "block"]
    timeout = 120

    def setup(self, shape, block):
        rows, d = shape
        self.model = fo.Sequential(_layers(block), input_dim=d, dtype="float32", seed=0)
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((rows, d)).astype(np.float32)
        self.dy = rng.standard_normal((rows, d)).astype(np.float32)
        self.model._forward(self.x, True)      # workspaces made here, not in the timing
        self.model._backward(self.dy, True)


class BatchNormForward(_Block):
    def time_forward_train(self, shape, block):
        self.model._forward(self.x, True)

    def time_forward_eval(self, shape, block):
        self.model._forward(self.x, False)


class BatchNormBackward(_Block):
    def time_backward(self, shape, block):
        self.model._backward(self.dy, True)


class BatchNormStep(_Block):
    def time_forward_backward(self, shape, block):
        self.model._forward(self.x, True)
        self.model._backward(self.dy, True)
