"""README's promise: the caller's arrays are never modified, by any public entry point."""

import numpy as np
import pytest

import fastopt as fo


def _data(dtype=np.float32):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 6)).astype(dtype)
    y = rng.integers(0, 3, 50)
    w = rng.uniform(0.5, 2.0, 50)
    return X, y, w


def _model(dtype="float32"):
    return fo.Sequential([fo.Dense(8), fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2),
                          fo.Dense(3)], input_dim=6, dtype=dtype, seed=0)


def _frozen(*arrays):
    return [(a, a.copy()) for a in arrays]


def _check(frozen):
    for a, before in frozen:
        np.testing.assert_array_equal(a, before)
        assert a.dtype == before.dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shuffle", [False, True])
def test_trainer_fit_evaluate_predict(dtype, shuffle):
    X, y, w = _data(dtype)
    frozen = _frozen(X, y, w)
    trainer = fo.Trainer(_model(np.dtype(dtype).name), "softmax_cross_entropy",
                         fo.optim.Adam(), metrics=["accuracy"])
    trainer.fit(X, y, epochs=2, batch_size=16, shuffle=shuffle, sample_weight=w,
                validation_data=(X, y), verbose=0)
    trainer.evaluate(X, y, sample_weight=w)
    trainer.model.predict(X)
    trainer.predict_proba(X)
    _check(frozen)


def test_probability_and_regression_targets():
    X, y, _ = _data(np.float64)
    P = np.full((50, 3), 1 / 3)
    frozen = _frozen(X, P)
    fo.Trainer(_model("float64"), "softmax_cross_entropy", fo.optim.SGD(lr=0.1)).fit(
        X, P, epochs=1, batch_size=10, verbose=0)
    Y = np.random.default_rng(1).standard_normal((50, 3))
    frozen += _frozen(Y)
    fo.Trainer(_model("float64"), "mse", fo.optim.SGD(lr=0.1)).fit(
        X, Y, epochs=1, batch_size=10, verbose=0)
    _check(frozen)


def test_distiller():
    X, y, w = _data(np.float64)
    frozen = _frozen(X, y, w)
    teacher = _model("float64")
    student = fo.Sequential([fo.Dense(4, activation="relu"), fo.Dense(3)], input_dim=6,
                            dtype="float64", seed=1)
    distiller = fo.distill.Distiller(student, teacher, fo.optim.SGD(lr=0.1))
    distiller.fit(X, y, epochs=1, batch_size=10, sample_weight=w, verbose=0)
    distiller.evaluate(X, y, sample_weight=w)
    _check(frozen)


def test_estimators_fit_and_partial_fit():
    pytest.importorskip("sklearn")
    from fastopt.sklearn import MLPClassifier, MLPRegressor

    X, y, w = _data(np.float64)
    t = X[:, 0] * 2.0
    frozen = _frozen(X, y, w, t)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, batch_norm=True, dropout=0.1)
    clf.fit(X, y, sample_weight=w)
    clf.partial_fit(X, y, sample_weight=w)
    clf.predict_proba(X)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3)
    reg.fit(X, t, sample_weight=w)
    reg.partial_fit(X, t)
    reg.predict(X)
    _check(frozen)
