"""Optimizers: hyperparameters and state; each update is one kernel pass over a flat array.

Two ways to drive an optimizer:

1. through ``fastopt.Trainer``, on the model's parameter arena;
2. directly on flat arrays: ``opt.step(params, grads)`` updates a 1-D C-contiguous
   float32/float64 ``params`` in place, allocating state on the first call and counting
   steps itself.
"""

import numpy as np

from ._kernels import optim as _optim

__all__ = ["Optimizer", "SGD", "OPTIMIZERS"]


class Optimizer:
    """Base class: the learning rate, the step counter and the flat-array checks."""

    def __init__(self, lr):
        self.lr = lr
        self.t = 0

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        value = float(value)
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"learning rate must be a finite number >= 0, got {value}")
        self._lr = value

    @staticmethod
    def _check_flat(params, grads):
        for name, arr in (("params", params), ("grads", grads)):
            if not isinstance(arr, np.ndarray) or arr.ndim != 1:
                raise ValueError(f"{name} must be a 1-D numpy array")
            if arr.dtype not in (np.float32, np.float64):
                raise TypeError(f"{name} must be float32 or float64, got {arr.dtype}")
            if not arr.flags.c_contiguous:
                raise ValueError(f"{name} must be C-contiguous")
        if not params.flags.writeable:
            raise ValueError("params must be writeable: the update is in place")
        if params.shape != grads.shape or params.dtype != grads.dtype:
            raise ValueError(f"params {params.shape} {params.dtype} and grads "
                             f"{grads.shape} {grads.dtype} must match in shape and dtype")

    def step(self, params, grads):
        """Update ``params`` in place from ``grads`` (1-D, C-contiguous, same dtype)."""
        self._check_flat(params, grads)
        self._apply(params, grads)

    def _apply(self, params, grads):
        # The Trainer's path: the arena is known to be valid, skip the checks.
        self.t += 1
        self._update(params, grads)

    def _update(self, params, grads):
        raise NotImplementedError

    def state_dict(self):
        return {"lr": self.lr, "t": self.t}

    def load_state_dict(self, state):
        self.lr = state["lr"]
        self.t = int(state["t"])


class SGD(Optimizer):
    r"""Plain gradient descent: ``p ← p − lr·g``.

    Full-batch gradient descent, mini-batch SGD and pure stochastic SGD are this
    optimizer with ``batch_size=None``, ``batch_size=B`` and ``batch_size=1`` in
    ``Trainer.fit``.
    """

    def __init__(self, lr=0.01):
        super().__init__(lr)

    def _update(self, params, grads):
        _optim.sgd(params, grads, self.lr)


OPTIMIZERS = {"sgd": SGD}
