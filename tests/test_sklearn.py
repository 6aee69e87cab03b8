"""fastopt.sklearn: scikit-learn's estimator contract, its MLP's parameter semantics, use in
pipelines and parallel model selection, pickling, and scores on scikit-learn's data sets."""

import copy
import inspect
import os
import pickle
import pickletools
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastopt

try:
    import sklearn  # noqa: F401
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.estimator_checks import parametrize_with_checks

    from fastopt.sklearn import MLPClassifier, MLPRegressor
except ImportError:
    sklearn = None

needs_sklearn = pytest.mark.skipif(sklearn is None, reason="scikit-learn is not installed "
                                   "(pip install 'fastopt[sklearn]')")
quiet_convergence = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"
                                               if sklearn else "default")


def test_import_fastopt_does_not_need_scikit_learn():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import fastopt\n"
            "assert 'fastopt.sklearn' not in sys.modules\n"
            "try:\n"
            "    from fastopt.sklearn import MLPClassifier\n"
            "except ImportError as e:\n"
            "    assert 'pip install' in str(e), e\n"
            "else:\n"
            "    raise AssertionError('fastopt.sklearn imported without scikit-learn')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---- scikit-learn's own estimator checks ----

# check_sample_weight_equivalence_on_dense_data compares a fit on 15 rows with integer
# weights against a fit on the rows repeated, at rtol=1e-7. The float64 estimators pass it
# (full batch: "auto" = min(200, n) rows, Σ wᵢℓᵢ / Σ wᵢ is the mean over repeated rows, and
# the L2 term uses B = Σ wᵢ). Two configurations cannot, by construction:
_FLOAT32_ROUNDING = ("float32: the check's rtol=1e-7 is below float32's machine epsilon "
                     "(1.19e-7); the weighted and the repeated fits sum the same terms in "
                     "another order and differ by a few float32 ulps, amplified over 100 "
                     "epochs (8e-7 relative for the classifier). "
                     "test_sample_weight_equivalence_holds_to_float32_rounding checks it at "
                     "float32's resolution; the float64 instances pass the check itself")
_BATCH_STATISTICS = ("batch-norm statistics are unweighted means over the batch's rows and "
                     "dropout draws one mask per row, so a row of weight 2 is not a repeated "
                     "row (a repeated row counts twice in μ and σ² and gets two masks): "
                     "0.26 and 0.02 relative difference on the check's data")


def _expected_failures(est):
    if est.batch_norm or est.dropout:
        return {"check_sample_weight_equivalence_on_dense_data": _BATCH_STATISTICS}
    if est.dtype == "float32":
        return {"check_sample_weight_equivalence_on_dense_data": _FLOAT32_ROUNDING}
    return {}


if sklearn is not None:
    @parametrize_with_checks(
        [MLPClassifier(max_iter=100), MLPRegressor(max_iter=100),
         MLPClassifier(max_iter=100, dtype="float64"), MLPRegressor(max_iter=100, dtype="float64"),
         MLPClassifier(max_iter=30, batch_norm=True, dropout=0.2, solver="sgd")],
        expected_failed_checks=_expected_failures)
    def test_scikit_learn_estimator_checks(estimator, check):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            check(estimator)


@needs_sklearn
@quiet_convergence
@pytest.mark.parametrize("make", [lambda: MLPClassifier(max_iter=100),
                                  lambda: MLPRegressor(max_iter=100)],
                         ids=["MLPClassifier", "MLPRegressor"])
def test_sample_weight_equivalence_holds_to_float32_rounding(make):
    """scikit-learn's check_sample_weight_equivalence_on_dense_data, its data and
    procedure, at a tolerance float32 can meet (the check's 1e-7 is below float32's eps)."""
    from sklearn.base import clone
    from sklearn.utils import shuffle

    rng = np.random.RandomState(42)
    X = rng.rand(15, 30)
    y = rng.randint(0, 3, size=15)
    sw = rng.randint(0, 5, size=15)
    X_rep, y_rep = X.repeat(sw, axis=0), y.repeat(sw)
    X_w, y_w, sw_w = shuffle(X, y, sw, random_state=0)
    est = make()
    repeated = clone(est).set_params(random_state=0).fit(X_rep, y_rep)
    weighted = clone(est).set_params(random_state=0).fit(X_w, y_w, sample_weight=sw_w)
    method = "predict_proba" if hasattr(est, "predict_proba") else "predict"
    a, b = getattr(repeated, method)(X), getattr(weighted, method)(X)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max())
    assert not np.allclose(a, b, rtol=1e-9, atol=0), "float32 should not be bitwise equal"


