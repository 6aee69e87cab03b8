"""Trainer: convergence to closed-form solutions, batching modes, and input errors."""

import numpy as np
import pytest
import scipy.linalg

import fastopt as fo


def test_full_batch_gradient_descent_converges_to_least_squares(rng):
    n, d = 200, 5
    X = rng.standard_normal((n, d))
    true_w = rng.standard_normal(d)
    y = X @ true_w + 0.3 + 0.1 * rng.standard_normal(n)
    model = fo.Sequential([fo.Dense(1)], input_dim=d, dtype="float64", seed=0)
    trainer = fo.Trainer(model, "mse", fo.optim.SGD(lr=0.2))
    history = trainer.fit(X, y, epochs=500, batch_size=None)
    A = np.hstack([X, np.ones((n, 1))])
    coef, *_ = scipy.linalg.lstsq(A, y)
    np.testing.assert_allclose(model.layers[0].params["W"][0], coef[:d], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.layers[0].params["b"][0], coef[d], rtol=1e-8, atol=1e-10)
    losses = history["loss"]
    assert all(b <= a + 1e-15 for a, b in zip(losses, losses[1:])), "full-batch GD on a convex loss must not go up"


def test_stochastic_and_minibatch_sgd_reach_the_least_squares_neighbourhood(rng):
    n, d = 300, 3
    X = rng.standard_normal((n, d))
    y = X @ np.array([1.0, -2.0, 0.5]) - 1.0
    for batch_size in (1, 16):
        model = fo.Sequential([fo.Dense(1)], input_dim=d, dtype="float64", seed=0)
        fo.Trainer(model, "mse", fo.optim.SGD(lr=0.01)).fit(X, y, epochs=40, batch_size=batch_size, seed=1)
        np.testing.assert_allclose(model.layers[0].params["W"][0], [1.0, -2.0, 0.5], atol=1e-3)
        np.testing.assert_allclose(model.layers[0].params["b"], [-1.0], atol=1e-3)


def test_one_epoch_of_full_batch_is_exactly_one_gradient_step(rng):
    X = rng.standard_normal((10, 3))
    y = rng.standard_normal(10)
    model = fo.Sequential([fo.Dense(1)], input_dim=3, dtype="float64", seed=0)
    W0, b0 = model.layers[0].params["W"].copy(), model.layers[0].params["b"].copy()
    fo.Trainer(model, "mse", fo.optim.SGD(lr=0.1)).fit(X, y, epochs=1, batch_size=None)
    residual = X @ W0[0] + b0[0] - y
    np.testing.assert_allclose(model.layers[0].params["W"][0], W0[0] - 0.1 * 2 * X.T @ residual / 10, rtol=1e-13)
    np.testing.assert_allclose(model.layers[0].params["b"][0], b0[0] - 0.1 * 2 * residual.mean(), rtol=1e-13)


def test_classifier_learns_the_digits():
    X, y = fo.datasets.load_digits()
    X_train, X_test, y_train, y_test = fo.datasets.train_test_split(X / 16, y, seed=0)
    model = fo.Sequential([fo.Dense(64, activation="relu"), fo.Dense(10)], input_dim=64, seed=0)
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.1))
    history = trainer.fit(X_train, y_train, epochs=20, batch_size=32)
    assert history["loss"][-1] < history["loss"][0] / 5
    assert trainer.evaluate(X_test, y_test)["accuracy"] > 0.93


def test_shuffling_is_seeded(rng):
    X = rng.standard_normal((50, 4))
    y = rng.integers(0, 3, 50)
    runs = []
    for seed in (0, 0, 1):
        model = fo.Sequential([fo.Dense(8, activation="tanh"), fo.Dense(3)], input_dim=4, seed=0)
        fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.1)).fit(X, y, epochs=3, batch_size=7, seed=seed)
        runs.append(model.parameters.copy())
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_caller_arrays_are_converted_not_modified(rng):
    X = np.asfortranarray(rng.integers(0, 5, (20, 3)))
    y = rng.integers(0, 2, 20).astype(np.float64)
    X_before, y_before = X.copy(), y.copy()
    model = fo.Sequential([fo.Dense(2)], input_dim=3)
    fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.1)).fit(X, y, epochs=2, batch_size=4)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


@pytest.mark.parametrize("X,y,kwargs,error,match", [
    (np.zeros((4, 2)), [0, 1, 0, 1], {}, ValueError, "has 2 features, but the model expects 3"),
    (np.zeros((4, 3)), [0, 1, 0, 5], {}, ValueError, r"class labels must be in \[0, 2\)"),
    (np.zeros((4, 3)), [0, 1, 0], {}, ValueError, "X has 4 samples but y has 3"),
    (np.zeros((0, 3)), [], {}, ValueError, "empty"),
    (np.full((4, 3), np.nan), [0, 1, 0, 1], {}, ValueError, "NaN"),
    (np.zeros((4, 3)), [0, 1, 0, 1], {"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    (np.zeros((4, 3)), [0, 1, 0, 1], {"epochs": 0}, ValueError, "epochs must be >= 1"),
    (np.zeros((4, 3)), [0.5, 1, 0, 1], {}, ValueError, "must be integers"),
    ([["a", "b", "c"]] * 4, [0, 1, 0, 1], {}, TypeError, "numeric"),
])
def test_bad_input_fails_before_training_with_a_clear_message(X, y, kwargs, error, match):
    model = fo.Sequential([fo.Dense(2)], input_dim=3)
    before = model.parameters.copy()
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.1))
    with pytest.raises(error, match=match):
        trainer.fit(X, y, **kwargs)
    np.testing.assert_array_equal(model.parameters, before)


def test_divergence_stops_with_the_last_finite_weights(rng):
    X = rng.standard_normal((64, 4)) * 1e3
    y = rng.standard_normal(64) * 1e3
    model = fo.Sequential([fo.Dense(1)], input_dim=4, dtype="float32")
    trainer = fo.Trainer(model, "mse", fo.optim.SGD(lr=10.0))
    with pytest.raises(FloatingPointError, match="at step"):
        trainer.fit(X, y, epochs=50, batch_size=None)
    assert np.isfinite(model.parameters).all()


def test_unknown_loss_and_optimizer_are_rejected():
    model = fo.Sequential([fo.Dense(2)], input_dim=3)
    with pytest.raises(ValueError, match="unknown loss"):
        fo.Trainer(model, "hinge", fo.optim.SGD())
    with pytest.raises(TypeError, match="optimizer"):
        fo.Trainer(model, "mse", "adam")


@pytest.mark.parametrize("name", ["clip_norm", "clip_value"])
@pytest.mark.parametrize("value", [True, False, 0, -1.0, float("nan"), "1"])
def test_clipping_arguments_must_be_positive_numbers_not_booleans(name, value):
    model = fo.Sequential([fo.Dense(2)], input_dim=3)
    with pytest.raises((TypeError, ValueError), match=name):
        fo.Trainer(model, "mse", fo.optim.SGD(), **{name: value})


def test_save_does_not_need_the_training_loop():
    import inspect

    import fastopt.io

    # io writes the file format; a Trainer describes itself (Trainer.state_dict), so
    # callbacks -> io -> train -> callbacks is no longer a circle.
    assert "from .train" not in inspect.getsource(fastopt.io.save)
