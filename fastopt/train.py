"""The training loop: shuffle, gather batches into reused buffers, forward, loss,
backward, update, record."""

import math
import sys
import time

import numpy as np

from .losses import get_loss
from .optim import Optimizer
from .threads import blas_single_thread
from .validation import as_matrix, check_positive_int, check_same_length

__all__ = ["Trainer", "History"]


class History:
    """Per-epoch records: ``history["loss"]`` is the list of training losses."""

    def __init__(self):
        self.epoch = []
        self.history = {}

    def record(self, epoch, **values):
        self.epoch.append(epoch)
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


class _BatchGatherer:
    """Gathers shuffled rows into buffers made once; views cached per batch length."""

    def __init__(self, X, T, batch_size):
        self.X, self.T = X, T
        self._X = np.empty((batch_size,) + X.shape[1:], X.dtype)
        self._T = np.empty((batch_size,) + T.shape[1:], T.dtype)
        self._views = {}

    def gather(self, idx):
        m = idx.shape[0]
        views = self._views.get(m)
        if views is None:
            views = self._views[m] = (self._X[:m], self._T[:m])
        xb, tb = views
        # mode="clip": indices come from a permutation; "raise" would buffer (allocate).
        np.take(self.X, idx, axis=0, out=xb, mode="clip")
        np.take(self.T, idx, axis=0, out=tb, mode="clip")
        return xb, tb


class Trainer:
    """Trains a model with a loss and an optimizer.

    Parameters
    ----------
    model : Sequential
    loss : str or Loss
        "softmax_cross_entropy", "binary_cross_entropy" or "mse".
    optimizer : Optimizer
    """

    def __init__(self, model, loss, optimizer):
        self.model = model
        self.loss = get_loss(loss)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastopt optimizer, got {optimizer!r}")
        self.optimizer = optimizer
        self.step_count = 0

    def _prepare(self, X, y, name_x="X", name_y="y"):
        X = as_matrix(X, self.model.dtype, name=name_x, n_features=self.model.input_dim)
        T = self.loss.prepare_targets(y, self.model.output_dim, self.model.dtype)
        check_same_length(X, T, name_x, name_y)
        return X, T

    def _train_step(self, xb, tb):
        """One step; returns the batch loss. A non-finite loss is raised before any update."""
        model = self.model
        out = model._forward(xb, True)
        value, dout = self.loss(out, tb)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"the training loss became {value} at step {self.step_count + 1}; the model "
                "keeps the weights of the last finite step. Lower the learning rate or "
                "check the inputs' scale.")
        model._backward(dout, False)
        self.optimizer._apply(model.arena.data, model.arena.grad)
        self.step_count += 1
        return value

    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, seed=0, verbose=0):
        """Train for ``epochs`` passes over (X, y); returns a History.

        ``batch_size=None`` is full-batch gradient descent, ``batch_size=1`` pure
        stochastic gradient descent. X of any numeric dtype is converted once to the
        model's dtype. The last partial batch is kept.
        """
        X, T = self._prepare(X, y)
        epochs = check_positive_int(epochs, "epochs")
        n = X.shape[0]
        batch_size = n if batch_size is None else min(check_positive_int(batch_size, "batch_size"), n)
        rng = np.random.default_rng(seed)
        gatherer = _BatchGatherer(X, T, batch_size) if shuffle and batch_size < n else None
        history = History()
        with blas_single_thread:
            for epoch in range(1, epochs + 1):
                start_time = time.perf_counter()
                total = 0.0
                order = rng.permutation(n) if gatherer is not None else None
                for start in range(0, n, batch_size):
                    stop = min(start + batch_size, n)
                    if order is None:
                        xb, tb = X[start:stop], T[start:stop]
                    else:
                        xb, tb = gatherer.gather(order[start:stop])
                    total += self._train_step(xb, tb) * (stop - start)
                elapsed = time.perf_counter() - start_time
                history.record(epoch, loss=total / n, lr=self.optimizer.lr, time=elapsed)
                if verbose:
                    print(f"epoch {epoch:>3}/{epochs}  loss {total / n:.6f}  ({elapsed:.3f} s)",
                          file=sys.stdout, flush=True)
        return history

    def evaluate(self, X, y, batch_size=1024):
        """Mean loss over (X, y), and accuracy for classification losses."""
        X, T = self._prepare(X, y)
        out = self.model.predict(X, batch_size=batch_size)
        value, _ = self.loss(out, T)
        result = {"loss": value}
        if self.loss.is_classification:
            result["accuracy"] = accuracy(out, T)
        return result


def accuracy(out, T):
    """Fraction of rows whose predicted class matches the target."""
    if out.shape[1] == 1:  # binary logits
        pred = (out[:, 0] > 0).astype(np.int64)
        truth = (T[:, 0] >= 0.5).astype(np.int64)
    else:
        pred = out.argmax(axis=1)
        truth = T.argmax(axis=1) if T.ndim == 2 else T
    return float(np.mean(pred == truth))