# ---- parameters ----

@needs_sklearn
@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_parameters_have_scikit_learn_names_and_defaults(name):
    import sklearn.neural_network as skl

    theirs = inspect.signature(getattr(skl, name)).parameters
    ours = inspect.signature(getattr(fastopt.sklearn, name)).parameters
    for param, spec in theirs.items():
        if param == "max_fun":  # L-BFGS only; fastopt trains with stochastic solvers
            continue
        assert param in ours, f"{name} lacks scikit-learn's parameter {param!r}"
        assert ours[param].default == spec.default, param
    positional = [p for p, spec in theirs.items() if spec.kind == spec.POSITIONAL_OR_KEYWORD]
    assert list(ours)[:len(positional)] == positional, "positional order differs"


@needs_sklearn
@pytest.mark.parametrize("params, match", [
    (dict(solver="lbfgs"), "stochastic solvers"),
    (dict(activation="softmax"), "activation"),
    (dict(hidden_layer_sizes=(10, 0)), "hidden_layer_sizes"),
    (dict(batch_size=0), "batch_size"),
    (dict(dropout=1.0), "dropout"),
    (dict(dtype="float16"), "dtype"),
    (dict(learning_rate="invscaling", schedule=fastopt.schedules.Constant()), "not both"),
])
def test_invalid_parameters_fail_before_training(params, match):
    X, y = np.random.default_rng(0).standard_normal((20, 3)), np.arange(20) % 2
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(X, y)


# ---- the maths behind the parameters, against numpy references ----

