"""Trainer.fit beyond the basics: validation, metrics, weights, iterables, divergence, Ctrl-C."""

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from reference import softmax_xent

import fastopt as fo


def digits(seed=0):
    X, y = fo.datasets.load_digits()
    return fo.datasets.train_test_split(X / 16, y, seed=seed)


def small_model(seed=0, dtype="float32"):
    return fo.Sequential([fo.Dense(32, activation="relu"), fo.Dense(10)], input_dim=64,
                         dtype=dtype, seed=seed)


def test_history_has_validation_loss_metrics_lr_and_time():
    X_train, X_test, y_train, y_test = digits()
    trainer = fo.Trainer(small_model(), "softmax_cross_entropy", fo.optim.Adam(lr=1e-2),
                         metrics=["accuracy", "top3_accuracy"])
    history = trainer.fit(X_train, y_train, epochs=3, batch_size=64, validation_data=(X_test, y_test),
                          verbose=0)
    for key in ("loss", "accuracy", "top3_accuracy", "val_loss", "val_accuracy", "val_top3_accuracy",
                "lr", "time"):
        assert len(history[key]) == 3, key
    assert history["val_accuracy"][-1] > 0.85
    assert all(t >= a for t, a in zip(history["val_top3_accuracy"], history["val_accuracy"]))
    assert history["lr"] == [1e-2] * 3
    ev = trainer.evaluate(X_test, y_test)
    np.testing.assert_allclose(ev["loss"], history["val_loss"][-1], rtol=1e-6)


def test_validation_split_holds_out_a_seeded_fraction():
    X_train, _, y_train, _ = digits()
    trainer = fo.Trainer(small_model(), "softmax_cross_entropy", fo.optim.SGD(lr=0.1))
    h = trainer.fit(X_train, y_train, epochs=2, validation_split=0.25, verbose=0)
    assert "val_loss" in h and "val_accuracy" in h
    with pytest.raises(ValueError, match=r"validation_split must be in \(0, 1\)"):
        trainer.fit(X_train, y_train, validation_split=1.5, verbose=0)


def test_regression_metrics_match_their_definitions(rng):
    X = rng.standard_normal((200, 3))
    y = X @ np.array([1.0, 2.0, -1.0])
    model = fo.Sequential([fo.Dense(1)], input_dim=3, dtype="float64")
    trainer = fo.Trainer(model, "mse", fo.optim.SGD(lr=0.05), metrics=["mse", "mae", "r2"])
    trainer.fit(X, y, epochs=5, batch_size=20, verbose=0)
    ev = trainer.evaluate(X, y)
    pred = model.predict(X)[:, 0]
    np.testing.assert_allclose(ev["mse"], np.mean((pred - y) ** 2), rtol=1e-10)
    np.testing.assert_allclose(ev["mae"], np.mean(np.abs(pred - y)), rtol=1e-10)
    np.testing.assert_allclose(ev["r2"], 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2), rtol=1e-10)
    np.testing.assert_allclose(ev["loss"], ev["mse"], rtol=1e-10)


