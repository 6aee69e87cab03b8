"""Callbacks: early stopping, plateau, checkpoints, hooks."""

import numpy as np
import pytest

import fastopt as fo


def digits():
    X, y = fo.datasets.load_digits()
    return fo.datasets.train_test_split(X / 16, y, seed=0)


def model(seed=0):
    return fo.Sequential([fo.Dense(32, activation="relu"), fo.Dense(10)], input_dim=64, seed=seed)


class Recorder(fo.callbacks.Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append("train_begin")

    def on_epoch_begin(self, trainer, epoch):
        self.events.append(f"epoch_begin {epoch}")

    def on_batch_end(self, trainer, step, logs):
        self.events.append("batch")

    def on_epoch_end(self, trainer, epoch, logs):
        self.events.append(f"epoch_end {epoch}")

    def on_train_end(self, trainer, logs):
        self.events.append("train_end")


def test_hooks_run_in_order():
    X, _, y, _ = digits()
    rec = Recorder()
    fo.Trainer(model(), "softmax_cross_entropy", fo.optim.SGD(lr=0.1), callbacks=[rec]).fit(
        X[:100], y[:100], epochs=2, batch_size=50, verbose=0)
    assert rec.events == ["train_begin", "epoch_begin 1", "batch", "batch", "epoch_end 1",
                          "epoch_begin 2", "batch", "batch", "epoch_end 2", "train_end"]


def test_early_stopping_waits_patience_epochs_and_restores_the_best_weights():
    X_train, X_val, y_train, y_val = digits()
    snapshots = {}

    class Snapshot(fo.callbacks.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            snapshots[epoch] = trainer.model.parameters.copy()

    # Too high a learning rate: validation loss bottoms out early, then worsens.
    stopper = fo.EarlyStopping(monitor="val_loss", patience=2)
    trainer = fo.Trainer(model(), "softmax_cross_entropy", fo.optim.Adam(lr=0.05),
                         callbacks=[Snapshot(), stopper])
    h = trainer.fit(X_train, y_train, epochs=60, batch_size=32, validation_data=(X_val, y_val), verbose=0)
    best = int(np.argmin(h["val_loss"])) + 1
    assert stopper.best_epoch == best
    assert len(h["val_loss"]) == best + 3, "stops after patience + 1 epochs without improvement"
    np.testing.assert_array_equal(trainer.model.parameters, snapshots[best])
    assert h.restored_epoch == best


def test_early_stopping_names_a_missing_monitor():
    X, _, y, _ = digits()
    trainer = fo.Trainer(model(), "softmax_cross_entropy", fo.optim.SGD(lr=0.1),
                         callbacks=[fo.EarlyStopping(monitor="val_loss")])
    with pytest.raises(ValueError, match="val_loss.*validation_data or validation_split"):
        trainer.fit(X, y, epochs=2, verbose=0)


def test_reduce_lr_on_plateau_callback_lowers_the_learning_rate():
    X, _, y, _ = digits()
    plateau = fo.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
    trainer = fo.Trainer(model(), "softmax_cross_entropy", fo.optim.SGD(lr=0.1), callbacks=[plateau])
    h = trainer.fit(X, y, epochs=4, verbose=0)
    # The first epoch improves on +inf; after it min_delta=10 means nothing counts as an
    # improvement, so every later epoch end halves the rate (logged before the callback).
    assert h["lr"] == [0.1, 0.1, 0.05, 0.025]
    assert trainer.optimizer.lr == pytest.approx(0.0125)


def test_checkpoint_every_n_epochs_and_best_only(tmp_path):
    X_train, X_val, y_train, y_val = digits()
    every = fo.Checkpoint(tmp_path / "every-{epoch}.npz", every_n_epochs=2)
    best = fo.Checkpoint(tmp_path / "best.npz", monitor="val_accuracy", save_best_only=True)
    trainer = fo.Trainer(model(), "softmax_cross_entropy", fo.optim.SGD(lr=0.1), callbacks=[every, best])
    h = trainer.fit(X_train, y_train, epochs=5, validation_data=(X_val, y_val), verbose=0)
    assert sorted(p.name for p in tmp_path.glob("every-*")) == ["every-2.npz", "every-4.npz"]
    saved = fo.load(tmp_path / "best.npz")
    best_epoch = int(np.argmax(h["val_accuracy"])) + 1
    assert saved.epoch == best_epoch
    # Against a straight run with no callbacks, stopped at the best epoch: the same bits,
    # and its accuracy computed here from its logits.
    straight = fo.Trainer(model(), "softmax_cross_entropy", fo.optim.SGD(lr=0.1))
    straight.fit(X_train, y_train, epochs=best_epoch, verbose=0)
    np.testing.assert_array_equal(saved.model.parameters, straight.model.parameters)
    if best_epoch <= 4:   # continued to epoch 4: what every-4 holds
        if best_epoch < 4:
            straight.fit(X_train, y_train, epochs=4 - best_epoch, verbose=0)
        every4 = fo.load(tmp_path / "every-4.npz")
        np.testing.assert_array_equal(every4.model.parameters, straight.model.parameters)
    accuracy = np.mean(saved.model.predict(X_val).argmax(axis=1) == y_val)
    assert accuracy == pytest.approx(max(h["val_accuracy"]), abs=1e-12)


def test_a_callback_can_stop_training():
    X, _, y, _ = digits()

    class StopAfterTwo(fo.callbacks.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 2:
                trainer.stop_training = True

    h = fo.Trainer(model(), "softmax_cross_entropy", fo.optim.SGD(lr=0.1), callbacks=[StopAfterTwo()]).fit(
        X, y, epochs=10, verbose=0)
    assert len(h["loss"]) == 2