def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@needs_sklearn
@quiet_convergence
def test_alpha_is_l2_penalty_over_the_batch_size_in_one_sgd_step(rng):
    n, d, k, lr, alpha = 40, 5, 3, 0.3, 2.0
    X = rng.standard_normal((n, d))
    y = np.array(["a", "b", "c"])[rng.integers(0, k, n)]
    est = MLPClassifier(hidden_layer_sizes=(), solver="sgd", momentum=0.0, alpha=alpha,
                        learning_rate_init=lr, batch_size=None, max_iter=1, shuffle=False,
                        warm_start=True, dtype="float64", random_state=0).fit(X, y)
    W0, b0 = est.coefs_[0], est.intercepts_[0]
    est.fit(X, y)  # warm start: one more full-batch step from (W0, b0)
    Y = (y[:, None] == np.array(["a", "b", "c"])).astype(float)
    R = _softmax(X @ W0 + b0) - Y
    np.testing.assert_allclose(est.coefs_[0], W0 - lr * (X.T @ R / n + alpha / n * W0),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(est.intercepts_[0], b0 - lr * R.mean(axis=0), rtol=1e-12,
                               atol=1e-14)


@needs_sklearn
@quiet_convergence
def test_regressor_trains_on_standardized_targets_and_predicts_in_their_units(rng):
    n, d, lr, alpha = 30, 4, 0.1, 0.5
    X = rng.standard_normal((n, d))
    y = 1000.0 * X[:, 0] + 5000.0 + 10 * rng.standard_normal(n)
    est = MLPRegressor(hidden_layer_sizes=(), solver="sgd", momentum=0.0, alpha=alpha,
                       learning_rate_init=lr, batch_size=None, max_iter=1, shuffle=False,
                       warm_start=True, dtype="float64", random_state=0).fit(X, y)
    np.testing.assert_allclose(est.y_mean_, [y.mean()], rtol=1e-13)
    np.testing.assert_allclose(est.y_scale_, [y.std()], rtol=1e-13)
    W0, b0 = est.coefs_[0], est.intercepts_[0]
    est.fit(X, y)
    t = ((y - y.mean()) / y.std())[:, None]
    r = X @ W0 + b0 - t
    W1 = W0 - lr * (2 * X.T @ r / n + alpha / n * W0)
    b1 = b0 - lr * 2 * r.mean(axis=0)
    np.testing.assert_allclose(est.coefs_[0], W1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(est.predict(X), ((X @ W1 + b1) * y.std() + y.mean()).ravel(),
                               rtol=1e-12)


@needs_sklearn
@quiet_convergence
def test_unscaled_targets_and_several_outputs_are_learned(rng):
    X = rng.standard_normal((300, 3))
    Y = np.column_stack([1e4 * X[:, 0] + 3e4, -0.01 * X[:, 1] ** 2])
    est = MLPRegressor(hidden_layer_sizes=(32,), learning_rate_init=0.01, max_iter=300,
                       random_state=0).fit(X, Y)
    assert est.predict(X).shape == (300, 2)
    assert est.score(X, Y) > 0.95
    assert MLPRegressor(max_iter=5, random_state=0).fit(X, Y[:, 0]).predict(X).shape == (300,)


@needs_sklearn
@quiet_convergence
def test_training_loss_plateau_stops_after_n_iter_no_change_epochs(rng):
    X, y = rng.standard_normal((60, 4)), rng.integers(0, 2, 60)
    est = MLPClassifier(tol=1e9, n_iter_no_change=3, max_iter=50, random_state=0).fit(X, y)
    # Epoch 1 improves on +inf; epochs 2..5 improve by less than tol: count 4 > 3 stops.
    assert est.n_iter_ == 5 == len(est.loss_curve_)
    assert est.best_loss_ == min(est.loss_curve_)
    assert est.validation_scores_ is None and est.best_validation_score_ is None
    assert est.t_ == 5 * 60


@needs_sklearn
def test_early_stopping_scores_a_held_out_split_and_keeps_the_best_epoch(rng):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    est = MLPClassifier(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=3,
                        learning_rate_init=0.01, max_iter=200, random_state=0).fit(X / 16, y)
    assert est.n_iter_ < 200
    assert len(est.validation_scores_) == est.n_iter_
    assert est.best_validation_score_ == max(est.validation_scores_) > 0.9
    assert est.best_loss_ is None
    with pytest.raises(ValueError, match="early_stopping"):
        est.partial_fit(X, y)


@needs_sklearn
@pytest.mark.parametrize("solver", ["adam", "sgd", "adamw", "rmsprop", "adagrad"])
def test_every_solver_learns_the_digits(solver):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    lr = {"sgd": 0.1, "adagrad": 0.05}.get(solver, 0.005)
    est = MLPClassifier(hidden_layer_sizes=(64,), solver=solver, learning_rate_init=lr,
                        max_iter=30, batch_size=64, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X[:1400] / 16, y[:1400])
    assert est.score(X[1400:] / 16, y[1400:]) > 0.9


@needs_sklearn
@quiet_convergence
def test_batch_norm_and_dropout_are_built_and_learn():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    est = MLPClassifier(hidden_layer_sizes=(64, 32), batch_norm=True, dropout=0.2,
                        max_iter=20, batch_size=65, random_state=0).fit(X[:1400] / 16, y[:1400])
    kinds = [type(layer).__name__ for layer in est.model_.layers]
    assert kinds == ["Dense", "BatchNorm", "Activation", "Dropout"] * 2 + ["Dense"]
    assert est.score(X[1400:] / 16, y[1400:]) > 0.9


# ---- the estimators against scikit-learn's own MLP and PyTorch, from the same weights ----
#
# Each test fits fastopt for one epoch from its own initialization, copies those weights into
# the reference, and trains both on for more epochs with warm_start: a warm-start fit starts
# a fresh optimizer in fastopt and in scikit-learn alike (and here in torch), so both runs
# start from the same state and must take the same steps. 4 classes, not 2: for binary
# targets scikit-learn's MLP has one logistic output where fastopt has two softmax logits.

_NO_STOP = dict(tol=0.0, n_iter_no_change=1000, shuffle=False, dtype="float64",
                random_state=0)


def _four_classes(rng, n=96, d=7):
    X = rng.standard_normal((n, d))
    code = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] + 0.5 * X[:, 2] > 0)
    return X, np.array(["w", "x", "y", "z"])[code]


def _train_both_from_fastopts_first_epoch(ours, theirs, X, y, epochs, **fit):
    ours.set_params(max_iter=1, warm_start=True).fit(X, y, **fit)
    theirs.set_params(max_iter=1, warm_start=True).fit(X, y, **fit)
    theirs.coefs_, theirs.intercepts_ = ours.coefs_, ours.intercepts_
    for est in (ours, theirs):
        est.set_params(max_iter=epochs).fit(X, y, **fit)


def _assert_same_weights(ours, theirs_coefs, theirs_intercepts, rtol=1e-9):
    for mine, reference in zip(ours.coefs_ + ours.intercepts_,
                               list(theirs_coefs) + list(theirs_intercepts)):
        np.testing.assert_allclose(mine, reference, rtol=rtol, atol=rtol * 1e-2)


