"""The reference workloads of the comparison issue, defined once for compare.py and asv.

Each workload is a model, a loss, an optimizer and a batch size. This module builds the
fastopt side through the public API, the batch of random data it trains on, and the
exact list of GEMMs one training step performs (the "GEMMs alone" floor of the step).

    tiny   32→64→64→1, relu, MSE, SGD momentum 0.9 (lr 0.01), batch 64
    mnist  784→256→128→10, each hidden block Dense+BatchNorm+relu+Dropout(0.2),
           softmax cross-entropy, Adam (lr 1e-3), batch 128
    wide   1024→2048→2048→10, Dense+relu, softmax cross-entropy, Adam (lr 1e-3), batch 512
    mlp    784→256→128→10, Dense+relu, softmax cross-entropy, plain SGD (lr 0.01), batch 128
           (the foundation issue's bar: a step within 1.3x of its GEMMs alone)
"""

from dataclasses import dataclass

import numpy as np

import fastopt as fo


@dataclass(frozen=True)
class Workload:
    name: str
    sizes: tuple        # input, hidden..., output
    block: str          # "plain": Dense(relu); "bn-dropout": Dense, BatchNorm, relu, Dropout(0.2)
    loss: str           # fastopt loss name
    optimizer: str      # "sgd-momentum" or "adam"
    batch: int
    dropout: float = 0.2

    @property
    def title(self):
        arch = "→".join(map(str, self.sizes))
        block = "Dense+BN+relu+Dropout" if self.block == "bn-dropout" else "relu"
        return f"{arch} {block}, {self.loss}, {self.optimizer}, batch {self.batch}"


WORKLOADS = {
    "tiny": Workload("tiny", (32, 64, 64, 1), "plain", "mse", "sgd-momentum", 64),
    "mnist": Workload("mnist", (784, 256, 128, 10), "bn-dropout", "softmax_cross_entropy",
                      "adam", 128),
    "wide": Workload("wide", (1024, 2048, 2048, 10), "plain", "softmax_cross_entropy",
                     "adam", 512),
    "mlp": Workload("mlp", (784, 256, 128, 10), "plain", "softmax_cross_entropy", "sgd", 128),
}

LEARNING_RATE = {"sgd-momentum": 0.01, "sgd": 0.01, "adam": 1e-3}
MOMENTUM = 0.9


def fastopt_model(w, seed=0):
    layers = []
    for units in w.sizes[1:-1]:
        if w.block == "bn-dropout":
            layers += [fo.Dense(units), fo.BatchNorm(momentum=0.1, eps=1e-5),
                       fo.Activation("relu"), fo.Dropout(w.dropout)]
        else:
            layers.append(fo.Dense(units, activation="relu"))
    layers.append(fo.Dense(w.sizes[-1]))
    return fo.Sequential(layers, input_dim=w.sizes[0], dtype="float32", seed=seed)


def fastopt_optimizer(w):
    lr = LEARNING_RATE[w.optimizer]
    if w.optimizer == "adam":
        return fo.optim.Adam(lr=lr)
    return fo.optim.SGD(lr=lr, momentum=MOMENTUM if w.optimizer == "sgd-momentum" else 0.0)


def fastopt_trainer(w, seed=0):
    return fo.Trainer(fastopt_model(w, seed), w.loss, fastopt_optimizer(w))


def data(w, rows=None, seed=0):
    """Random inputs in [0, 1) and targets: class labels (int64) or (rows, 1) floats."""
    rows = w.batch if rows is None else rows
    rng = np.random.default_rng(seed)
    X = rng.random((rows, w.sizes[0]), dtype=np.float32)
    if w.loss == "mse":
        y = rng.standard_normal((rows, w.sizes[-1])).astype(np.float32)
    else:
        y = rng.integers(0, w.sizes[-1], rows)
    return X, y


def fastopt_targets(trainer, y):
    return trainer.loss.prepare_targets(y, trainer.model.output_dim, trainer.model.dtype)


def fastopt_step(trainer, X, T):
    """One training step (forward, loss, backward, global norm, update) on a prepared batch.

    The caller holds ``fastopt.threads(n)`` and ``fastopt.threads.blas_single_thread``.
    The one place to change when the Trainer grows a public ``train_step(xb, yb)``.
    """
    return trainer._train_step(X, T)


def gemm_calls(w, rows=None):
    """The step's GEMMs as (m, n, k, what): C (m×n) = op(A) (m×k) · op(B) (k×n).

    Per layer l (in → out): forward Z = X·Wᵀ (rows, out, in); dW = dZᵀ·X (out, in, rows);
    dX = dZ·W (rows, in, out) for every layer but the first (no input gradient).
    """
    rows = w.batch if rows is None else rows
    pairs = list(zip(w.sizes[:-1], w.sizes[1:]))
    calls = [(rows, o, i, f"fwd {i}→{o}") for i, o in pairs]
    calls += [(o, i, rows, f"dW {i}→{o}") for i, o in pairs]
    calls += [(rows, i, o, f"dX {i}→{o}") for i, o in pairs[1:]]
    return calls


def gemm_flops(w, rows=None):
    return sum(2 * m * n * k for m, n, k, _ in gemm_calls(w, rows))
