"""Callbacks: code that hangs on the training loop.

Hooks (all optional): ``on_train_begin(trainer)``, ``on_epoch_begin(trainer, epoch)``,
``on_batch_end(trainer, step, logs)``, ``on_epoch_end(trainer, epoch, logs)``,
``on_train_end(trainer, logs)``. A callback stops training by setting
``trainer.stop_training = True``; the loop stops after the current step.
"""

import math
import os
import sys
import time

__all__ = ["Callback", "EarlyStopping", "ReduceLROnPlateau", "Checkpoint", "ProgressBar"]

class Callback:
    def on_train_begin(self, trainer):
        pass

    def on_epoch_begin(self, trainer, epoch):
        pass

    def on_batch_end(self, trainer, step, logs):
        pass

    def on_epoch_end(self, trainer, epoch, logs):
        pass

    def on_train_end(self, trainer, logs):
        pass

def _mode_for(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if any(k in monitor for k in ("accuracy", "r2")) else "min"

class _Monitor:
    """Tracks the best value of one logged quantity."""

    def __init__(self, monitor, mode, min_delta):
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.monitor = monitor
        self.mode = _mode_for(monitor, mode)
        self.min_delta = float(min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    def value(self, logs, who):
        if self.monitor not in logs:
            raise ValueError(f"{who} monitors {self.monitor!r}, which this fit does not log; "
                             f"logged: {sorted(k for k in logs if k not in ('epoch', 'time'))}"
                             + (" (val_* needs validation_data or validation_split)"
                                if self.monitor.startswith("val_") else ""))
        return logs[self.monitor]

    def improved(self, value):
        if not math.isfinite(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` (default) the model ends with the weights (and batch-norm
    statistics) of its best epoch.
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=True):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.restore_best_weights = restore_best_weights
        _Monitor(monitor, mode, min_delta)  # validate now, not at the first epoch end

    def on_train_begin(self, trainer):
        self._tracker = _Monitor(self.monitor, self.mode, self.min_delta)
        self.wait = 0
        self.best_epoch = None
        self.stopped_epoch = None
        self._best_state = None

    def on_epoch_end(self, trainer, epoch, logs):
        value = self._tracker.value(logs, "EarlyStopping")
        if self._tracker.improved(value):
            self._tracker.best = value
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                state = trainer.model.get_state()
                del state["train_step"]  # the step counter keys dropout masks: never rewind it
                self._best_state = state
        else:
            self.wait += 1
            if self.wait > self.patience:
                trainer.stop_training = True
                self.stopped_epoch = epoch

    @property
    def best(self):
        return self._tracker.best

    def on_train_end(self, trainer, logs):
        # After Ctrl-C or an error the run is meant to be resumed: keep the latest weights,
        # consistent with the optimizer state a Checkpoint saves.
        if trainer.history.interrupted or trainer.history.aborted:
            return
        if self.restore_best_weights and self._best_state is not None:
            trainer.model.set_state(self._best_state)
            trainer.history.restored_epoch = self.best_epoch

class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement
    of ``monitor`` (by more than ``min_delta``), then wait ``cooldown`` epochs; never below
    ``min_lr``. The maths is ``fastopt.schedules.ReduceOnPlateau``."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, min_delta=1e-4,
                 cooldown=0, min_lr=0.0, mode="auto"):
        from .schedules import ReduceOnPlateau

        self.monitor = monitor
        self.schedule = ReduceOnPlateau(factor=factor, patience=patience, min_delta=min_delta,
                                        cooldown=cooldown, min_lr=min_lr,
                                        mode=_mode_for(monitor, mode), monitor=monitor)
        self._tracker = _Monitor(monitor, mode, 0.0)

    def on_epoch_end(self, trainer, epoch, logs):
        self.schedule.step(trainer.optimizer, self._tracker.value(logs, "ReduceLROnPlateau"))

class Checkpoint(Callback):
    """Save the trainer (model, optimizer, schedule, counters) to ``path`` atomically.

    ``path`` may contain ``{epoch}``. Every ``every_n_epochs`` epochs, or only when
    ``monitor`` improves with ``save_best_only``. Also saves when training is interrupted
    (Ctrl-C or SIGTERM: after the step in progress, before a SIGTERM ends the process), so
    the run can be resumed with ``fastopt.load(path).fit(...)``; with ``save_best_only``
    the best file is kept as it is instead.

    Each save is atomic (``fastopt.save``): killed at any moment, even mid-write, the file
    on disk is the previous complete checkpoint. A save that fails (disk full, read-only
    folder) raises ``OSError`` naming the path and the cause, ending ``fit``, and leaves
    the previous checkpoint untouched.
    """

    def __init__(self, path, monitor="val_loss", save_best_only=False, every_n_epochs=1,
                 mode="auto"):
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be an integer >= 1, got {every_n_epochs!r}")
        self.path = os.fspath(path)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.every_n_epochs = every_n_epochs
        self.mode = mode
        self.saved = []

    def on_train_begin(self, trainer):
        self._tracker = _Monitor(self.monitor, self.mode, 0.0)

    def _save(self, trainer, epoch):
        from .io import save

        path = self.path.format(epoch=epoch)
        save(trainer, path)
        self.saved.append(path)

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch % self.every_n_epochs:
            return
        if self.save_best_only:
            value = self._tracker.value(logs, "Checkpoint")
            if not self._tracker.improved(value):
                return
            self._tracker.best = value
        self._save(trainer, epoch)

    def on_train_end(self, trainer, logs):
        if trainer.history.interrupted and not trainer.history.aborted and not self.save_best_only:
            self._save(trainer, trainer.epoch)

class ProgressBar(Callback):
    """The progress display: one line per epoch; a live bar within the epoch when stdout is
    a terminal (tqdm when installed, else a small built-in bar)."""

    def __init__(self, live=None, stream=None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self._bar = None

    def on_epoch_begin(self, trainer, epoch):
        self._epoch = epoch
        self._start = time.perf_counter()
        self._total = trainer.steps_in_epoch
        if self.live:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=self._total, desc=f"epoch {epoch}", leave=False,
                                 file=self.stream, unit="step")
            else:
                self._bar = None
                self._done = 0

    def on_batch_end(self, trainer, step, logs):
        if not self.live:
            return
        if self._bar is not None:
            self._bar.update(1)
            return
        self._done += 1
        if self._total and (self._done == self._total or self._done % max(1, self._total // 50) == 0):
            width = 30
            filled = int(width * self._done / self._total)
            self.stream.write(f"\repoch {self._epoch} [{'=' * filled}{' ' * (width - filled)}] "
                              f"{self._done}/{self._total}  loss {logs['loss']:.4f}")
            self.stream.flush()

    def on_epoch_end(self, trainer, epoch, logs):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.live:
            self.stream.write("\r\033[K")
        parts = [f"epoch {epoch:>3}"]
        for key, value in logs.items():
            if key in ("epoch", "time"):
                continue
            parts.append(f"{key} {value:.4g}" if key == "lr" else f"{key} {value:.4f}")
        parts.append(f"({logs['time']:.2f} s)")
        print("  ".join(parts), file=self.stream, flush=True)

    def on_train_end(self, trainer, logs):
        if trainer.history.interrupted:
            print(f"training interrupted at step {trainer.step_count}; the model holds the "
                  "weights of the last completed step", file=self.stream, flush=True)