@needs_sklearn
@quiet_convergence
@pytest.mark.parametrize("params, weighted", [
    # an uneven last batch (96 = 4·20 + 16), plain SGD
    (dict(activation="relu", momentum=0.0, batch_size=20, alpha=0.0), False),
    (dict(activation="tanh", momentum=0.9, nesterovs_momentum=True, batch_size=24,
          alpha=1e-2), False),
    (dict(activation="logistic", momentum=0.8, nesterovs_momentum=False, batch_size=32,
          alpha=0.1, learning_rate="invscaling", power_t=0.5, learning_rate_init=0.5), False),
    # the loss never improves by tol: "adaptive" divides lr by 5 after every 2nd epoch
    (dict(activation="relu", momentum=0.9, batch_size=24, alpha=1e-3, learning_rate="adaptive",
          tol=1e9, n_iter_no_change=1), False),
    # full batch with sample weights: the L2 term over Σ w, the loss Σ wᵢℓᵢ / Σ wᵢ
    (dict(activation="relu", momentum=0.9, batch_size=96, alpha=0.3), True),
    # scikit-learn's Adam adds eps to √v where fastopt (and torch) add it to √v/√(1 − β₂ᵗ);
    # with an eps far below √v both are lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ)·m/√v
    (dict(activation="tanh", solver="adam", beta_1=0.8, beta_2=0.95, epsilon=1e-200,
          learning_rate_init=0.01, batch_size=24, alpha=0.1), False),
], ids=["relu-sgd-uneven-batches", "tanh-nesterov", "logistic-momentum-invscaling",
        "relu-momentum-adaptive", "relu-full-batch-weighted", "tanh-adam"])
def test_classifier_takes_scikit_learns_steps(rng, params, weighted):
    from sklearn.neural_network import MLPClassifier as Reference

    if weighted and "sample_weight" not in inspect.signature(Reference.fit).parameters:
        pytest.skip("scikit-learn < 1.7: its MLP takes no sample_weight")
    X, y = _four_classes(rng)
    fit = dict(sample_weight=rng.uniform(0.2, 3.0, len(y))) if weighted else {}
    settings = {**_NO_STOP, "hidden_layer_sizes": (11, 6), "solver": "sgd",
                "learning_rate_init": 0.1, **params}
    ours = MLPClassifier(**settings)
    theirs = Reference(**{k: v for k, v in settings.items() if k != "dtype"})
    _train_both_from_fastopts_first_epoch(ours, theirs, X, y, epochs=8, **fit)
    _assert_same_weights(ours, theirs.coefs_, theirs.intercepts_)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9)
    assert list(ours.classes_) == list(theirs.classes_)
    assert (ours.n_iter_, ours.t_) == (theirs.n_iter_, theirs.t_)
    if settings["solver"] == "sgd":  # (scikit-learn's Adam keeps its bias-corrected rate)
        assert ours._trainer.optimizer.lr == pytest.approx(theirs._optimizer.learning_rate,
                                                           rel=1e-12)


@needs_sklearn
def test_partial_fit_streams_as_scikit_learns_partial_fit(rng):
    """Each call is one pass over its chunk (batch_size="auto": the chunk is one batch,
    one chunk shorter), the L2 term alpha / B follows each chunk's B, and the
    "invscaling" rate follows t_ across calls."""
    from sklearn.neural_network import MLPClassifier as Reference

    X, y = _four_classes(rng)
    settings = {**_NO_STOP, "hidden_layer_sizes": (8,), "solver": "sgd", "momentum": 0.0,
                "alpha": 0.05, "learning_rate": "invscaling", "power_t": 0.25,
                "learning_rate_init": 0.3}
    ours = MLPClassifier(**settings)
    theirs = Reference(**{k: v for k, v in settings.items() if k != "dtype"})
    chunks = [slice(0, 40), slice(40, 80), slice(80, 96)]
    for est in (ours, theirs):
        est.partial_fit(X[chunks[0]], y[chunks[0]], classes=["w", "x", "y", "z"])
    theirs.coefs_, theirs.intercepts_ = ours.coefs_, ours.intercepts_
    for _ in range(3):
        for chunk in chunks[1:] + chunks[:1]:
            for est in (ours, theirs):
                est.partial_fit(X[chunk], y[chunk])
    _assert_same_weights(ours, theirs.coefs_, theirs.intercepts_)
    assert (ours.n_iter_, ours.t_) == (theirs.n_iter_, theirs.t_) == (1, 40 + 3 * 96)


