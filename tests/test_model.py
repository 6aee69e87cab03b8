"""Sequential: whole-network gradients, the arena, predict, thread invariance, allocations."""

import tracemalloc

import numpy as np
import pytest

import fastopt as fo
from fastopt import losses

ACTS = ["identity", "relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "sigmoid", "tanh", "softplus"]


def numeric_gradient(model, loss, X, T, h=1e-6):
    params = model.parameters
    grad = np.zeros_like(params)
    for slot in model.arena.slots:
        for i in range(slot.offset, slot.offset + slot.size):
            saved = params[i]
            params[i] = saved + h
            up = loss(model.forward(X, training=True), T)[0]
            params[i] = saved - h
            down = loss(model.forward(X, training=True), T)[0]
            params[i] = saved
            grad[i] = (up - down) / (2 * h)
    return grad


def analytic_gradient(model, loss, X, T):
    out = model.forward(X, training=True)
    _, dout = loss(out, T)
    dx = model.backward(dout)
    return model.gradients.copy(), dx.copy()


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("loss_name", ["softmax_cross_entropy", "binary_cross_entropy", "mse"])
def test_network_gradient_matches_central_differences(rng, activation, loss_name):
    model = fo.Sequential([fo.Dense(7, activation=activation), fo.Dense(5, activation=activation),
                           fo.Dense(3)], input_dim=4, dtype="float64", seed=3)
    loss = losses.get_loss(loss_name)
    X = rng.standard_normal((6, 4))
    raw = {"softmax_cross_entropy": rng.integers(0, 3, 6), "binary_cross_entropy": rng.uniform(size=(6, 3)),
           "mse": rng.standard_normal((6, 3))}[loss_name]
    T = loss.prepare_targets(raw, 3, np.float64)
    grad, _ = analytic_gradient(model, loss, X, T)
    numeric = numeric_gradient(model, loss, X, T)
    err = np.abs(grad - numeric).max() / max(np.abs(numeric).max(), 1e-12)
    assert err < 1e-6, f"relative gradient error {err:.2e}"


def test_input_gradient_matches_central_differences(rng):
    model = fo.Sequential([fo.Dense(6, activation="tanh"), fo.Dense(2)], input_dim=3, dtype="float64")
    loss = losses.MeanSquaredError()
    X = rng.standard_normal((4, 3))
    T = rng.standard_normal((4, 2))
    _, dx = analytic_gradient(model, loss, X, T)
    numeric = np.empty_like(X)
    for idx in np.ndindex(X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += 1e-6
        Xm[idx] -= 1e-6
        numeric[idx] = (loss(model.forward(Xp), T)[0] - loss(model.forward(Xm), T)[0]) / 2e-6
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-10)


def test_params_and_grads_are_views_into_one_arena():
    model = fo.Sequential([fo.Dense(5, activation="relu"), fo.Dense(3)], input_dim=4)
    W = model.layers[0].params["W"]
    assert W.shape == (5, 4) and model.layers[1].params["b"].shape == (3,)
    assert np.shares_memory(W, model.parameters)
    assert np.shares_memory(model.layers[0].grads["W"], model.gradients)
    model.parameters[:] = 0
    assert not W.any()
    assert model.n_params == 5 * 4 + 5 + 3 * 5 + 3
    assert model.parameters.ctypes.data % 64 == 0


def test_initialisation_is_seeded_and_follows_the_activation():
    a = fo.Sequential([fo.Dense(400, activation="relu"), fo.Dense(300, activation="tanh")], input_dim=500, seed=7)
    b = fo.Sequential([fo.Dense(400, activation="relu"), fo.Dense(300, activation="tanh")], input_dim=500, seed=7)
    c = fo.Sequential([fo.Dense(400, activation="relu"), fo.Dense(300, activation="tanh")], input_dim=500, seed=8)
    assert np.array_equal(a.parameters, b.parameters)
    assert not np.array_equal(a.parameters, c.parameters)
    He = a.layers[0].params["W"]
    assert abs(He.std() - np.sqrt(2 / 500)) < 0.02 * np.sqrt(2 / 500)       # He normal
    G = a.layers[1].params["W"]
    limit = np.sqrt(6 / (400 + 300))
    assert np.abs(G).max() <= limit and abs(G.std() - limit / np.sqrt(3)) < 0.02 * limit  # Glorot uniform
    assert not a.layers[0].params["b"].any()


def test_predict_is_batched_and_matches_forward(rng):
    model = fo.Sequential([fo.Dense(16, activation="gelu"), fo.Dense(4)], input_dim=8, seed=1)
    X = rng.standard_normal((1000, 8))
    full = model.forward(X).copy()
    # Batch boundaries change BLAS's blocking (not the maths): equal to float32 rounding.
    np.testing.assert_allclose(model.predict(X, batch_size=64), full, rtol=1e-5, atol=1e-6)
    assert model.predict(X).dtype == np.float32


def test_forward_accepts_any_layout_and_dtype_without_touching_the_input(rng):
    model = fo.Sequential([fo.Dense(3)], input_dim=5, dtype="float64")
    X = np.asfortranarray(rng.standard_normal((7, 5)).astype(np.float32))
    before = X.copy()
    out = model.forward(X[::1]).copy()
    np.testing.assert_allclose(out, X.astype(np.float64) @ model.layers[0].params["W"].T, rtol=1e-12)
    np.testing.assert_array_equal(X, before)
    ints = np.arange(10).reshape(2, 5)
    np.testing.assert_allclose(model.forward(ints), ints @ model.layers[0].params["W"].T, rtol=1e-12)


def test_bad_input_is_rejected_with_a_clear_message():
    model = fo.Sequential([fo.Dense(3)], input_dim=5)
    with pytest.raises(ValueError, match="has 4 features, but the model expects 5"):
        model.predict(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict(np.array([[0, 0, np.inf, 0, 0]]))
    with pytest.raises(ValueError, match="2-D"):
        model.predict(np.zeros(5))
    with pytest.raises(ValueError, match="empty"):
        model.predict(np.zeros((0, 5)))
    with pytest.raises(TypeError, match="numeric"):
        model.predict(np.array([["a"] * 5]))
    with pytest.raises(ValueError, match="units"):
        fo.Dense(0)
    with pytest.raises(ValueError, match="unknown activation"):
        fo.Dense(3, activation="swish")
    with pytest.raises(ValueError, match="dtype"):
        fo.Sequential([fo.Dense(3)], input_dim=5, dtype="float16")


def test_predictions_are_bitwise_identical_for_one_and_two_threads(rng):
    X = rng.standard_normal((3000, 64))
    y = rng.integers(0, 10, 3000)
    results = []
    for n in (1, 2):
        with fo.threads(n):
            model = fo.Sequential([fo.Dense(256, activation="relu"), fo.Dense(128, activation="gelu"),
                                   fo.Dense(10)], input_dim=64, seed=0)
            trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.05))
            trainer.fit(X, y, epochs=2, batch_size=256, seed=0)
            results.append((model.parameters.copy(), model.predict(X)))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("full", [False, True])
