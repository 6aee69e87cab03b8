"""Knowledge distillation: train a student from a trained teacher's softened outputs.

Loss (Hinton et al. 2015): ``α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α)·CE(z_s, y)``.
The teacher's logits are computed batch by batch in evaluation mode, or once for the whole
training set with ``precompute_teacher=True`` (faster when the teacher is big and the data
fits in memory twice).
"""

import numpy as np

from ._kernels import loss as _loss
from .buffers import RowBuffers
from .losses import Loss, SoftmaxCrossEntropy
from .threads import get_num_threads
from .train import Trainer

__all__ = ["DistillationLoss", "Distiller"]


class DistillationLoss(Loss):
    """Targets are (n, K + 1): the teacher's K logits, then the class label (as a float)."""

    name = "distillation"
    is_classification = True

    def __init__(self, temperature=4.0, alpha=0.9):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        # (labels, teacher logits, scratch) per (outputs, dtype)
        self._labels = RowBuffers(lambda rows, key: (np.empty(rows, np.int64),
                                                     np.empty((rows, key[0]), key[1]),
                                                     np.empty((rows, key[0]), key[1])))

    def get_config(self):
        return {"temperature": self.temperature, "alpha": self.alpha}

    def prepare_targets(self, y, n_outputs, dtype):
        arr = np.asarray(y)
        if arr.ndim == 2 and arr.shape[1] == n_outputs + 1:  # already (teacher, label)
            return np.ascontiguousarray(arr, dtype=dtype)
        labels = SoftmaxCrossEntropy().prepare_targets(y, n_outputs, dtype)
        if labels.ndim != 1:
            raise ValueError("distillation needs integer class labels as y")
        target = np.zeros((labels.shape[0], n_outputs + 1), dtype)
        target[:, n_outputs] = labels
        return target

    def _kernel_call(self, pred, target, w, scale, dpred, row_loss):
        K = pred.shape[1]
        labels, teacher, scratch = self._labels.get(pred.shape[0], (K, pred.dtype))
        np.copyto(labels, target[:, K], casting="unsafe")
        np.copyto(teacher, target[:, :K])
        return _loss.distillation(pred, teacher, labels, w, scale, self.temperature, self.alpha,
                                  dpred, scratch, row_loss, n_threads=get_num_threads())


class Distiller(Trainer):
    """A Trainer for a student that learns from ``teacher`` (a trained Sequential with the
    same inputs and number of classes). ``fit(X, y, ...)`` takes hard labels as y.

    Parameters: ``temperature`` T (softening), ``alpha`` (weight of the soft part), and
    ``precompute_teacher``; the rest as Trainer.
    """

    def __init__(self, student, teacher, optimizer, temperature=4.0, alpha=0.9,
                 precompute_teacher=False, **trainer_kwargs):
        if teacher.input_dim != student.input_dim or teacher.output_dim != student.output_dim:
            raise ValueError(f"teacher ({teacher.input_dim} → {teacher.output_dim}) and student "
                             f"({student.input_dim} → {student.output_dim}) must have the same "
                             "inputs and classes")
        if teacher.dtype != student.dtype:
            raise ValueError(f"teacher ({teacher.dtype}) and student ({student.dtype}) must "
                             "share a dtype")
        super().__init__(student, DistillationLoss(temperature, alpha), optimizer,
                         **trainer_kwargs)
        self.teacher = teacher
        self.precompute_teacher = precompute_teacher
        self._hard_loss = SoftmaxCrossEntropy()
        self._metric_labels = RowBuffers(lambda rows, key: np.empty(rows, np.int64))
        self._targets = RowBuffers(lambda rows, key: np.empty((rows, key[0]), key[1]))

    def _prepare(self, X, y, name_x="X", name_y="y"):
        X, T = super()._prepare(X, y, name_x, name_y)
        if self.precompute_teacher:
            if np.may_share_memory(T, np.asarray(y)):
                T = T.copy()   # the caller's array is never written
            T[:, :-1] = self.teacher.predict(X)
        return X, T

    def _metric_target(self, tb):
        labels = self._metric_labels.get(tb.shape[0])
        np.copyto(labels, tb[:, -1], casting="unsafe")
        return labels

    def _loss_targets(self, xb, tb):
        if self.precompute_teacher:
            return tb
        # The batch's own (teacher logits, label) rows: tb may be a view of the caller's y.
        full = self._targets.get(tb.shape[0], (tb.shape[1], tb.dtype))
        full[:, -1] = tb[:, -1]
        plan = self.teacher.step_plan(xb.shape[0], training=False)
        plan.bind(xb)
        np.copyto(full[:, :-1], plan.forward(), casting="same_kind")
        return full

    def evaluate(self, X, y, batch_size=1024, sample_weight=None):
        """The student's hard-label cross-entropy and accuracy on (X, y)."""
        from .metrics import get_metric

        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == self.model.output_dim + 1:  # prepared (teacher, label)
            y = y[:, -1]
        labels = self._hard_loss.prepare_targets(y, self.model.output_dim, self.model.dtype)
        W = self._weights(labels, sample_weight, None, labels.shape[0])
        out = self.model.predict(X, batch_size=batch_size)
        value, _ = self._hard_loss(out, labels, W)
        acc = get_metric("accuracy")
        acc.update(out, labels, W)
        return {"loss": value, "accuracy": acc.result()}