@needs_sklearn
@quiet_convergence
def test_regressor_takes_scikit_learns_steps_on_the_standardized_targets(rng):
    """fastopt fits the standardized targets T with the mean squared error over all K
    outputs (gradient 2(ŷ − t)/(B·K)); scikit-learn fits what it is given with half the
    squared error summed over outputs (gradient (ŷ − t)/B). On T, with
    lr' = 2·lr/K and alpha' = alpha·K/2, every SGD step (momentum too) is the same."""
    from sklearn.neural_network import MLPRegressor as Reference

    n, k, lr, alpha = 96, 2, 0.05, 0.2
    X = rng.standard_normal((n, 5))
    Y = np.column_stack([300.0 * np.tanh(X[:, 0]) + 1e4, -0.02 * X[:, 1] * X[:, 2]])
    common = dict(hidden_layer_sizes=(9, 5), activation="tanh", solver="sgd", momentum=0.9,
                  batch_size=24)
    ours = MLPRegressor(**common, learning_rate_init=lr, alpha=alpha, **_NO_STOP)
    theirs = Reference(**common, learning_rate_init=2 * lr / k, alpha=alpha * k / 2,
                       **{key: v for key, v in _NO_STOP.items() if key != "dtype"})
    ours.set_params(max_iter=1, warm_start=True).fit(X, Y)
    np.testing.assert_allclose(ours.y_mean_, Y.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(ours.y_scale_, Y.std(axis=0), rtol=1e-13)
    T = (Y - Y.mean(axis=0)) / Y.std(axis=0)
    theirs.set_params(max_iter=1, warm_start=True).fit(X, T)
    theirs.coefs_, theirs.intercepts_ = ours.coefs_, ours.intercepts_
    ours.set_params(max_iter=6).fit(X, Y)
    theirs.set_params(max_iter=6).fit(X, T)
    _assert_same_weights(ours, theirs.coefs_, theirs.intercepts_)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X) * Y.std(axis=0) + Y.mean(axis=0),
                               rtol=1e-9)


def _torch_mlp(est, activation):
    """The estimator's fitted network as torch modules holding the same parameters:
    Linear for Dense, BatchNorm1d (its running statistics too) for BatchNorm."""
    import torch

    modules = []
    for layer in est.model_.layers:
        kind = type(layer).__name__
        if kind == "Dense":
            W = layer.params["W"]
            linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W.copy()))
                linear.bias.copy_(torch.from_numpy(layer.params["b"].copy()))
            modules.append(linear)
            if layer is not est.model_.layers[-1] and not est.batch_norm:
                modules.append(activation())
        elif kind == "BatchNorm":
            norm = torch.nn.BatchNorm1d(layer.params["gamma"].size, eps=layer.eps,
                                        momentum=layer.momentum, dtype=torch.float64)
            with torch.no_grad():
                norm.weight.copy_(torch.from_numpy(layer.params["gamma"].copy()))
                norm.bias.copy_(torch.from_numpy(layer.params["beta"].copy()))
                norm.running_mean.copy_(torch.from_numpy(layer.running_mean.copy()))
                norm.running_var.copy_(torch.from_numpy(layer.running_var.copy()))
            modules.append(norm)
        elif kind == "Activation":
            modules.append(activation())
    return torch.nn.Sequential(*modules)


def _torch_epochs(net, X, labels, epochs, batch, make_optimizer, weight_decay, clip_norm=None):
    """Mean cross-entropy per batch of consecutive rows; weight_decay on the Linear
    weights only (biases and batch-norm parameters undecayed), as the estimators do."""
    import torch

    decayed = [m.weight for m in net if isinstance(m, torch.nn.Linear)]
    others = [p for p in net.parameters() if all(p is not q for q in decayed)]
    optimizer = make_optimizer([{"params": decayed, "weight_decay": weight_decay},
                                {"params": others, "weight_decay": 0.0}])
    X, labels = torch.from_numpy(X), torch.from_numpy(labels)
    net.train()
    for _ in range(epochs):
        for start in range(0, len(X), batch):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(X[start:start + batch]),
                                                     labels[start:start + batch])
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip_norm)
            optimizer.step()
    net.eval()
    with torch.no_grad():
        return torch.softmax(net(X), dim=1).numpy()


