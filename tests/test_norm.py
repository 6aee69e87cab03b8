import numpy as np
import pytest

import fastopt as fo
from fastopt._kernels import dense as _dense
from fastopt._kernels import norm as _norm

from reference import bn_backward, bn_forward, dropout_keep

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
WIDTHS = [1, 7, 17, 33, 257]
BATCHES = [2, 3, 129]


def _bn_model(width, dtype, momentum=0.1, eps=1e-5, affine=True, seed=0):
    model = fo.Sequential([fo.BatchNorm(momentum=momentum, eps=eps, affine=affine)],
                          input_dim=width, dtype=dtype, seed=seed)
    return model, model.layers[0]


def _random_affine(layer, rng):
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, layer.params["gamma"].shape)
    layer.params["beta"][...] = rng.standard_normal(layer.params["beta"].shape)


def _data(rng, n, d, dtype, offset=3.0):
    # An offset mean larger than the spread: a one-pass E[x²] − μ² would lose digits.
    return (offset + rng.standard_normal((n, d)) * rng.uniform(0.1, 2.0, d)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("d", WIDTHS)
def test_batchnorm_training_forward_and_backward_match_reference(dtype, n, d):
    rng = np.random.default_rng(n * 1000 + d)
    model, bn = _bn_model(d, dtype)
    _random_affine(bn, rng)
    x = _data(rng, n, d, dtype)
    dy = rng.standard_normal((n, d)).astype(dtype)
    gamma = bn.params["gamma"].astype(np.float64)
    beta = bn.params["beta"].astype(np.float64)
    y = model.forward(x, training=True)
    dx = model.backward(dy)
    y_ref, mu, var, xhat = bn_forward(x, gamma, beta, 1e-5)
    dx_ref, dgamma_ref, dbeta_ref = bn_backward(dy.astype(np.float64), xhat, var, gamma, 1e-5)
    tol = TOL[dtype]
    np.testing.assert_allclose(y, y_ref, **tol)
    # dx is a difference of terms of size γ/σ·|dy| (all but cancelling for N = 2):
    # its error is relative to that size, not to dx.
    size = np.abs(gamma) / np.sqrt(var + 1e-5) * np.abs(dy).max()
    np.testing.assert_allclose(dx, dx_ref, rtol=tol["rtol"], atol=tol["atol"] * size.max())
    np.testing.assert_allclose(bn.grads["gamma"], dgamma_ref, **tol)
    np.testing.assert_allclose(bn.grads["beta"], dbeta_ref, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 17, 257])
def test_batchnorm_eval_uses_running_statistics(dtype, d):
    rng = np.random.default_rng(d)
    model, bn = _bn_model(d, dtype)
    _random_affine(bn, rng)
    bn.running_mean[...] = rng.standard_normal(d)
    bn.running_var[...] = rng.uniform(0.1, 3.0, d)
    x = _data(rng, 3, d, dtype)
    y = model.forward(x, training=False)
    rm, rv = bn.running_mean.astype(np.float64), bn.running_var.astype(np.float64)
    expected = (bn.params["gamma"] * (x - rm) / np.sqrt(rv + 1e-5)
                + bn.params["beta"].astype(np.float64))
    np.testing.assert_allclose(y, expected, **TOL[dtype])
    # one row is fine in evaluation
    np.testing.assert_allclose(model.forward(x[:1], training=False), expected[:1], **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0])
def test_running_statistics_after_k_steps_match_reference(dtype, momentum):
    rng = np.random.default_rng(5)
    model, bn = _bn_model(33, dtype, momentum=momentum)
    rm, rv = np.zeros(33), np.ones(33)
    for k in range(6):
        n = (3, 129, 2)[k % 3]
        x = _data(rng, n, 33, dtype)
        model.forward(x, training=True)
        x64 = x.astype(np.float64)
        rm = (1 - momentum) * rm + momentum * x64.mean(axis=0)
        rv = (1 - momentum) * rv + momentum * x64.var(axis=0, ddof=1)
    np.testing.assert_allclose(bn.running_mean, rm, **TOL[dtype])
    np.testing.assert_allclose(bn.running_var, rv, **TOL[dtype])


def test_batch_of_one_in_training_is_an_error():
    model, _ = _bn_model(4, np.float64)
    with pytest.raises(ValueError, match="more than 1 sample"):
        model.forward(np.ones((1, 4)), training=True)


@pytest.mark.parametrize("kwargs", [dict(momentum=-0.1), dict(momentum=1.5), dict(eps=0),
                                    dict(eps=-1e-5)])
