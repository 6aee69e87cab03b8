"""The compiled step plan (fastopt.plan) against the per-layer path it replaces for
training: the same bits for every layer combination, dtype, thread count and batch size;
finite differences through it; whole fits against a straight per-layer loop; and no
allocation in the steady-state step."""

import tracemalloc

import numpy as np
import pytest

import fastopt as fo
from fastopt.plan import StepPlan

DTYPES = ["float32", "float64"]


def _standardize(d):
    rng = np.random.default_rng(9)
    return fo.Standardize(rng.standard_normal(d), rng.uniform(0.5, 2.0, d))


# (name, layer factory, loss factory, target kind)
COMBOS = [
    ("dense", lambda: [fo.Dense(8, activation="relu"), fo.Dense(3)],
     lambda: fo.losses.SoftmaxCrossEntropy(), "labels"),
    ("mnist-block", lambda: [fo.Dense(8), fo.BatchNorm(), fo.Activation("relu"),
                             fo.Dropout(0.3), fo.Dense(3)],
     lambda: fo.losses.SoftmaxCrossEntropy(label_smoothing=0.1), "labels"),
    ("bn-dropout", lambda: [fo.Dense(8), fo.BatchNorm(), fo.Dropout(0.2), fo.Dense(3)],
     lambda: fo.losses.MeanSquaredError(), "matrix"),
    ("bn-elu", lambda: [fo.Dense(8), fo.BatchNorm(), fo.Activation("elu"), fo.Dropout(0.2),
                        fo.Dense(3)],
     lambda: fo.losses.BinaryCrossEntropy(), "binary"),
    ("mixed", lambda: [_standardize(5), fo.Dense(8, activation="gelu"), fo.Dropout(0.5),
                       fo.Dense(8, activation="tanh"), fo.BatchNorm(momentum=0.3),
                       fo.Activation("leaky_relu", alpha=0.2), fo.Dense(3)],
     lambda: fo.losses.SoftmaxCrossEntropy(), "proba"),
    ("leading-dropout", lambda: [fo.Dropout(0.1), fo.Dense(8, activation="sigmoid"),
                                 fo.Activation("softplus"), fo.Dense(3)],
     lambda: fo.losses.MeanSquaredError(), "matrix"),
    ("gelu-tanh-bn-noaffine", lambda: [fo.Dense(8, activation="gelu_tanh"),
                                       fo.BatchNorm(affine=False), fo.Dense(3, activation="elu")],
     lambda: fo.losses.MeanSquaredError(), "matrix"),
    ("leading-bn", lambda: [fo.BatchNorm(), fo.Activation("relu"), fo.Dense(3)],
     lambda: fo.losses.SoftmaxCrossEntropy(), "labels"),
]


def _targets(kind, rows, rng):
    if kind == "labels":
        return rng.integers(0, 3, rows)
    if kind == "proba":
        p = rng.uniform(0.1, 1.0, (rows, 3))
        return p / p.sum(axis=1, keepdims=True)
    if kind == "binary":
        return (rng.uniform(size=(rows, 3)) > 0.5).astype(float)
    return rng.standard_normal((rows, 3))


def _model(factory, dtype, seed=3):
    model = fo.Sequential(factory(), input_dim=5, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for layer in model.layers:   # BN scale/shift away from (1, 0) so they matter
        if isinstance(layer, fo.BatchNorm) and layer.affine:
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, layer.output_dim)
            layer.params["beta"][...] = rng.uniform(-0.5, 0.5, layer.output_dim)
    return model


def _state(model):
    return [b.copy() for layer in model.layers for b in layer.buffers.values()]


def _per_layer_step(model, x, t, w, loss):
    out = model.forward(x, training=True)
    value, dout = loss(out, t, w)
    model.backward(dout, need_input_grad=False)
    return out.copy(), value