def _torch_optimizer(solver, lr, extra):
    import torch

    def make(groups):
        if solver == "adam":
            return torch.optim.Adam(groups, lr=lr, betas=(0.8, 0.99), eps=1e-7,
                                    amsgrad=extra.get("amsgrad", False))
        if solver == "adamw":
            return torch.optim.AdamW(groups, lr=lr, betas=(0.8, 0.99), eps=1e-7)
        if solver == "rmsprop":
            return torch.optim.RMSprop(groups, lr=lr, alpha=0.99, eps=1e-7)
        if solver == "adagrad":
            return torch.optim.Adagrad(groups, lr=lr, eps=1e-10)
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    return make


@needs_sklearn
@quiet_convergence
@pytest.mark.parametrize("solver, extra, clip_norm", [
    ("adam", {}, None), ("adam", {"amsgrad": True}, None), ("adamw", {}, None),
    ("rmsprop", {}, None), ("adagrad", {}, None), ("sgd", {}, 0.5),
], ids=["adam", "amsgrad", "adamw", "rmsprop", "adagrad", "sgd-clip-norm"])
def test_every_solver_takes_torch_optims_steps(rng, solver, extra, clip_norm):
    """beta_1, beta_2, epsilon, momentum, alpha (coupled L2 alpha/B, or AdamW's decoupled
    decay), optimizer_params and clip_norm reach the optimizer as torch.optim reads them."""
    torch = pytest.importorskip("torch")

    X, y = _four_classes(rng)
    lr, alpha, batch = 0.01, 0.5, 24
    ours = MLPClassifier(hidden_layer_sizes=(10, 7), activation="tanh", solver=solver,
                         learning_rate_init=lr, alpha=alpha, batch_size=batch, beta_1=0.8,
                         beta_2=0.99, epsilon=1e-7, optimizer_params=extra or None,
                         clip_norm=clip_norm, **_NO_STOP)
    ours.set_params(max_iter=1, warm_start=True).fit(X, y)
    net = _torch_mlp(ours, torch.nn.Tanh)
    proba = _torch_epochs(net, X, np.searchsorted(ours.classes_, y), 5, batch,
                          _torch_optimizer(solver, lr, extra),
                          alpha if solver == "adamw" else alpha / batch, clip_norm)
    ours.set_params(max_iter=5).fit(X, y)
    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    _assert_same_weights(ours, [m.weight.detach().numpy().T for m in linear],
                         [m.bias.detach().numpy() for m in linear])
    np.testing.assert_allclose(ours.predict_proba(X), proba, rtol=1e-9)


@needs_sklearn
@quiet_convergence
def test_batch_norm_network_takes_torchs_steps_and_keeps_its_running_statistics(rng):
    torch = pytest.importorskip("torch")

    X, y = _four_classes(rng)
    batch = 24
    ours = MLPClassifier(hidden_layer_sizes=(10, 7), batch_norm=True, solver="sgd",
                         momentum=0.9, learning_rate_init=0.05, alpha=0.2, batch_size=batch,
                         **_NO_STOP)
    ours.set_params(max_iter=1, warm_start=True).fit(X, y)
    net = _torch_mlp(ours, torch.nn.ReLU)
    proba = _torch_epochs(net, X, np.searchsorted(ours.classes_, y), 5, batch,
                          _torch_optimizer("sgd", 0.05, {}), 0.2 / batch)
    ours.set_params(max_iter=5).fit(X, y)
    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    _assert_same_weights(ours, [m.weight.detach().numpy().T for m in linear],
                         [m.bias.detach().numpy() for m in linear])
    norms = [m for m in net if isinstance(m, torch.nn.BatchNorm1d)]
    mine = [layer for layer in ours.model_.layers if type(layer).__name__ == "BatchNorm"]
    for layer, norm in zip(mine, norms, strict=True):
        for value, reference in ((layer.params["gamma"], norm.weight),
                                 (layer.params["beta"], norm.bias),
                                 (layer.running_mean, norm.running_mean),
                                 (layer.running_var, norm.running_var)):
            np.testing.assert_allclose(value, reference.detach().numpy(), rtol=1e-9,
                                       atol=1e-11)
    np.testing.assert_allclose(ours.predict_proba(X), proba, rtol=1e-9)


# ---- labels, weights, streaming, warm start ----

@needs_sklearn
@quiet_convergence
def test_string_labels_map_to_sorted_classes_and_probabilities(rng):
    X = rng.standard_normal((90, 4))
    names = np.array(["setosa", "versicolor", "virginica"])
    y = names[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)]
    est = MLPClassifier(max_iter=50, random_state=0).fit(X, y)
    assert list(est.classes_) == sorted(set(y))
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(np.exp(est.predict_log_proba(X)), proba, rtol=1e-10)


