"""Failure behaviour and edge cases found in review: each test pins one promise."""

import os
import signal

import numpy as np
import pytest
from scipy.special import logsumexp

import fastopt as fo
from fastopt._kernels import loss as loss_kernels
from fastopt._kernels import _testing
from fastopt.metrics import get_metric
from fastopt.threads import get_num_threads


def test_a_refused_step_leaves_batchnorm_statistics_untouched(rng):
    X = rng.standard_normal((64, 4))
    y = rng.standard_normal(64)
    model = fo.Sequential([fo.Dense(8), fo.BatchNorm(), fo.Dense(1)], input_dim=4, dtype="float64")
    trainer = fo.Trainer(model, "mse", fo.optim.SGD(lr=0.01), on_nonfinite="skip")
    trainer.fit(X, y, epochs=1, batch_size=16, verbose=0)
    bn = model.layers[1]
    before = (bn.running_mean.copy(), bn.running_var.copy(), model.parameters.copy())
    model.layers[2].params["W"][0, 0] = 1e300          # every loss now overflows
    model.layers[2].params["W"][0, 1] = -1e300
    after_poison = model.parameters.copy()
    history = trainer.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert history.nonfinite_steps
    np.testing.assert_array_equal(bn.running_mean, before[0])
    np.testing.assert_array_equal(bn.running_var, before[1])
    np.testing.assert_array_equal(model.parameters, after_poison)