@pytest.mark.parametrize("rows", [2, 7, 128])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, layers, make_loss, kind", COMBOS, ids=[c[0] for c in COMBOS])
def test_plan_gives_the_bits_of_the_per_layer_path(name, layers, make_loss, kind, dtype,
                                                   threads, rows):
    rng = np.random.default_rng(rows)
    planned, by_layer = _model(layers, dtype), _model(layers, dtype)
    loss = make_loss()
    x = (rng.standard_normal((rows, 5)) * 2).astype(dtype)
    t = loss.prepare_targets(_targets(kind, rows, rng), 3, planned.dtype)
    w = rng.uniform(0.0, 2.0, rows).astype(dtype) if rows == 7 else None
    plan = planned.step_plan(rows, True, loss, t, w is not None)
    plan.bind(x, t, w)
    with fo.threads(threads):
        for _ in range(2):   # the second step: new dropout masks, moved running statistics
            ref_out, ref_value = _per_layer_step(by_layer, x, t, w, loss)
            planned.train_step += 1
            value = plan.run(planned.train_step)
            assert planned.train_step == by_layer.train_step
            np.testing.assert_array_equal(plan.output, ref_out)
            assert value == ref_value
            np.testing.assert_array_equal(planned.gradients, by_layer.gradients)
            for a, b in zip(_state(planned), _state(by_layer)):
                np.testing.assert_array_equal(a, b)
            expected_sq = float(np.sum(by_layer.gradients.astype(np.float64) ** 2))
            np.testing.assert_allclose(plan.grad_sum_squares, expected_sq, rtol=1e-12)
        # Evaluation: batch sizes 1 and the whole batch, through evaluation plans.
        one_by_one = np.vstack([by_layer._forward(x[i:i + 1], False).copy()
                                for i in range(rows)])
        np.testing.assert_array_equal(planned.predict(x, batch_size=1), one_by_one)
        np.testing.assert_array_equal(planned.predict(x), by_layer._forward(x, False))


@pytest.mark.parametrize("dtype", DTYPES)
def test_masks_of_the_fused_block_are_the_dropout_layers_masks(dtype):
    rng = np.random.default_rng(0)
    make = COMBOS[1][1]
    planned, by_layer = _model(make, dtype), _model(make, dtype)
    x = rng.standard_normal((33, 5)).astype(dtype)
    target = np.zeros(33, np.int64)
    plan = planned.step_plan(33, True, fo.losses.SoftmaxCrossEntropy(), target)
    assert [s["kind"] for s in plan.stages] == ["dense", "batchnorm", "dense"]
    plan.bind(x, target)
    for step in (1, 2, 3):
        plan.forward(step)
        by_layer.forward(x, training=True)
        np.testing.assert_array_equal(plan.stages[1]["bits"], by_layer.layers[3]._out["bits"])


def test_plan_does_not_change_the_users_layers():
    model = _model(COMBOS[1][1], "float64")
    before = {k: v for k, v in vars(model.layers[1]).items() if not isinstance(v, np.ndarray)}
    model.step_plan(16, True, fo.losses.SoftmaxCrossEntropy(), np.zeros(16, np.int64))
    after = {k: v for k, v in vars(model.layers[1]).items() if not isinstance(v, np.ndarray)}
    assert before.keys() == after.keys()
    # The BatchNorm layer called by itself still only normalizes (no activation applied).
    x = np.random.default_rng(1).standard_normal((16, 8))
    y = model.layers[1].forward(x, training=True)
    assert (y < 0).any()


@pytest.mark.parametrize("with_dropout", [False, True])
def test_plan_gradients_match_finite_differences(with_dropout):
    layers = [fo.Dense(6), fo.BatchNorm(), fo.Activation("relu")]
    layers += [fo.Dropout(0.25)] if with_dropout else []
    layers += [fo.Dense(4, activation="tanh"), fo.Dense(3)]
    model = _model(lambda: layers, "float64", seed=5)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((11, 5))
    t = rng.standard_normal((11, 3))
    plan = model.step_plan(11, True, fo.losses.MeanSquaredError(), t)
    plan.bind(x, t)
    plan.run(step=7)
    grad = model.gradients.copy()
    params = model.parameters
    eps = 1e-6
    picks = rng.choice([s.offset + k for s in model.arena.slots for k in range(s.size)],
                       size=25, replace=False)
    for i in picks:
        keep = params[i]
        params[i] = keep + eps
        up = plan.run(step=7)
        params[i] = keep - eps
        down = plan.run(step=7)
        params[i] = keep
        assert abs((up - down) / (2 * eps) - grad[i]) < 1e-6 * max(1.0, abs(grad[i]))