@needs_sklearn
@quiet_convergence
def test_class_weight_equals_the_matching_sample_weight(rng):
    X = rng.standard_normal((80, 3))
    y = np.where(X[:, 0] > 0.7, "rare", "common")
    common = dict(max_iter=20, random_state=0, dtype="float64")
    by_class = MLPClassifier(class_weight={"rare": 4.0}, **common).fit(X, y)
    by_sample = MLPClassifier(**common).fit(X, y, sample_weight=np.where(y == "rare", 4.0, 1.0))
    np.testing.assert_array_equal(by_class.predict_proba(X), by_sample.predict_proba(X))
    counts = {c: np.sum(y == c) for c in ("common", "rare")}
    balanced = np.array([len(y) / (2 * counts[c]) for c in y])
    np.testing.assert_array_equal(
        MLPClassifier(class_weight="balanced", **common).fit(X, y).predict_proba(X),
        MLPClassifier(**common).fit(X, y, sample_weight=balanced).predict_proba(X))


@needs_sklearn
def test_partial_fit_streams_batches_with_classes_on_the_first_call(rng):
    X = rng.standard_normal((400, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + 2 * (X[:, 2] > 1)
    est = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        est.partial_fit(X[:50], y[:50])
    for epoch in range(10):
        for start in range(0, 400, 100):
            est.partial_fit(X[start:start + 100], y[start:start + 100], classes=[0, 1, 2, 3])
    assert list(est.classes_) == [0, 1, 2, 3]
    assert est.n_iter_ == 1 and len(est.loss_curve_) == 40  # n_iter_: of the last call
    assert est.loss_curve_[-1] < est.loss_curve_[0]
    assert est.score(X, y) > 0.9
    with pytest.raises(ValueError, match="not in"):
        est.partial_fit(X[:5], np.full(5, 7))


@needs_sklearn
@quiet_convergence
def test_warm_start_continues_from_the_fitted_weights(rng):
    X, y = rng.standard_normal((100, 4)), rng.integers(0, 3, 100)
    est = MLPClassifier(max_iter=5, warm_start=True, random_state=0, tol=0).fit(X, y)
    W = est.coefs_[0]
    est.fit(X, y)
    assert len(est.loss_curve_) == 10 and est.n_iter_ == 5
    assert est.loss_curve_[5] < est.loss_curve_[0]
    cold = MLPClassifier(max_iter=5, random_state=0, tol=0).fit(X, y)
    np.testing.assert_array_equal(cold.coefs_[0], W)  # a cold fit starts over
    with pytest.raises(ValueError, match="same classes"):
        est.fit(X, np.where(y == 2, 5, y))


# ---- model selection, pipelines, threads ----

def _digits(n=600):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:n], y[:n]


@needs_sklearn
@quiet_convergence
def test_pipeline_grid_search_with_two_jobs_and_cross_val_score():
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _digits()
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), max_iter=30,
                                                         learning_rate_init=0.01,
                                                         random_state=0))
    search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1]}, cv=3, n_jobs=2).fit(X, y)
    assert search.best_score_ > 0.85
    assert search.score(X, y) > 0.95
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.85


