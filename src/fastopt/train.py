"""The training loop: shuffle, then per batch one call of the model's compiled step plan
(gather, forward, loss, backward, gradient norm: fastopt.plan), clip, update, schedule,
metrics, validation, callbacks, History.

Failure behaviour: bad input is rejected before any work; a non-finite loss or gradient
norm is never applied (error or skipped step, by ``on_nonfinite``); Ctrl-C stops at the
end of the current step and returns the History with the model consistent.
"""

import math
import time

import numpy as np

from .callbacks import Callback, ProgressBar
from .layers import BatchNorm
from .losses import get_loss
from .metrics import get_metric
from .model import Sequential, class_probabilities
from ._signals import _InterruptFlag
from .optim import Optimizer, clip_scale
from .threads import blas_single_thread
from .validation import (as_matrix, check_number, check_positive_int, check_same_length,
                         check_seed)

__all__ = ["Trainer", "History"]


class History:
    """Per-epoch records: ``history["loss"]``, ``history["val_loss"]``, metrics, ``lr``, ``time``.

    ``nonfinite_steps`` lists the steps whose loss or gradient norm was not finite;
    ``interrupted`` is True when training was stopped by Ctrl-C; ``aborted`` when an
    exception ended it (the state may then be mid-step).
    """

    def __init__(self):
        self.epoch = []
        self.history = {}
        self.nonfinite_steps = []
        self.interrupted = False
        self.aborted = False
        self.restored_epoch = None

    def record(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            if key != "epoch":
                self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def plot(self, path):
        """Draw the learning curves (loss and each metric, train and validation) to a PNG."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install matplotlib") from None
        names = [k for k in self.history if not k.startswith("val_") and k not in ("lr", "time")]
        fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.5 * (len(names) + 1), 3.5))
        for ax, name in zip(axes, names):
            ax.plot(self.epoch, self.history[name], label=f"train {name}")
            if f"val_{name}" in self.history:
                ax.plot(self.epoch, self.history[f"val_{name}"], label=f"validation {name}")
            ax.set_xlabel("epoch")
            ax.set_title(name)
            ax.legend()
        axes[-1].plot(self.epoch, self.history["lr"])
        axes[-1].set_xlabel("epoch")
        axes[-1].set_title("learning rate")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"




class _AgreedInterrupt:
    """Data-parallel: the Ctrl-C flag every rank agreed on at the last step (a rank's
    own flag, ``local``, travels in each step's small reduction)."""

    def __init__(self, dist, local):
        self.dist = dist
        self.local = local

    @property
    def raised(self):
        return self.dist.interrupted


class Trainer:
    """Trains a model with a loss and an optimizer.

    Parameters
    ----------
    model : Sequential
    loss : str or Loss
        "softmax_cross_entropy", "binary_cross_entropy" or "mse" (or a Loss instance).
    optimizer : Optimizer
    schedule : schedule object or None
        From ``fastopt.schedules``; called per step or per epoch as its ``interval`` says.
    clip_norm : float or None
        Rescale the gradients so their global L2 norm is at most ``clip_norm``.
    clip_value : float or None
        Clamp every gradient to [−clip_value, clip_value].
    metrics : list of str
        Any of "accuracy", "topK_accuracy" (e.g. "top5_accuracy"), "mse", "mae", "r2",
        reported for training batches and validation data.
    callbacks : list of Callback
    on_nonfinite : "raise" or "skip"
        What a non-finite loss or gradient norm does: stop with FloatingPointError (the
        model keeps the last finite weights) or skip that step's update. Either way the
        step is listed in ``History.nonfinite_steps``.
    comm : MPI communicator or None
        Train data-parallel over the processes of ``comm`` (``fastopt.distributed.world()``,
        under ``mpiexec``): every rank holds the same data, ``batch_size`` is the global
        batch and each rank computes its share of it; the result is that of one process
        with the same global batch (see ``fastopt.distributed``).
    """

    def __init__(self, model, loss, optimizer, schedule=None, clip_norm=None, clip_value=None,
                 metrics=(), callbacks=(), on_nonfinite="raise", comm=None):
        if not isinstance(model, Sequential):
            raise TypeError(f"model must be a fastopt Sequential, got {type(model).__name__}")
        self.model = model
        self.loss = get_loss(loss)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastopt optimizer, got {optimizer!r}")
        self.optimizer = optimizer
        self.schedule = schedule
        if clip_norm is not None:   # (check_number refuses booleans: clip_norm=True)
            clip_norm = check_number(clip_norm, "clip_norm", low=0, low_open=True)
        if clip_value is not None:
            clip_value = check_number(clip_value, "clip_value", low=0, low_open=True)
        self.clip_norm = clip_norm
        if clip_value is not None:
            # Clamping happens inside the optimizer's single pass over the arena; the
            # optimizer object itself is left as the user made it.
            if optimizer.clip_value is not None and optimizer.clip_value != clip_value:
                raise ValueError(f"clip_value={clip_value} conflicts with the optimizer's own "
                                 f"clip_value={optimizer.clip_value}")
            clip_value = float(clip_value)
        self.clip_value = clip_value
        self.metrics = [self._configured(get_metric(m)) for m in metrics]
        for metric in self.metrics:
            if metric.classification and not self.loss.is_classification:
                raise ValueError(f"metric {metric.name!r} needs a classification loss, "
                                 f"not {self.loss.name!r}")
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be fastopt Callback instances, got {cb!r}")
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.step_count = 0      # optimizer steps taken (skipped ones included)
        self.epoch = 0           # completed epochs
        self.batch_in_epoch = 0  # batches done of the current, unfinished epoch
        self.seed = None
        self._layout = None      # batching of the current epoch (checked on a mid-epoch resume)
        self.stop_training = False
        self.history = History()
        self.steps_in_epoch = None
        self._segments = model.arena.segments()
        if model.arena.n_params == 0:
            raise ValueError("the model has no trainable parameters: add a Dense or BatchNorm layer")
        self._dist = None
        if comm is not None:
            self.distribute(comm)

    def distribute(self, comm):
        """Train data-parallel over ``comm`` from now on (see the ``comm`` parameter)."""
        from .distributed import DataParallel   # floor 3, only when asked for

        self._dist = DataParallel(comm)
        return self

    @property
    def comm(self):
        return None if self._dist is None else self._dist.comm

    # ---- input checks ----

    def _prepare(self, X, y, name_x="X", name_y="y"):
        X = as_matrix(X, self.model.dtype, name=name_x, n_features=self.model.input_dim)
        if y is None:
            raise ValueError(f"{name_y} is None: targets are needed")
        T = self.loss.prepare_targets(y, self.model.output_dim, self.model.dtype)
        check_same_length(X, T, name_x, name_y)
        return X, T

    def _weights(self, T, sample_weight, class_weight, n):
        if sample_weight is None and class_weight is None:
            return None
        w = np.ones(n, self.model.dtype)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=np.float64)
            if sw.shape != (n,):
                raise ValueError(f"sample_weight must have shape ({n},), got {sw.shape}")
            if not np.isfinite(sw).all() or (sw < 0).any():
                raise ValueError("sample_weight must be finite and >= 0")
            w *= sw.astype(self.model.dtype)
        if class_weight is not None:
            if not isinstance(class_weight, dict):
                raise TypeError("class_weight must be a dict {class index: weight}")
            if T.ndim != 1:
                raise ValueError("class_weight needs integer class labels as targets")
            k = self.model.output_dim
            table = np.ones(k, self.model.dtype)
            for key, value in class_weight.items():
                if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= key < k:
                    raise ValueError(f"class_weight key {key!r} is not a class index in [0, {k})")
                if not (math.isfinite(value) and value >= 0):
                    raise ValueError(f"class_weight[{key}] must be finite and >= 0, got {value}")
                table[key] = value
            w *= table[T]
        return w

    # ---- one step ----

    def _plan_for(self, rows, T, W):
        return self.model.step_plan(rows, True, self.loss, T, W is not None)

    def _train_step(self, xb, tb, wb=None):
        """One step on a batch given as arrays (streamed batches; benchmarks): forward,
        loss, backward, clip, update. Returns the batch loss."""
        plan = self._plan_for(xb.shape[0], tb, wb)
        plan.bind(xb, tb, wb)
        return self._step(plan, None, 0)

    def _step(self, plan, order, start):
        """One step through the compiled plan on rows ``start..`` of its bound data (or
        rows ``order[start:]``): with a fused loss, forward, loss, backward, gradient norm,
        clipping and the optimizer's update are one call."""
        model, optimizer = self.model, self.optimizer
        model.train_step += 1
        step = self.step_count + 1
        if self.schedule is not None and self.schedule.interval == "step":
            self.schedule.step(optimizer, self.step_count)  # lr_at(steps completed)
        if plan.fused_loss:
            update = optimizer._prepare(model.arena.data, model.arena.grad, self._segments,
                                        self.clip_value)
            value = plan.run_step(model.train_step, order, start, update,
                                  float(self.clip_norm or 0.0))
            if not plan.applied:
                if not math.isfinite(value):
                    return self._nonfinite(plan, step, f"the training loss became {value}")
                norm = math.sqrt(plan.grad_sum_squares)
                return self._nonfinite(plan, step, f"the gradient norm became {norm}")
            optimizer._commit()
        else:
            out = plan.forward(model.train_step, order, start)
            tb, wb = plan.batch(order, start)
            value, dout = self.loss(out, self._loss_targets(plan.inputs(order, start), tb), wb)
            if not math.isfinite(value):
                return self._nonfinite(plan, step, f"the training loss became {value}")
            np.copyto(plan.dout, dout)
            plan.backward()
            scale = self._gradient_scale(plan, step, plan.grad_sum_squares)
            if scale is None:
                return value
            optimizer._apply(model.arena.data, model.arena.grad, self._segments, scale,
                             self.clip_value)
        self.step_count = step
        if self.metrics:
            tb, wb = plan.batch(order, start)
            target = self._metric_target(tb)
            for metric in self.metrics:
                metric.update(plan.output, target, wb)
        return value

    def _loss_targets(self, xb, tb):
        """The targets the loss sees for a batch (a subclass may complete them from the
        inputs: the Distiller adds the teacher's logits)."""
        return tb

    def _configured(self, metric):
        if self.loss.name == "binary_cross_entropy" and hasattr(metric, "multilabel"):
            metric.multilabel = True
        return metric

    def _metric_target(self, tb):
        """The targets metrics compare with (subclasses with composite targets override)."""
        return tb

    def _gradient_scale(self, plan, step, sum_sq):
        """Global-norm clipping factor (1.0 without clipping); None when the norm is not
        finite and the step was skipped."""
        # Always measured (one fixed-order reduction, ~2% of a step): a non-finite gradient
        # must never reach the weights, with or without clipping.
        norm = math.sqrt(sum_sq)
        if not math.isfinite(norm):
            self._nonfinite(plan, step, f"the gradient norm became {norm}")
            return None
        if self.clip_norm is None:
            return 1.0
        return clip_scale(norm, self.clip_norm)

    def _nonfinite(self, plan, step, what):
        plan.restore_state()
        self.history.nonfinite_steps.append(step)
        if self.on_nonfinite == "raise":
            raise FloatingPointError(
                f"{what} at step {step} (epoch {self.epoch + 1}); the model keeps the weights "
                "of the last finite step. Lower the learning rate, clip the gradients "
                "(clip_norm=...) or check the inputs' scale; on_nonfinite='skip' skips such steps.")
        self.step_count = step
        return math.nan

    # ---- fit ----

    def fit(self, X, y=None, epochs=1, batch_size=32, validation_data=None,
            validation_split=None, shuffle=True, seed=0, sample_weight=None,
            class_weight=None, verbose=1, drop_last=False, steps_per_epoch=None,
            callbacks=()):
        """Train for ``epochs`` more epochs; returns the History (also ``self.history``).

        X, y: arrays (any numeric dtype, converted once to the model's dtype; pandas
        DataFrames/Series too), or X an iterable of (X_batch, y_batch) pairs with y=None
        (iterated once per epoch, or ``steps_per_epoch`` batches per epoch).
        ``batch_size=None`` is full-batch gradient descent, 1 pure stochastic descent.
        Each epoch's order is a permutation drawn from (seed, epoch): a resumed run
        (``fastopt.load`` of a checkpoint, then ``fit``) continues exactly where it stopped.
        ``validation_split`` holds out that (random, seeded) fraction of the data.
        Weights: the loss is ``Σ wᵢℓᵢ / Σ wᵢ`` per batch, wᵢ = sample_weight[i]·class_weight[yᵢ].
        ``verbose``: 0 silent, 1 a line per epoch (and a live bar on a terminal).

        Data-parallel (``comm``): every rank passes the same data and settings; rank 0's
        seed, parameters and state are broadcast first; only rank 0 prints and writes
        checkpoints; an exception on one rank ends every rank (MPI Abort).
        """
        args = (X, y, epochs, batch_size, validation_data, validation_split, shuffle, seed,
                sample_weight, class_weight, verbose, drop_last, steps_per_epoch, callbacks)
        if self._dist is None:
            return self._fit(*args)
        return self._dist.run(self._fit, *args)

    def _fit(self, X, y, epochs, batch_size, validation_data, validation_split, shuffle, seed,
             sample_weight, class_weight, verbose, drop_last, steps_per_epoch, callbacks):
        dist = self._dist
        epochs = check_positive_int(epochs, "epochs")
        streaming = y is None and not isinstance(X, np.ndarray) and hasattr(X, "__iter__")
        if steps_per_epoch is not None:
            steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        if dist is not None:
            if streaming:
                raise ValueError("data-parallel training (comm=) needs array inputs, not an "
                                 "iterable of batches")
            seed = dist.bcast(seed)
        if streaming:
            if sample_weight is not None or class_weight is not None or validation_split:
                raise ValueError("sample_weight, class_weight and validation_split need array "
                                 "inputs, not an iterable of batches")
            data = None
        else:
            Xa, T = self._prepare(X, y)
            W = self._weights(T, sample_weight, class_weight, Xa.shape[0])
            if validation_split is not None:
                if validation_data is not None:
                    raise ValueError("give validation_data or validation_split, not both")
                if not 0.0 < validation_split < 1.0:
                    raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
                n_val = int(round(Xa.shape[0] * validation_split))
                if n_val < 1 or n_val >= Xa.shape[0]:
                    raise ValueError(f"validation_split={validation_split} leaves no training or "
                                     f"no validation rows out of {Xa.shape[0]}")
                order = np.random.default_rng([seed, 0x5EED]).permutation(Xa.shape[0])
                val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
                validation_data = (Xa[val_idx], T[val_idx])
                Xa, T = Xa[train_idx], T[train_idx]
                W = None if W is None else W[train_idx]
            data = (Xa, T, W)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            self._prepare(*validation_data, "X_val", "y_val")  # fail now, not after epoch 1
        n = data[0].shape[0] if data is not None else None
        if batch_size is None:
            if data is None:
                raise ValueError("batch_size=None (full batch) needs array inputs")
            batch_size = n
        batch_size = check_positive_int(batch_size, "batch_size")
        if n is not None:
            batch_size = min(batch_size, n)
        seed = check_seed(seed)
        layout = {"seed": int(seed), "batch_size": batch_size, "shuffle": bool(shuffle),
                  "drop_last": bool(drop_last), "rows": n}
        if self.batch_in_epoch and self._layout is not None:
            changed = {k: (self._layout[k], v) for k, v in layout.items()
                       if k in self._layout and self._layout[k] != v}
            if changed:
                raise ValueError("this trainer stopped mid-epoch; resume with the same data and "
                                 "settings to continue exactly (changed: " + ", ".join(
                                     f"{k} {a} -> {b}" for k, (a, b) in changed.items()) + ")")
        self.seed = int(seed)
        self._layout = layout

        cbs = list(self.callbacks) + list(callbacks)
        if dist is not None and not dist.root:
            # Only rank 0 writes files and prints; every rank runs the other callbacks on
            # the same (agreed) numbers.
            from .callbacks import Checkpoint
            cbs = [cb for cb in cbs if not isinstance(cb, (Checkpoint, ProgressBar))]
            verbose = 0
        if verbose:
            cbs.append(ProgressBar())
        self.history = history = History()
        self.stop_training = False
        if data is not None and any(isinstance(layer, BatchNorm) for layer in self.model.layers):
            tail = n % batch_size if not drop_last else 0
            if batch_size == 1 or tail == 1:
                raise ValueError(
                    f"BatchNorm needs at least 2 rows per training batch; batch_size={batch_size} "
                    f"with {n} rows leaves a batch of 1. Use another batch_size or drop_last=True")
        if data is not None:
            steps = n // batch_size if drop_last else -(-n // batch_size)
            if steps == 0:
                raise ValueError(f"drop_last with batch_size={batch_size} > {n} rows leaves no batch")
            self.steps_in_epoch = steps if steps_per_epoch is None else min(steps, steps_per_epoch)
        else:
            self.steps_in_epoch = steps_per_epoch
            stream = iter(X) if steps_per_epoch is not None else None

        if dist is not None:
            dist.check_data(n, self.model.input_dim,
                            None if validation_data is None else len(validation_data[0]))
            dist.broadcast_state(self)
            dist.interrupted = dist.stop = False
        with blas_single_thread, _InterruptFlag() as local_interrupt:
            interrupt = local_interrupt if dist is None else _AgreedInterrupt(dist,
                                                                              local_interrupt)
            for cb in cbs:
                cb.on_train_begin(self)
            last_epoch = self.epoch + epochs
            try:
                while self.epoch < last_epoch and not self.stop_training and not interrupt.raised:
                    epoch = self.epoch + 1
                    if (self.schedule is not None and self.schedule.interval == "epoch"
                            and self.schedule.monitor is None):
                        self.schedule.step(self.optimizer, self.epoch)  # lr_at(epochs completed)
                    for cb in cbs:
                        cb.on_epoch_begin(self, epoch)
                    for metric in self.metrics:
                        metric.reset()
                    start_time = time.perf_counter()
                    if data is not None:
                        total, count = self._array_epoch(data, batch_size, shuffle, drop_last,
                                                         cbs, interrupt)
                    else:
                        batches = stream if stream is not None else iter(X)
                        steps_before = self.step_count
                        total, count = self._stream_epoch(batches, cbs, interrupt)
                        if self.step_count == steps_before and not interrupt.raised:
                            raise ValueError(
                                f"the iterable yielded no batches in epoch {epoch}: a generator "
                                "can be iterated only once; pass a re-iterable (a list, or an "
                                "object whose __iter__ starts over), or an endless generator "
                                "with steps_per_epoch")
                    if dist is not None:
                        self.stop_training = dist.any(self.stop_training)
                    if interrupt.raised or self.stop_training and self.batch_in_epoch:
                        break
                    self.epoch = epoch
                    self.batch_in_epoch = 0
                    if dist is not None:
                        dist.reduce_metrics(self.metrics)
                    logs = {"loss": total / count if count else math.nan}
                    for metric in self.metrics:
                        logs[metric.name] = metric.result()
                    if validation_data is not None:
                        for key, value in self.evaluate(*validation_data).items():
                            logs[f"val_{key}"] = value
                    logs["lr"] = self.optimizer.lr
                    logs["time"] = time.perf_counter() - start_time
                    if dist is not None:
                        logs = dist.bcast(logs)     # rank 0's view decides, for all
                    history.record(epoch, logs)
                    if self.schedule is not None and self.schedule.monitor is not None:
                        self._schedule_plateau(logs)
                    for cb in cbs:
                        cb.on_epoch_end(self, epoch, logs)
                    if dist is not None:
                        self.stop_training = dist.any(self.stop_training)
            except BaseException:
                # An exception (a second Ctrl-C included) may have left a step half done:
                # callbacks must not save this state as if it were consistent.
                history.aborted = True
                raise
            finally:
                history.interrupted = interrupt.raised
                for cb in cbs:
                    cb.on_train_end(self, {})
        return history

    def _schedule_plateau(self, logs):
        monitor = self.schedule.monitor
        if monitor not in logs:
            raise ValueError(f"the schedule monitors {monitor!r}, which this fit does not log; "
                             f"logged: {sorted(k for k in logs if k != 'time')}")
        self.schedule.step(self.optimizer, logs[monitor])

    def _array_epoch(self, data, batch_size, shuffle, drop_last, cbs, interrupt):
        X, T, W = data
        n = X.shape[0]
        order = (np.random.default_rng([self.seed, self.epoch + 1]).permutation(n)
                 if shuffle and batch_size < n else None)
        total = count = 0.0
        stop = n - n % batch_size if drop_last else n
        first = self.batch_in_epoch
        dist = self._dist
        plans = {}   # by batch length: the full batch and the tail, looked up once an epoch
        for b, start in enumerate(range(first * batch_size, stop, batch_size), start=first):
            if self.steps_in_epoch is not None and b >= self.steps_in_epoch:
                break
            end = min(start + batch_size, n)
            if dist is None:
                plan = plans.get(end - start)
                if plan is None:
                    plan = plans[end - start] = self._plan_for(end - start, T, W)
                    plan.bind(X, T, W)   # the plan gathers the rows (order) or reads the slice
                value = self._step(plan, order, start)
            else:
                # This rank's contiguous share of the global batch start..end.
                r0, r1 = dist.share(end - start)
                plan = dist.plan_for(self, r1 - r0, T, W)
                plan.bind(X, T, W)
                value = dist.step(self, plan, order, start + r0, r0, end - start,
                                  dist.global_scale(end - start, W, order, start),
                                  interrupt.local)
            self.batch_in_epoch = b + 1
            if math.isfinite(value):
                total += value * (end - start)
                count += end - start
            for cb in cbs:
                cb.on_batch_end(self, self.step_count, {"loss": value})
            # (data-parallel: the flags the ranks agreed on at this step)
            if interrupt.raised or (self.stop_training if dist is None else dist.stop):
                break
        return total, count

    def _stream_epoch(self, batches, cbs, interrupt):
        total = count = 0.0
        for b, item in enumerate(batches):
            try:
                xb, yb = item
            except (TypeError, ValueError):
                raise ValueError("an iterable input must yield (X_batch, y_batch) pairs") from None
            xb, tb = self._prepare(xb, yb, "X batch", "y batch")
            value = self._train_step(xb, tb)
            self.batch_in_epoch = b + 1
            if math.isfinite(value):
                total += value * xb.shape[0]
                count += xb.shape[0]
            for cb in cbs:
                cb.on_batch_end(self, self.step_count, {"loss": value})
            if (interrupt.raised or self.stop_training
                    or (self.steps_in_epoch is not None and b + 1 >= self.steps_in_epoch)):
                break
        return total, count

    # ---- evaluation ----

    def evaluate(self, X, y, batch_size=1024, sample_weight=None):
        """Mean loss over (X, y) and every metric (accuracy always, for classifiers)."""
        X, T = self._prepare(X, y)
        W = self._weights(T, sample_weight, None, X.shape[0])
        out = self.model.predict(X, batch_size=batch_size)
        value, _ = self.loss(out, T, W)
        result = {"loss": value}
        metrics = list(self.metrics)
        if self.loss.is_classification and not any(m.name == "accuracy" for m in metrics):
            metrics.append(get_metric("accuracy"))
        for metric in metrics:
            fresh = self._configured(type(metric)(metric.k) if hasattr(metric, "k") else type(metric)())
            fresh.update(out, self._metric_target(T), W)
            result[metric.name] = fresh.result()
        return result

    def predict_proba(self, X, batch_size=1024):
        """Class probabilities: softmax of the logits (sigmoid for binary cross-entropy)."""
        if not self.loss.is_classification:
            raise ValueError(f"predict_proba needs a classification loss, not {self.loss.name!r}")
        return class_probabilities(self.model.predict(X, batch_size=batch_size),
                                   independent=self.loss.name == "binary_cross_entropy")

    # ---- state ----

    def get_config(self):
        return {"loss": {"name": self.loss.name, "config": self.loss.get_config()},
                "clip_norm": self.clip_norm, "clip_value": self.clip_value,
                "metrics": [m.name for m in self.metrics], "on_nonfinite": self.on_nonfinite}

    def counters(self):
        return {"step_count": self.step_count, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "seed": self.seed, "layout": self._layout}

    def state_dict(self):
        """Everything this Trainer needs to continue besides its model, as dicts, numbers,
        strings, None and numpy arrays: the one form ``fastopt.save`` writes and the
        estimators pickle. ``from_state_dict(model, state)`` rebuilds the Trainer."""
        if type(self) is not Trainer:
            raise TypeError(f"a {type(self).__name__} cannot be saved whole; save a "
                            f"{type(self).__name__}'s model instead "
                            "(fastopt.save(trainer.model, path))")
        opt = self.optimizer
        state = {"trainer": self.get_config(), "counters": self.counters(),
                 "optimizer": {"class": type(opt).__name__, "state": opt.state_dict()}}
        if self.schedule is not None:
            state["schedule"] = {"class": type(self.schedule).__name__,
                                 "state": self.schedule.state_dict()}
        return state

    @classmethod
    def from_state_dict(cls, model, state):
        """The Trainer ``state_dict`` described, on ``model`` (its parameters and buffers
        already restored). Names are looked up among fastopt's own optimizers, schedules
        and losses only."""
        from . import optim, schedules
        from .losses import LOSSES

        tconf, opt_meta = state["trainer"], state["optimizer"]
        by_name = {c.__name__: c for c in optim.OPTIMIZERS.values()}
        opt_cls = by_name.get(opt_meta["class"]) if isinstance(opt_meta["class"], str) else None
        if opt_cls is None:
            raise ValueError(f"unknown optimizer class {opt_meta['class']!r}")
        optimizer = opt_cls()
        optimizer.load_state_dict(opt_meta["state"])
        schedule = None
        if state.get("schedule") is not None:
            schedule = schedules.from_state_dict(state["schedule"]["state"])
        loss_name = tconf["loss"]["name"]
        loss_cls = LOSSES.get(loss_name) if isinstance(loss_name, str) else None
        if loss_cls is None:
            raise ValueError(f"unknown loss {loss_name!r}")
        trainer = cls(model, loss_cls(**tconf["loss"]["config"]), optimizer, schedule=schedule,
                      clip_norm=tconf["clip_norm"], clip_value=tconf["clip_value"],
                      metrics=tconf["metrics"], on_nonfinite=tconf["on_nonfinite"])
        counters = state["counters"]
        trainer.step_count = int(counters["step_count"])
        trainer.epoch = int(counters["epoch"])
        trainer.batch_in_epoch = int(counters["batch_in_epoch"])
        trainer.seed = counters["seed"]
        trainer._layout = counters.get("layout")
        return trainer
