"""Training and validation metrics, accumulated batch by batch into preallocated buffers.

Each metric has ``reset()``, ``update(out, target, weights)`` and ``result()``. Weighted
where sample weights are given (weighted mean over samples).
"""

import numpy as np

from .buffers import RowBuffers

__all__ = ["get_metric", "METRICS"]


class Metric:
    name = None
    classification = None   # True: needs class targets; False: needs numeric targets

    def __init__(self):
        self.reset()

    def reset(self):
        self._sum = 0.0
        self._weight = 0.0
        self._buffers = RowBuffers(lambda rows, key: np.empty((rows,) + key[1], key[2]))

    def _buffer(self, name, shape, dtype):
        return self._buffers.get(shape[0], (name, tuple(shape[1:]), np.dtype(dtype)))

    def _accumulate(self, per_row, weights):
        if weights is None:
            self._sum += float(per_row.sum())
            self._weight += per_row.shape[0]
        else:
            self._sum += float(np.dot(per_row, weights))
            self._weight += float(weights.sum())

    def result(self):
        return self._sum / self._weight if self._weight else float("nan")


def _predicted_and_true(metric, out, target):
    n = out.shape[0]
    if out.shape[1] == 1:  # one logit: binary
        pred = metric._buffer("pred", (n,), np.bool_)
        np.greater(out[:, 0], 0, out=pred)
        truth = metric._buffer("truth", (n,), np.bool_)
        np.greater_equal(target[:, 0], 0.5, out=truth)
        return pred, truth
    pred = metric._buffer("pred", (n,), np.intp)
    out.argmax(axis=1, out=pred)  # the method: np.argmax's wrapper allocates per call
    if target.ndim == 2:
        truth = metric._buffer("truth", (n,), np.intp)
        target.argmax(axis=1, out=truth)
        return pred, truth
    return pred, target


class Accuracy(Metric):
    """Fraction of correct predictions: argmax of the logits, or for ``multilabel``
    (binary cross-entropy with several outputs) the fraction of outputs on the right side
    of 0, per row."""

    name = "accuracy"
    classification = True
    multilabel = False

    def update(self, out, target, weights=None):
        if self.multilabel and out.shape[1] > 1:
            hit = ((out > 0) == (target >= 0.5)).mean(axis=1)
            self._accumulate(hit, weights)
            return
        pred, truth = _predicted_and_true(self, out, target)
        hit = self._buffer("hit", (out.shape[0],), np.float64)
        np.equal(pred, truth, out=hit, casting="unsafe")
        self._accumulate(hit, weights)


class TopKAccuracy(Metric):
    classification = True

    def __init__(self, k=5):
        self.k = int(k)
        self.name = f"top{self.k}_accuracy"
        super().__init__()

    def update(self, out, target, weights=None):
        n, K = out.shape
        if target.ndim == 2:
            truth = np.argmax(target, axis=1)
        else:
            truth = target
        if self.k >= K:
            hit = np.ones(n)
        else:
            true_logit = out[np.arange(n), truth]
            # Rank = number of classes scoring strictly higher than the true one.
            hit = ((out > true_logit[:, None]).sum(axis=1) < self.k).astype(np.float64)
        self._accumulate(hit, weights)


class _Regression(Metric):
    classification = False

    def update(self, out, target, weights=None):
        diff = self._buffer("diff", out.shape, np.float64)
        np.subtract(out, target, out=diff)
        self._transform(diff)
        self._accumulate(diff.mean(axis=1), weights)


class MeanSquaredError(_Regression):
    name = "mse"

    @staticmethod
    def _transform(diff):
        np.square(diff, out=diff)


class MeanAbsoluteError(_Regression):
    name = "mae"

    @staticmethod
    def _transform(diff):
        np.abs(diff, out=diff)


class R2(Metric):
    """Coefficient of determination, averaged over outputs (scikit-learn's uniform average).

    The target variance is merged batch by batch with Chan's update (count, mean, M2):
    the one-pass Σy² − (Σy)²/n loses every digit when the mean is large.
    """

    name = "r2"
    classification = False

    def reset(self):
        super().reset()
        self._n = 0.0
        self._mean = self._m2 = self._res = None

    def update(self, out, target, weights=None):
        w = np.ones(out.shape[0]) if weights is None else weights.astype(np.float64)
        t = target.astype(np.float64)
        n_b = w.sum()
        if n_b <= 0:
            return
        mean_b = (w @ t) / n_b
        m2_b = w @ ((t - mean_b) ** 2)
        if self._mean is None:
            self._mean, self._m2 = mean_b, m2_b
            self._res = np.zeros(out.shape[1])
        else:
            n = self._n + n_b
            delta = mean_b - self._mean
            self._mean = self._mean + delta * (n_b / n)
            self._m2 = self._m2 + m2_b + delta ** 2 * (self._n * n_b / n)
        self._n += n_b
        self._res += w @ ((out - t) ** 2)

    def result(self):
        if not self._n:
            return float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(self._m2 > 0, 1 - self._res / np.where(self._m2 > 0, self._m2, 1), 0.0)
        return float(r2.mean())


METRICS = {"accuracy": Accuracy, "top_k_accuracy": TopKAccuracy, "mse": MeanSquaredError,
           "mae": MeanAbsoluteError, "r2": R2}


def get_metric(spec):
    """A Metric from a name ("accuracy", "top5_accuracy", "mse", "mae", "r2") or instance."""
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str) and spec.startswith("top") and spec.endswith("_accuracy"):
        k = spec[3:-len("_accuracy")]
        if k.isdigit() and int(k) >= 1:
            return TopKAccuracy(int(k))
    if spec not in METRICS:
        raise ValueError(f"unknown metric {spec!r}; choose from accuracy, topK_accuracy "
                         "(e.g. top5_accuracy), mse, mae, r2")
    return METRICS[spec]()