@needs_sklearn
@quiet_convergence
def test_parallel_workers_divide_the_cores_instead_of_oversubscribing():
    import joblib
    from sklearn.model_selection import cross_validate

    X, y = _digits(300)
    result = cross_validate(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0),
                            X, y, cv=2, n_jobs=2, return_estimator=True)
    # loky gives each of the 2 workers OMP_NUM_THREADS = cores // 2 (or the parent's value),
    # which fastopt's default honours.
    expected = int(os.environ.get("OMP_NUM_THREADS", max(joblib.cpu_count() // 2, 1)))
    assert [est.n_threads_ for est in result["estimator"]] == [expected, expected]


@needs_sklearn
@quiet_convergence
def test_n_threads_holds_only_during_fit_and_predict():
    X, y = _digits(200)
    before = fastopt.get_num_threads()
    est = MLPClassifier(max_iter=2, n_threads=1, random_state=0).fit(X, y)
    assert est.n_threads_ == 1
    assert fastopt.get_num_threads() == before


@needs_sklearn
@quiet_convergence
def test_feature_names_from_a_dataframe_are_kept_and_checked(rng):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(rng.standard_normal((50, 3)), columns=["age", "dose", "weight"])
    est = MLPRegressor(max_iter=5, random_state=0).fit(X, rng.standard_normal(50))
    assert list(est.feature_names_in_) == ["age", "dose", "weight"]
    assert est.n_features_in_ == 3
    with pytest.warns(UserWarning, match="feature names"):
        est.predict(X.to_numpy())


# ---- copies and pickles ----

def _globals_in_pickle(data):
    names, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            names.add(f"{strings[-2]}.{strings[-1]}")
        elif op.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
    return names


@needs_sklearn
@quiet_convergence
@pytest.mark.parametrize("batch_norm", [False, True])
def test_pickle_holds_plain_arrays_and_resumes_training_exactly(rng, batch_norm):
    X, y = rng.standard_normal((120, 6)), rng.integers(0, 3, 120)
    est = MLPClassifier(hidden_layer_sizes=(16,), batch_norm=batch_norm, dropout=0.1,
                        random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    data = pickle.dumps(est)
    fastopt_globals = {g for g in _globals_in_pickle(data) if g.startswith("fastopt")}
    assert fastopt_globals == {"fastopt.sklearn.MLPClassifier"}
    copy_ = pickle.loads(data)
    np.testing.assert_array_equal(copy_.predict_proba(X), est.predict_proba(X))
    for _ in range(3):  # optimizer state, counters and dropout keys travel too
        est.partial_fit(X, y)
        copy_.partial_fit(X, y)
    np.testing.assert_array_equal(copy_.predict_proba(X), est.predict_proba(X))
    deep = copy.deepcopy(est)
    np.testing.assert_array_equal(deep.predict_proba(X), est.predict_proba(X))
    deep.partial_fit(X, y)
    assert not np.array_equal(deep.coefs_[0], est.coefs_[0]), "deepcopy must not share the arena"


@needs_sklearn
@quiet_convergence
def test_clone_gives_an_unfitted_estimator_with_the_same_parameters(rng):
    from sklearn.base import clone

    est = MLPRegressor(hidden_layer_sizes=(7, 3), alpha=0.1, schedule=fastopt.schedules.StepDecay(5),
                       random_state=3, max_iter=3).fit(rng.standard_normal((20, 2)),
                                                       rng.standard_normal(20))
    twin = clone(est)
    assert not hasattr(twin, "n_iter_")
    assert twin.get_params()["hidden_layer_sizes"] == (7, 3)
    assert twin.get_params()["schedule"] is not est.schedule
    assert est.schedule.lr0 is None, "fit must not change the schedule it was given"


# ---- real data: at least scikit-learn's scores (slow: run in CI) ----

def _compare_settings(random_state):
    return dict(hidden_layer_sizes=(100,), alpha=1e-4, batch_size=64, learning_rate_init=1e-3,
                max_iter=200, random_state=random_state)


@needs_sklearn
@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["digits", "breast_cancer", "wine", "diabetes"])
def test_scores_at_least_as_well_as_scikit_learn_mlp(dataset):
    """5-fold cross-validated score averaged over 3 random states, same folds, same
    settings, standardized features; the regressor is compared with scikit-learn's on
    standardized targets (the scaling fastopt's MLPRegressor does internally). The margin,
    two rows of the data set (2/n of accuracy), is below one random state's spread."""
    import sklearn.datasets as data
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier as SkClassifier
    from sklearn.neural_network import MLPRegressor as SkRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = getattr(data, f"load_{dataset}")(return_X_y=True)
    ours_scores, theirs_scores = [], []
    for seed in (0, 1, 2):
        if dataset == "diabetes":
            ours = MLPRegressor(**_compare_settings(seed))
            theirs = TransformedTargetRegressor(SkRegressor(**_compare_settings(seed)),
                                                transformer=StandardScaler())
            cv = KFold(5, shuffle=True, random_state=0)
        else:
            ours = MLPClassifier(**_compare_settings(seed))
            theirs = SkClassifier(**_compare_settings(seed))
            cv = StratifiedKFold(5, shuffle=True, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours_scores.append(cross_val_score(make_pipeline(StandardScaler(), ours), X, y,
                                               cv=cv).mean())
            theirs_scores.append(cross_val_score(make_pipeline(StandardScaler(), theirs), X, y,
                                                 cv=cv).mean())
    ours_score, theirs_score = np.mean(ours_scores), np.mean(theirs_scores)
    assert ours_score >= theirs_score - 2 / len(y), (ours_scores, theirs_scores)