def test_invalid_hyperparameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        fo.BatchNorm(**kwargs)


def test_without_affine_there_are_no_parameters():
    rng = np.random.default_rng(0)
    model, bn = _bn_model(7, np.float64, affine=False)
    assert model.n_params == 0
    x = _data(rng, 9, 7, np.float64)
    y_ref, _, var, xhat = bn_forward(x, 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(model.forward(x, training=True), y_ref, rtol=1e-12)
    dy = rng.standard_normal((9, 7))
    dx_ref, _, _ = bn_backward(dy, xhat, var, np.ones(7), 1e-5)
    np.testing.assert_allclose(model.backward(dy), dx_ref, rtol=1e-12, atol=1e-12)


def test_scale_and_shift_are_not_decayed_by_default():
    model = fo.Sequential([fo.Dense(5), fo.BatchNorm()], input_dim=3)
    decayed = {(s.layer, s.name): s.decay for s in model.arena.slots}
    assert decayed == {(0, "W"): True, (0, "b"): False, (1, "gamma"): False,
                       (1, "beta"): False}


def test_fused_activation_codes_match_dense():
    for name, code in _norm.FUSED_ACTIVATIONS.items():
        assert _dense.ACTIVATIONS[name] == code


def _block_model(dtype, act="relu", rate=0.3, seed=0, d_in=7, width=17, alpha=None):
    layers = [fo.Dense(width), fo.BatchNorm(), fo.Activation(act, alpha=alpha),
              fo.Dropout(rate), fo.Dense(3)]
    return fo.Sequential(layers, input_dim=d_in, dtype=dtype, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["identity", "relu", "leaky_relu", "elu"])
def test_fused_block_matches_unfused_reference(dtype, act):
    rng = np.random.default_rng(0)
    model = _block_model(dtype, act, seed=4)
    loss = fo.losses.MeanSquaredError()
    target = np.zeros((129, 3), dtype)
    plan = model.step_plan(129, True, loss, target)
    # Dense, BatchNorm(+act+dropout), Dense for every activation the norm kernel applies
    # (ELU too: its fused derivative is a + α from the recomputed output, as the
    # Activation layer takes it from the stored one).
    assert [s["kind"] for s in plan.stages] == ["dense", "batchnorm", "dense"]
    bn, act_layer = model.layers[1], model.layers[2]
    _random_affine(bn, rng)
    x = rng.standard_normal((129, 7)).astype(dtype)
    dy = rng.standard_normal((129, 3)).astype(dtype)
    plan.bind(x, target)
    plan.forward(step=1)
    out = plan.stages[1]["y"].astype(np.float64)
    np.copyto(plan.dout, dy)
    plan.backward()

    # reference in float64 from the same Dense output
    h = plan.stages[0]["y"].astype(np.float64)
    gamma = bn.params["gamma"].astype(np.float64)
    z, mu, var, xhat = bn_forward(h, gamma, bn.params["beta"].astype(np.float64), 1e-5)
    a = act_layer.alpha
    if act == "relu":
        f, fp = np.maximum(z, 0), (z > 0).astype(float)
    elif act == "leaky_relu":
        f, fp = np.where(z > 0, z, a * z), np.where(z > 0, 1.0, a)
    elif act == "elu":
        f, fp = np.where(z > 0, z, a * np.expm1(z)), np.where(z > 0, 1.0, a * np.exp(z))
    else:
        f, fp = z, np.ones_like(z)
    keep = dropout_keep(4, 1, 3, z.shape, 0.3)
    m = np.where(keep, 1 / 0.7, 0.0)
    tol = TOL[dtype]
    np.testing.assert_allclose(out, f * m, **tol)
    W2 = model.layers[4].params["W"].astype(np.float64)
    g = (dy.astype(np.float64) @ W2) * m * fp
    dh_ref, dgamma_ref, dbeta_ref = bn_backward(g, xhat, var, gamma, 1e-5)
    np.testing.assert_allclose(bn.grads["gamma"], dgamma_ref, **tol)
    np.testing.assert_allclose(bn.grads["beta"], dbeta_ref, **tol)
    np.testing.assert_allclose(plan.stages[1]["dx"], dh_ref, **tol)


@pytest.mark.parametrize("layers, kinds", [
    (lambda: [fo.Dense(9, activation="relu"), fo.BatchNorm(), fo.Dropout(0.2), fo.Dense(2)],
     ["dense", "batchnorm", "dense"]),
    (lambda: [fo.Dense(9), fo.BatchNorm(), fo.Activation("relu"), fo.Dense(2)],
     ["dense", "batchnorm", "dense"]),
    (lambda: [fo.Dense(9), fo.BatchNorm(), fo.Activation("tanh"), fo.Dropout(0.2),
              fo.Dense(2)],   # tanh is not fused, so neither is the dropout after it
     ["dense", "batchnorm", "activation", "dropout", "dense"]),
    (lambda: [fo.Dense(9), fo.BatchNorm(), fo.Dense(2)], ["dense", "batchnorm", "dense"]),
    (lambda: [fo.Dense(9), fo.BatchNorm(), fo.Activation("elu", alpha=0.7), fo.Dropout(0.2),
              fo.Dense(2)], ["dense", "batchnorm", "dense"]),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fusion_plan_and_results_match_the_layers_run_one_by_one(layers, kinds, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((33, 5)).astype(dtype)
    dy = rng.standard_normal((33, 2)).astype(dtype)
    planned = fo.Sequential(layers(), input_dim=5, dtype=dtype, seed=2)
    by_layer = fo.Sequential(layers(), input_dim=5, dtype=dtype, seed=2)
    for model in (planned, by_layer):     # the same non-trivial γ, β in both
        for layer in model.layers:
            if isinstance(layer, fo.BatchNorm):
                _random_affine(layer, np.random.default_rng(7))
    target = np.zeros((33, 2), dtype)
    plan = planned.step_plan(33, True, fo.losses.MeanSquaredError(), target)
    assert [s["kind"] for s in plan.stages] == kinds
    plan.bind(x, target)
    for step in (1, 2):
        out = plan.forward(step=step)
        np.copyto(plan.dout, dy)
        plan.backward()
        ref = by_layer.forward(x, training=True)
        by_layer.backward(dy)
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(planned.gradients, by_layer.gradients)
    np.testing.assert_array_equal(planned.predict(x), by_layer._forward(x, False))


@pytest.mark.parametrize("with_dropout", [False, True])
def test_gradients_match_finite_differences_through_dense_bn_relu_dropout(with_dropout):
    rng = np.random.default_rng(3)
    layers = [fo.Dense(13), fo.BatchNorm(), fo.Activation("relu")]
    layers += [fo.Dropout(0.25)] if with_dropout else []
    layers += [fo.Dense(4, activation="tanh")]
    model = fo.Sequential(layers, input_dim=6, dtype="float64", seed=5)
    _random_affine(model.layers[1], rng)
    x = rng.standard_normal((11, 6))
    r = rng.standard_normal((11, 4))

    def loss(xv):
        model.train_step = 0        # same step → same dropout mask
        return float(np.sum(model.forward(xv, training=True) * r))

    loss(x)
    dx = model.backward(r).copy()
    grads = model.gradients.copy()
    params = model.parameters
    h = 1e-6
    for idx in rng.choice(np.flatnonzero(grads != 0), 25, replace=False):
        old = params[idx]
        params[idx] = old + h
        up = loss(x)
        params[idx] = old - h
        down = loss(x)
        params[idx] = old
        assert abs((up - down) / (2 * h) - grads[idx]) < 1e-6 * (1 + abs(grads[idx]))
    for i, j in [(0, 0), (3, 2), (10, 5)]:
        xp, xm = x.copy(), x.copy()
        xp[i, j] += h
        xm[i, j] -= h
        assert abs((loss(xp) - loss(xm)) / (2 * h) - dx[i, j]) < 1e-6 * (1 + abs(dx[i, j]))


def test_batchnorm_is_bitwise_identical_for_one_and_two_threads():
    rng = np.random.default_rng(6)
    x = _data(rng, 700, 300, np.float32)
    dy = rng.standard_normal((700, 300)).astype(np.float32)
    results = []
    for n in (1, 2):
        with fo.threads(n):
            model = _block_model(np.float32, width=300, d_in=300)
            model.layers[0].params["W"][...] = np.eye(300)   # BN sees x itself
            out = model.layers[1].forward(x, training=True).copy()
            dx = model.layers[1].backward(dy).copy()
            model.forward(x, training=True)
            model.backward(np.ones((700, 3), np.float32))
            results.append((out, dx, model.parameters.copy(), model.gradients.copy(),
                            model.layers[1].running_var.copy()))
    for a, b in zip(*results):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("n", [15, 16, 17, 1024, 1025])
def test_row_block_merge_matches_reference_across_block_boundaries(n):
    # 16-row blocks up to 1024 rows, 32-row blocks from 1025: partials merged by Chan.
    rng = np.random.default_rng(n)
    model, bn = _bn_model(9, np.float64)
    x = _data(rng, n, 9, np.float64, offset=1e4)
    y = model.forward(x, training=True)
    y_ref, mu, var, _ = bn_forward(x, 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var * n / (n - 1), rtol=1e-12)


@pytest.mark.parametrize("n", [2, 16, 37, 2000])
def test_one_pass_shifted_statistics_keep_float64_digits_on_float32_input(n):
    # Mean 1e4, spread 1e-2: E[x²] − μ² in float64 would keep ~8 digits of the variance,
    # the block-shifted sums all of what float64 holds. Also the first row an outlier,
    # the worst shift for its block.
    rng = np.random.default_rng(n)
    x = (1e4 + 1e-2 * rng.standard_normal((n, 5))).astype(np.float32)
    x[0] += np.float32(3.0)
    model, bn = _bn_model(5, np.float32, momentum=1.0)
    model.forward(x, training=True)
    ref = x.astype(np.float64)
    np.testing.assert_allclose(bn._mean, ref.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(bn._invstd, 1 / np.sqrt(ref.var(axis=0) + 1e-5), rtol=1e-11)


def test_whole_network_training_is_bitwise_identical_for_one_and_two_threads():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((600, 64)).astype(np.float32)
    y = rng.integers(0, 10, 600)
    final = []
    for n in (1, 2):
        with fo.threads(n):
            model = fo.Sequential([
                fo.Dense(256), fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2),
                fo.Dense(128, activation="relu"), fo.BatchNorm(), fo.Dropout(0.2),
                fo.Dense(10)], input_dim=64, dtype="float32", seed=9)
            trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.05))
            history = trainer.fit(X, y, epochs=2, batch_size=128, seed=1)
            final.append((model.parameters.copy(), model.layers[1].running_mean.copy(),
                          model.layers[5].running_var.copy(), history["loss"]))
    assert np.array_equal(final[0][0], final[1][0])
    assert np.array_equal(final[0][1], final[1][1])
    assert np.array_equal(final[0][2], final[1][2])
    assert final[0][3] == final[1][3]


def test_training_with_bn_and_dropout_reduces_the_loss():
    data = fo.datasets.load_digits() if hasattr(fo.datasets, "load_digits") else None
    rng = np.random.default_rng(0)
    if data is None:
        X = rng.standard_normal((512, 20)).astype(np.float32)
        y = (X[:, 0] > 0).astype(np.int64)
    else:
        X, y = data[0].astype(np.float32), data[1]
    model = fo.Sequential([fo.Dense(64), fo.BatchNorm(), fo.Activation("relu"),
                           fo.Dropout(0.1), fo.Dense(int(y.max()) + 1)],
                          input_dim=X.shape[1], dtype="float32", seed=0)
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.1))
    history = trainer.fit(X, y, epochs=5, batch_size=64, seed=0)
    assert history["loss"][-1] < 0.5 * history["loss"][0]