def test_sample_and_class_weights_give_the_weighted_mean_loss(rng):
    X = rng.standard_normal((12, 4))
    y = rng.integers(0, 3, 12)
    sw = rng.uniform(0.5, 2.0, 12)
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    model = fo.Sequential([fo.Dense(3)], input_dim=4, dtype="float64", seed=0)
    W0 = model.layers[0].params["W"].copy()
    b0 = model.layers[0].params["b"].copy()
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.5))
    history = trainer.fit(X, y, epochs=1, batch_size=None, sample_weight=sw, class_weight=cw, verbose=0)
    w = sw * np.array([cw[int(c)] for c in y])
    value, grad, _ = softmax_xent(X @ W0.T + b0, y, 0.0, w)
    np.testing.assert_allclose(history["loss"][0], value, rtol=1e-12)
    np.testing.assert_allclose(model.layers[0].params["W"], W0 - 0.5 * grad.T @ X, rtol=1e-12)
    with pytest.raises(ValueError, match="class_weight key 7"):
        trainer.fit(X, y, class_weight={7: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        trainer.fit(X, y, sample_weight=np.ones(3), verbose=0)


def test_iterable_of_batches_trains_like_arrays(rng):
    X = rng.standard_normal((96, 5))
    y = rng.integers(0, 2, 96)
    batches = [(X[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)]
    a = fo.Sequential([fo.Dense(2)], input_dim=5, dtype="float64", seed=0)
    b = fo.Sequential([fo.Dense(2)], input_dim=5, dtype="float64", seed=0)
    fo.Trainer(a, "softmax_cross_entropy", fo.optim.SGD(lr=0.1)).fit(batches, epochs=3, verbose=0)
    fo.Trainer(b, "softmax_cross_entropy", fo.optim.SGD(lr=0.1)).fit(X, y, epochs=3, batch_size=32,
                                                                        shuffle=False, verbose=0)
    np.testing.assert_array_equal(a.parameters, b.parameters)
    # A one-shot generator with steps_per_epoch: epochs keep drawing from it.
    gen = ((X[i % 96:i % 96 + 16], y[i % 96:i % 96 + 16]) for i in range(0, 10_000, 16))
    c = fo.Sequential([fo.Dense(2)], input_dim=5, seed=0)
    h = fo.Trainer(c, "softmax_cross_entropy", fo.optim.SGD(lr=0.1)).fit(gen, epochs=4, steps_per_epoch=3,
                                                                          verbose=0)
    assert len(h["loss"]) == 4


def test_drop_last_and_partial_batches(rng):
    X = rng.standard_normal((10, 2))
    y = rng.standard_normal(10)
    model = fo.Sequential([fo.Dense(1)], input_dim=2)
    trainer = fo.Trainer(model, "mse", fo.optim.SGD(lr=0.01))
    trainer.fit(X, y, epochs=1, batch_size=4, verbose=0)
    assert trainer.step_count == 3
    trainer.fit(X, y, epochs=1, batch_size=4, drop_last=True, verbose=0)
    assert trainer.step_count == 5


def test_nonfinite_gradients_can_be_skipped(rng):
    X = rng.standard_normal((32, 3))
    y = rng.standard_normal(32)
    model = fo.Sequential([fo.Dense(1)], input_dim=3, dtype="float64")
    trainer = fo.Trainer(model, "mse", fo.optim.SGD(lr=0.01), on_nonfinite="skip")
    model.layers[0].params["W"][0, 0] = 1e200  # the loss overflows to inf
    before = model.parameters.copy()
    history = trainer.fit(X, y, epochs=2, batch_size=16, verbose=0)
    assert history.nonfinite_steps == [1, 2, 3, 4]
    np.testing.assert_array_equal(model.parameters, before)
    raising = fo.Trainer(model, "mse", fo.optim.SGD(lr=0.01))
    with pytest.raises(FloatingPointError, match="step 1"):
        raising.fit(X, y, epochs=1, verbose=0)


def test_verbose_prints_a_line_per_epoch(capsys):
    X_train, _, y_train, _ = digits()
    fo.Trainer(small_model(), "softmax_cross_entropy", fo.optim.SGD(lr=0.1)).fit(
        X_train, y_train, epochs=2, verbose=1)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch")]
    assert len(lines) == 2 and "loss" in lines[0]
    fo.Trainer(small_model(), "softmax_cross_entropy", fo.optim.SGD(lr=0.1)).fit(
        X_train, y_train, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_predict_proba_rows_are_distributions(rng):
    X_train, X_test, y_train, _ = digits()
    trainer = fo.Trainer(small_model(), "softmax_cross_entropy", fo.optim.SGD(lr=0.1))
    trainer.fit(X_train, y_train, epochs=1, verbose=0)
    P = trainer.predict_proba(X_test)
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-5)
    assert (trainer.model.predict(X_test).argmax(1) == P.argmax(1)).all()


def test_history_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    X_train, X_test, y_train, y_test = digits()
    trainer = fo.Trainer(small_model(), "softmax_cross_entropy", fo.optim.SGD(lr=0.1), metrics=["accuracy"])
    h = trainer.fit(X_train, y_train, epochs=2, validation_data=(X_test, y_test), verbose=0)
    path = h.plot(tmp_path / "curves.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_ctrl_c_stops_after_the_current_step_and_returns_the_history(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, numpy as np, fastopt as fo
        X = np.random.default_rng(0).standard_normal((4096, 64)).astype(np.float32)
        y = np.random.default_rng(1).integers(0, 10, 4096)
        model = fo.Sequential([fo.Dense(256, activation="relu"), fo.Dense(10)], input_dim=64)
        class Interrupt(fo.callbacks.Callback):
            def on_batch_end(self, trainer, step, logs):
                if step == 5:
                    os.kill(os.getpid(), signal.SIGINT)
        ckpt = fo.callbacks.Checkpoint({str(tmp_path / 'ckpt.npz')!r})
        trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.01),
                             callbacks=[Interrupt(), ckpt])
        h = trainer.fit(X, y, epochs=100, batch_size=32, verbose=0)
        assert h.interrupted and trainer.step_count == 5, (h.interrupted, trainer.step_count)
        assert np.isfinite(model.predict(X[:3])).all()
        resumed = fo.load({str(tmp_path / 'ckpt.npz')!r})
        assert resumed.step_count == 5 and resumed.batch_in_epoch == 5
        print("ok", trainer.step_count)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok 5"


def test_ctrl_c_from_outside_a_running_fit(tmp_path):
    script = textwrap.dedent("""
        import sys, numpy as np, fastopt as fo
        X = np.random.default_rng(0).standard_normal((20000, 128)).astype(np.float32)
        y = np.random.default_rng(1).integers(0, 10, 20000)
        model = fo.Sequential([fo.Dense(512, activation="relu"), fo.Dense(10)], input_dim=128)
        trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.01))
        class Ready(fo.callbacks.Callback):
            def on_batch_end(self, trainer, step, logs):
                if step == 1:
                    print("running", flush=True)
        h = trainer.fit(X, y, epochs=1000, batch_size=64, verbose=0, callbacks=[Ready()])
        print("stopped", h.interrupted, trainer.step_count > 0, np.isfinite(model.parameters).all(), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    assert proc.stdout.readline().strip() == "running"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == "stopped True True True"


def test_clip_norm_scales_the_update_to_the_global_norm(rng):
    X = rng.standard_normal((16, 3)) * 100
    y = rng.standard_normal(16) * 100
    model = fo.Sequential([fo.Dense(1)], input_dim=3, dtype="float64", seed=0)
    W0 = model.layers[0].params["W"].copy()
    b0 = model.layers[0].params["b"].copy()
    fo.Trainer(model, "mse", fo.optim.SGD(lr=0.1), clip_norm=0.5).fit(X, y, epochs=1, batch_size=None, verbose=0)
    residual = X @ W0[0] + b0[0] - y
    gW, gb = 2 * X.T @ residual / 16, 2 * residual.mean()
    norm = np.sqrt(np.sum(gW ** 2) + gb ** 2)
    s = min(1.0, 0.5 / (norm + 1e-6))
    np.testing.assert_allclose(model.layers[0].params["W"][0], W0[0] - 0.1 * s * gW, rtol=1e-12)
    np.testing.assert_allclose(model.layers[0].params["b"][0], b0[0] - 0.1 * s * gb, rtol=1e-12)


def test_clip_value_clamps_each_gradient(rng):
    X = rng.standard_normal((16, 3)) * 100
    y = rng.standard_normal(16) * 100
    model = fo.Sequential([fo.Dense(1)], input_dim=3, dtype="float64", seed=0)
    W0 = model.layers[0].params["W"].copy()
    b0 = model.layers[0].params["b"].copy()
    fo.Trainer(model, "mse", fo.optim.SGD(lr=0.1), clip_value=0.25).fit(X, y, epochs=1, batch_size=None, verbose=0)
    residual = X @ W0[0] + b0[0] - y
    gW, gb = np.clip(2 * X.T @ residual / 16, -0.25, 0.25), np.clip(2 * residual.mean(), -0.25, 0.25)
    np.testing.assert_allclose(model.layers[0].params["W"][0], W0[0] - 0.1 * gW, rtol=1e-12)
    np.testing.assert_allclose(model.layers[0].params["b"][0], b0[0] - 0.1 * gb, rtol=1e-12)


def test_pandas_dataframes_are_accepted(rng):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(rng.standard_normal((40, 3)), columns=["a", "b", "c"])
    y = pd.Series(rng.integers(0, 2, 40))
    model = fo.Sequential([fo.Dense(2)], input_dim=3)
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.1))
    trainer.fit(X, y, epochs=2, verbose=0)
    np.testing.assert_array_equal(model.predict(X), model.predict(X.to_numpy()))


def test_schedules_drive_the_learning_rate_per_step_and_per_epoch(rng):
    X = rng.standard_normal((40, 3))
    y = rng.standard_normal(40)
    per_step = fo.Trainer(fo.Sequential([fo.Dense(1)], input_dim=3), "mse", fo.optim.SGD(lr=0.1),
                          schedule=fo.schedules.StepDecay(step_size=2, gamma=0.5, interval="step"))
    per_step.fit(X, y, epochs=1, batch_size=10, verbose=0)   # 4 steps at t = 0, 1, 2, 3
    assert per_step.optimizer.lr == pytest.approx(0.05)
    per_epoch = fo.Trainer(fo.Sequential([fo.Dense(1)], input_dim=3), "mse", fo.optim.SGD(lr=0.1),
                           schedule=fo.schedules.ExponentialDecay(gamma=0.5))
    h = per_epoch.fit(X, y, epochs=3, batch_size=10, verbose=0)
    assert h["lr"] == pytest.approx([0.1, 0.05, 0.025])


def test_the_trainer_does_not_change_the_users_optimizer(rng):
    opt = fo.optim.SGD(lr=0.1)
    trainer = fo.Trainer(fo.Sequential([fo.Dense(1)], input_dim=3), "mse", opt, clip_value=0.25)
    trainer.fit(rng.standard_normal((8, 3)), rng.standard_normal(8), epochs=1, verbose=0)
    assert opt.clip_value is None
