"""Losses: target checks and per-batch buffers; value and gradient come from one kernel call.

Each loss returns ``(value, dpred)`` for a batch: the weighted mean of the per-sample
losses and its gradient with respect to the predictions (a buffer reused across calls).
"""

import numpy as np

from ._kernels import loss as _loss
from .buffers import RowBuffers
from .threads import get_num_threads

__all__ = ["Loss", "SoftmaxCrossEntropy", "BinaryCrossEntropy", "MeanSquaredError",
           "get_loss", "LOSSES"]


class Loss:
    """Base: subclasses define ``prepare_targets`` and ``_kernel_call``."""

    name = None
    is_classification = False

    def __init__(self):
        # (d loss / d pred, per-row losses, unit weights) per (outputs, dtype)
        self._buffers = RowBuffers(lambda rows, key: (np.empty((rows, key[0]), key[1]),
                                                      np.empty(rows, np.float64),
                                                      np.ones(rows, key[1])))

    def _get_buffers(self, pred):
        return self._buffers.get(pred.shape[0], (pred.shape[1], pred.dtype))

    @staticmethod
    def scale_for(n, weights):
        """The factor that turns ``Σ wᵢ·ℓᵢ`` into the (weighted) mean."""
        if weights is None:
            return 1.0 / n
        # In row order, in float64, as the compiled step sums them: the same bits.
        total = float(np.cumsum(weights, dtype=np.float64)[-1]) if len(weights) else 0.0
        return 1.0 / total if total > 0 else 0.0

    def fused_kind(self, target):
        """The loss kind code for the fused Dense step, or None when it has none."""
        return None

    def __call__(self, pred, target, weights=None, scale=None):
        """Loss value (float) and d loss / d pred for one batch.

        ``weights`` (n,) and ``scale`` give ``scale·Σ wᵢ·ℓᵢ``; by default the plain mean.
        ``target`` must come from ``prepare_targets``.
        """
        dpred, row_loss, ones = self._get_buffers(pred)
        if scale is None:
            scale = self.scale_for(pred.shape[0], weights)
        if weights is None:
            weights = ones
        return self._kernel_call(pred, target, weights, scale, dpred, row_loss), dpred

    def prepare_targets(self, y, n_outputs, dtype):
        raise NotImplementedError

    def get_config(self):
        return {}


def _numeric(y, name="y"):
    if hasattr(y, "to_numpy") and not isinstance(y, np.ndarray):
        y = y.to_numpy()
    arr = np.asarray(y)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.size and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


class SoftmaxCrossEntropy(Loss):
    """Softmax cross-entropy from logits, the (weighted) mean over the batch:
    ℓᵢ = logsumexp(zᵢ) − Σₖ tᵢₖ·zᵢₖ (t: one-hot label smoothed by ε, or the target
    probabilities), ∂ℓᵢ/∂zᵢ = softmax(zᵢ)·Σₖtᵢₖ − tᵢ.

    Targets: integer class labels in [0, K), or a (n, K) matrix of probabilities.
    ``label_smoothing`` ε mixes the one-hot target with the uniform distribution.
    """

    name = "softmax_cross_entropy"
    is_classification = True

    def __init__(self, label_smoothing=0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def get_config(self):
        return {"label_smoothing": self.label_smoothing}

    def prepare_targets(self, y, n_outputs, dtype):
        arr = _numeric(y)
        if n_outputs < 2:
            raise ValueError("softmax_cross_entropy needs a model with at least 2 outputs "
                             f"(one per class), this one has {n_outputs}")
        if arr.ndim == 2 and arr.shape[1] == n_outputs and arr.dtype.kind == "f":
            P = np.array(arr, dtype=dtype, order="C")
            if (P < 0).any() or not np.allclose(P.sum(axis=1), 1.0, atol=1e-3):
                raise ValueError("probability targets must be non-negative and each row must sum to 1")
            if self.label_smoothing:  # the same mixing as for integer labels
                P *= 1 - self.label_smoothing
                P += self.label_smoothing / n_outputs
            return P
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise ValueError(f"y must be 1-D class labels or (n, {n_outputs}) probabilities, "
                             f"got shape {arr.shape}")
        if arr.dtype.kind == "f":
            if arr.size and not np.array_equal(arr, np.round(arr)):
                raise ValueError("class labels must be integers; got non-integer values "
                                 "(for probability targets pass an (n, K) float matrix)")
        elif arr.dtype.kind == "b":
            arr = arr.astype(np.int64)
        labels = arr.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= n_outputs):
            raise ValueError(f"class labels must be in [0, {n_outputs}) for a model with "
                             f"{n_outputs} outputs; got values from {labels.min()} to {labels.max()}")
        return np.ascontiguousarray(labels)

    def fused_kind(self, target):
        if type(self) is not SoftmaxCrossEntropy:
            return None
        if target.ndim == 2:
            return _loss.FUSED_KINDS["softmax_cross_entropy_proba"]
        return _loss.FUSED_KINDS["softmax_cross_entropy"]

    def _kernel_call(self, pred, target, w, scale, dpred, row_loss):
        if target.ndim == 2:
            return _loss.dense_target_loss(_loss.FUSED_KINDS["softmax_cross_entropy_proba"],
                                           pred, target, w, scale, dpred, row_loss,
                                           n_threads=get_num_threads())
        return _loss.softmax_cross_entropy(pred, target, w, scale, self.label_smoothing,
                                           dpred, row_loss, n_threads=get_num_threads())


def _as_float_targets(y, n_outputs, dtype, loss_name):
    arr = _numeric(y)
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != n_outputs:
        raise ValueError(f"{loss_name} needs targets of shape (n, {n_outputs}) to match the "
                         f"model's {n_outputs} outputs, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy from logits, targets y in [0, 1], one column per output:
    ℓᵢ = (1/K)·Σₖ [max(z,0) − z·y + log(1 + e^(−|z|))], ∂ℓᵢ/∂z = (σ(z) − y)/K."""

    name = "binary_cross_entropy"
    is_classification = True

    def prepare_targets(self, y, n_outputs, dtype):
        Y = _as_float_targets(y, n_outputs, dtype, self.name)
        if Y.size and (Y.min() < 0 or Y.max() > 1):
            raise ValueError("binary_cross_entropy targets must be in [0, 1]; "
                             f"got values from {Y.min()} to {Y.max()}")
        return Y

    def fused_kind(self, target):
        return _loss.FUSED_KINDS[self.name] if type(self) is BinaryCrossEntropy else None

    def _kernel_call(self, pred, target, w, scale, dpred, row_loss):
        return _loss.dense_target_loss(_loss.FUSED_KINDS["binary_cross_entropy"], pred, target,
                                       w, scale, dpred, row_loss, n_threads=get_num_threads())


class MeanSquaredError(Loss):
    """Mean squared error over all outputs: ℓᵢ = (1/K)·Σₖ (ŷ − y)², ∂ℓᵢ/∂ŷ = 2(ŷ − y)/K."""

    name = "mse"

    def prepare_targets(self, y, n_outputs, dtype):
        return _as_float_targets(y, n_outputs, dtype, self.name)

    def fused_kind(self, target):
        return _loss.FUSED_KINDS[self.name] if type(self) is MeanSquaredError else None

    def _kernel_call(self, pred, target, w, scale, dpred, row_loss):
        return _loss.dense_target_loss(_loss.FUSED_KINDS["mse"], pred, target, w, scale, dpred,
                                       row_loss, n_threads=get_num_threads())


LOSSES = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "cross_entropy": SoftmaxCrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def get_loss(loss):
    """A Loss instance from a name or an instance."""
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[loss]()