def test_an_exhausted_generator_is_an_error_not_silent_nan_epochs(rng):
    X = rng.standard_normal((32, 3))
    y = rng.integers(0, 2, 32)
    gen = ((X[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8))
    trainer = fo.Trainer(fo.Sequential([fo.Dense(2)], input_dim=3), "softmax_cross_entropy",
                         fo.optim.SGD())
    with pytest.raises(ValueError, match="generator can be iterated only once"):
        trainer.fit(gen, epochs=3, verbose=0)
    assert trainer.epoch == 1


def test_resuming_mid_epoch_with_other_batching_is_refused(rng):
    X = rng.standard_normal((100, 3))
    y = rng.standard_normal(100)

    class StopAt(fo.callbacks.Callback):
        def on_batch_end(self, trainer, step, logs):
            if step == 2:
                trainer.stop_training = True

    trainer = fo.Trainer(fo.Sequential([fo.Dense(1)], input_dim=3), "mse", fo.optim.SGD())
    trainer.fit(X, y, epochs=1, batch_size=10, verbose=0, callbacks=[StopAt()])
    with pytest.raises(ValueError, match="batch_size 10 -> 40"):
        trainer.fit(X, y, epochs=1, batch_size=40, verbose=0)
    trainer.fit(X, y, epochs=1, batch_size=10, verbose=0)
    assert trainer.step_count == 10


def test_ctrl_c_with_early_stopping_keeps_the_latest_weights_for_resuming(rng, tmp_path):
    X = rng.standard_normal((200, 4))
    y = rng.standard_normal(200)

    class Interrupt(fo.callbacks.Callback):
        def on_batch_end(self, trainer, step, logs):
            if step == 25:
                os.kill(os.getpid(), signal.SIGINT)

    latest = {}

    class Remember(fo.callbacks.Callback):
        def on_batch_end(self, trainer, step, logs):
            latest["params"] = trainer.model.parameters.copy()

    model = fo.Sequential([fo.Dense(8, activation="tanh"), fo.Dense(1)], input_dim=4)
    trainer = fo.Trainer(model, "mse", fo.optim.Adam(lr=0.05),
                         callbacks=[fo.EarlyStopping(monitor="loss", patience=100), Remember(),
                                    Interrupt()])
    h = trainer.fit(X, y, epochs=50, batch_size=20, verbose=0)
    assert h.interrupted and trainer.step_count == 25
    np.testing.assert_array_equal(model.parameters, latest["params"])


def test_batchnorm_with_a_one_row_tail_batch_fails_before_any_work(rng):
    X = rng.standard_normal((33, 4))
    y = rng.standard_normal(33)
    model = fo.Sequential([fo.Dense(8), fo.BatchNorm(), fo.Dense(1)], input_dim=4)
    before = model.parameters.copy()
    trainer = fo.Trainer(model, "mse", fo.optim.SGD())
    with pytest.raises(ValueError, match="leaves a batch of 1"):
        trainer.fit(X, y, batch_size=32, verbose=0)
    np.testing.assert_array_equal(model.parameters, before)
    trainer.fit(X, y, batch_size=32, drop_last=True, verbose=0)


def test_distiller_validation_split_metrics_and_save(rng, tmp_path):
    X = rng.standard_normal((120, 5))
    y = rng.integers(0, 3, 120)
    teacher = fo.Sequential([fo.Dense(3)], input_dim=5, seed=1)
    student = fo.Sequential([fo.Dense(3)], input_dim=5, seed=1)   # identical: same predictions
    d = fo.distill.Distiller(student, teacher, fo.optim.SGD(lr=0.0), metrics=["accuracy"])
    h = d.fit(X, y, epochs=1, batch_size=40, validation_split=0.25, verbose=0)
    assert "val_accuracy" in h
    truth = float((teacher.predict(X).argmax(1) == y).mean())
    ev = d.evaluate(X, y)["accuracy"]
    assert ev == pytest.approx(truth)
    with pytest.raises(TypeError, match="save a Distiller's model instead"):
        fo.save(d, tmp_path / "d.npz")
    fo.save(d.model, tmp_path / "student.npz")


def test_models_without_parameters_and_reused_layers_are_rejected():
    with pytest.raises(ValueError, match="no trainable parameters"):
        fo.Trainer(fo.Sequential([fo.Activation("relu")], input_dim=3), "mse", fo.optim.SGD())
    d = fo.Dense(4)
    fo.Sequential([d], input_dim=3)
    with pytest.raises(ValueError, match="already belongs to a model"):
        fo.Sequential([d], input_dim=3)
    e = fo.Dense(3)
    with pytest.raises(ValueError, match="already belongs to a model"):
        fo.Sequential([e, e], input_dim=3)


@pytest.mark.parametrize("make", [lambda: fo.optim.Adam(eps=0.0), lambda: fo.optim.RMSprop(eps=0.0),
                                  lambda: fo.optim.Adagrad(eps=0.0)])
def test_zero_eps_is_refused(make):
    with pytest.raises(ValueError, match="eps must be > 0"):
        make()


def test_negative_alpha_is_refused():
    with pytest.raises(ValueError, match="alpha must be"):
        fo.Dense(3, activation="leaky_relu", alpha=-0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_keeps_its_digits_for_huge_logits(dtype):
    Z = np.array([[1e6, 1e6 - 1, 1e6 - 3]], dtype)
    y = np.array([1])
    w = np.ones(1, dtype)
    value = loss_kernels.softmax_cross_entropy(Z, y, w, 1.0, 0.0, np.empty_like(Z), np.empty(1),
                                               n_threads=get_num_threads())
    exact = logsumexp([0.0, -1.0, -3.0]) + 1.0
    assert value == pytest.approx(exact, rel=1e-6)


def test_label_smoothing_treats_probability_targets_like_labels(rng):
    ce = fo.losses.SoftmaxCrossEntropy(label_smoothing=0.3)
    Z = rng.standard_normal((5, 4))
    y = rng.integers(0, 4, 5)
    from_labels, _ = ce(Z, ce.prepare_targets(y, 4, np.float64))
    from_onehot, _ = ce(Z, ce.prepare_targets(np.eye(4)[y], 4, np.float64))
    assert from_onehot == pytest.approx(from_labels, rel=1e-12)


def test_r2_survives_a_large_target_mean(rng):
    y = 1e8 + rng.standard_normal((1000, 1))
    pred = y + 0.1 * rng.standard_normal((1000, 1))
    r2 = get_metric("r2")
    for i in range(0, 1000, 100):
        r2.update(pred[i:i + 100], y[i:i + 100])
    truth = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2.result() == pytest.approx(truth, rel=1e-6)


def test_accuracy_of_multilabel_binary_cross_entropy_is_per_output():
    model = fo.Sequential([fo.Dense(3)], input_dim=2)
    trainer = fo.Trainer(model, "binary_cross_entropy", fo.optim.SGD(), metrics=["accuracy"])
    metric = trainer.metrics[0]
    metric.update(np.array([[3.0, -2.0, -1.0]]), np.array([[1.0, 1.0, 0.0]]))
    assert metric.result() == pytest.approx(2 / 3)


def test_saved_files_get_ordinary_permissions(tmp_path):
    path = tmp_path / "m.npz"
    fo.save(fo.Sequential([fo.Dense(2)], input_dim=2), path)
    umask = os.umask(0)
    os.umask(umask)
    assert (os.stat(path).st_mode & 0o777) == (0o666 & ~umask)


@pytest.mark.parametrize("m,n,k", [(700, 257, 300), (97, 2049, 601), (2000, 3, 1500), (1, 5000,
                                                                                       3000),
                                   (4099, 65, 64)])
@pytest.mark.parametrize("trans_a,trans_b", [(False, True), (True, False), (False, False)])
def test_multi_tile_gemm_matches_float64_reference(rng, m, n, k, trans_a, trans_b):
    A = rng.standard_normal((k, m) if trans_a else (m, k))
    B = rng.standard_normal((n, k) if trans_b else (k, n))
    C = np.empty((m, n))
    assert np.prod(_testing.tile_grid(m, n, k)[2:]) > 1 or m * n * k < 2 ** 21
    with fo.threads(2):
        _testing.gemm_rowmajor(A, B, C, trans_a, trans_b, n_threads=get_num_threads())
    ref = (A.T if trans_a else A) @ (B.T if trans_b else B)
    np.testing.assert_allclose(C, ref, rtol=1e-11, atol=1e-10)