def test_training_step_allocates_nothing_in_steady_state(rng, full):
    if full:  # BN + dropout + Adam + clipping + a per-step schedule + a training metric
        model = fo.Sequential([fo.Dense(256), fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2),
                               fo.Dense(128), fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2),
                               fo.Dense(10)], input_dim=784, seed=0)
        trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.Adam(), clip_norm=1.0,
                             metrics=["accuracy"],
                             schedule=fo.schedules.CosineDecay(T=1000, interval="step"))
    else:
        model = fo.Sequential([fo.Dense(256, activation="relu"), fo.Dense(128, activation="relu"),
                               fo.Dense(10)], input_dim=784, seed=0)
        trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.01))
    X = rng.standard_normal((128, 784)).astype(np.float32)
    T = trainer.loss.prepare_targets(rng.integers(0, 10, 128), 10, np.float32)
    for _ in range(3):
        trainer._train_step(X, T)
    tracemalloc.start()
    tracemalloc.reset_peak()
    for _ in range(50):
        trainer._train_step(X, T)
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The smallest buffer of this step is 1 KiB (128 float64 row losses), the largest
    # 800 KiB: allocating any of them per step would show. What remains is a few small
    # Python objects (floats, array views) that die within the step.
    assert peak < 4096, f"peak {peak} bytes of transient allocation over 50 steps"
    assert retained < 1024, f"{retained} bytes retained over 50 steps"