# ---- PyTorch, where it is installed ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, d", [(2, 7), (129, 33), (64, 257)])
def test_batchnorm_matches_torch_batchnorm1d(dtype, n, d):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(n + d)
    model, bn = _bn_model(d, dtype, momentum=0.2, eps=1e-3)
    _random_affine(bn, rng)
    tbn = torch.nn.BatchNorm1d(d, eps=1e-3, momentum=0.2,
                               dtype=torch.float32 if dtype == np.float32 else torch.float64)
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(bn.params["gamma"].copy()))
        tbn.bias.copy_(torch.from_numpy(bn.params["beta"].copy()))
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    for step in range(3):
        x = _data(rng, n, d, dtype)
        dy = rng.standard_normal((n, d)).astype(dtype)
        tx = torch.from_numpy(x).requires_grad_(True)
        ty = tbn.train()(tx)
        ty.backward(torch.from_numpy(dy))
        y = model.forward(x, training=True)
        dx = model.backward(dy)
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
        np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
        np.testing.assert_allclose(bn.grads["gamma"], tbn.weight.grad.numpy(), **tol)
        np.testing.assert_allclose(bn.grads["beta"], tbn.bias.grad.numpy(), **tol)
        tbn.weight.grad = None
        tbn.bias.grad = None
    np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), **tol)
    np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), **tol)
    x = _data(rng, n, d, dtype)
    with torch.no_grad():
        expected = tbn.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x, training=False), expected, **tol)