def _reference_fit(model, X, y, loss, optimizer, batch_size, epochs, seed):
    """Trainer.fit's arithmetic written out on the per-layer path (shuffled epochs, a last
    partial batch, no clipping)."""
    T = loss.prepare_targets(y, model.output_dim, model.dtype)
    X = np.ascontiguousarray(X, model.dtype)
    segments = model.arena.segments()
    n = X.shape[0]
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch + 1]).permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            _per_layer_step(model, X[idx], T[idx], None, loss)
            optimizer.step(model.parameters, model.gradients, segments)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_equals_a_straight_per_layer_loop(dtype, threads):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((23, 5))
    y = rng.integers(0, 3, 23)
    make = COMBOS[1][1]
    fitted, reference = _model(make, dtype), _model(make, dtype)
    trainer = fo.Trainer(fitted, "softmax_cross_entropy", fo.optim.Adam(lr=1e-2))
    with fo.threads(threads):
        trainer.fit(X, y, epochs=3, batch_size=7, seed=4, verbose=0)   # 7, 7, 7, 2 rows
        _reference_fit(reference, X, y, fo.losses.SoftmaxCrossEntropy(),
                       fo.optim.Adam(lr=1e-2), 7, 3, 4)
    np.testing.assert_array_equal(fitted.parameters, reference.parameters)
    for a, b in zip(_state(fitted), _state(reference)):
        np.testing.assert_array_equal(a, b)


def test_thread_count_does_not_change_a_fit():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 5))
    y = rng.integers(0, 3, 300)
    results = []
    for threads in (1, 2):
        model = _model(COMBOS[1][1], "float32")
        trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.Adam(lr=1e-2))
        with fo.threads(threads):
            trainer.fit(X, y, epochs=2, batch_size=128, seed=0, verbose=0)
        results.append(model.parameters.copy())
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("name, layers, make_loss, kind", COMBOS, ids=[c[0] for c in COMBOS])
def test_steady_state_step_allocates_nothing(name, layers, make_loss, kind):
    rng = np.random.default_rng(0)
    model = _model(layers, "float32")
    loss = make_loss()
    X = rng.standard_normal((64, 5)).astype(np.float32)
    T = loss.prepare_targets(_targets(kind, 64, rng), 3, model.dtype)
    trainer = fo.Trainer(model, loss, fo.optim.Adam(lr=1e-3))
    plan = trainer._plan_for(32, T, None)
    plan.bind(X, T, None)
    order = rng.permutation(64)
    for start in (0, 32, 0):
        trainer._step(plan, order, start)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for start in (0, 32) * 10:
            trainer._step(plan, order, start)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - base < 2048, f"{peak - base} bytes allocated over 20 steps"


def test_plan_refuses_a_one_row_training_batch_with_batch_norm():
    model = _model(COMBOS[1][1], "float64")
    with pytest.raises(ValueError, match="more than 1 sample"):
        StepPlan(model, 1, True)


def test_input_gradient_of_the_plan_equals_the_layers():
    make = COMBOS[1][1]
    planned, by_layer = _model(make, "float64"), _model(make, "float64")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((9, 5))
    dy = rng.standard_normal((9, 3))
    plan = StepPlan(planned, 9, True, input_grad=True)
    plan.bind(x)
    plan.forward(step=1)
    np.copyto(plan.dout, dy)
    plan.backward()
    by_layer.forward(x, training=True)
    dx = by_layer.backward(dy)
    np.testing.assert_array_equal(plan.input_grad, dx)
