"""Dense kernels (fastopt._kernels.dense) against float64 numpy references."""

import numpy as np
import pytest
from conftest import tol
from reference import act, act_grad

import fastopt
from fastopt._kernels import dense
from fastopt.threads import blas_single_thread, get_num_threads

ACTS = ["identity", "relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "sigmoid", "tanh",
        "softplus"]
SHAPES = [(1, 1, 1), (1, 7, 17), (3, 17, 1), (5, 1, 33), (64, 33, 7), (65, 7, 257), (130, 17, 33)]
DTYPES = [np.float32, np.float64]
ALPHA = {"leaky_relu": 0.01, "elu": 1.0}


def run_forward(X, W, b, name, has_bias=True):
    code = dense.ACTIVATIONS[name]
    N, out = X.shape[0], W.shape[0]
    A = np.empty((N, out), X.dtype)
    Z = np.empty_like(A) if code in dense.NEEDS_PREACTIVATION else A
    with blas_single_thread:
        dense.forward(X, W, b, Z, A, code, ALPHA.get(name, 0.0), has_bias,
                      n_threads=get_num_threads())
    return Z, A


def run_backward(dA, X, W, A, Z, name, has_bias=True, need_dx=True):
    code = dense.ACTIVATIONS[name]
    N, out = dA.shape
    dZ = np.empty_like(dA)
    dW = np.full_like(W, np.nan)
    db = np.full(out, np.nan, X.dtype)
    dX = np.full_like(X, np.nan)
    with blas_single_thread:
        dense.backward(dA, X, W, A, Z, dZ, dW, db, dX, code, ALPHA.get(name, 0.0),
                       has_bias, need_dx, n_threads=get_num_threads())
    return dZ, dW, db, dX


def draw(rng, dtype, N, n_in, n_out, scale=1.0):
    X = (rng.standard_normal((N, n_in)) * scale).astype(dtype)
    W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    return X, W, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_reference(rng, dtype, name, shape):
    X, W, b = draw(rng, dtype, *shape)
    _, A = run_forward(X, W, b, name)
    Zref = X.astype(np.float64) @ W.astype(np.float64).T + b
    np.testing.assert_allclose(A, act(name, Zref), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_reference(rng, dtype, name, shape):
    X, W, b = draw(rng, dtype, *shape)
    Z, A = run_forward(X, W, b, name)
    dA = rng.standard_normal(A.shape).astype(dtype)
    dZ, dW, db, dX = run_backward(dA, X, W, A, Z, name)
    X64, W64 = X.astype(np.float64), W.astype(np.float64)
    Zref = X64 @ W64.T + b
    dZref = dA * act_grad(name, Zref)
    t = tol(dtype)
    if dtype == np.float32:  # sums over the batch: error grows with N
        t = dict(rtol=1e-4, atol=1e-5 * max(1, shape[0] ** 0.5))
    np.testing.assert_allclose(dZ, dZref, **t)
    np.testing.assert_allclose(db, dZref.sum(axis=0), **t)
    np.testing.assert_allclose(dW, dZref.T @ X64, **t)
    np.testing.assert_allclose(dX, dZref @ W64, **t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_bias_and_no_input_grad(rng, dtype):
    X, W, b = draw(rng, dtype, 9, 7, 5)
    zero = np.zeros(1, dtype)
    Z, A = run_forward(X, W, zero, "tanh", has_bias=False)
    np.testing.assert_allclose(A, np.tanh(X.astype(np.float64) @ W.T.astype(np.float64)),
                               **tol(dtype))
    dA = np.ones_like(A)
    dZ = np.empty_like(dA)
    dW = np.empty_like(W)
    dX = np.full_like(X, 7.0)
    dense.backward(dA, X, W, A, Z, dZ, dW, zero.copy(), dX, dense.ACTIVATIONS["tanh"], 0.0,
                   False, False, n_threads=get_num_threads())
    assert np.all(dX == 7.0), "dX must not be written when need_dx is False"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name",
                         ["sigmoid", "tanh", "softplus", "elu", "gelu", "gelu_tanh", "leaky_relu"])
def test_activations_stay_finite_for_huge_inputs(dtype, name):
    X = np.array([[1e4, -1e4, 80.0, -80.0, 0.0]], dtype).T.copy()  # (5, 1)
    W = np.ones((1, 1), dtype)
    b = np.zeros(1, dtype)
    Z, A = run_forward(X, W, b, name)
    assert np.isfinite(A).all()
    np.testing.assert_allclose(A[:, 0], act(name, X[:, 0].astype(np.float64)), rtol=1e-6,
                               atol=1e-30)
    dZ, dW, db, dX = run_backward(np.ones_like(A), X, W, A, Z, name)
    assert np.isfinite(dZ).all()
    np.testing.assert_allclose(dZ[:, 0], act_grad(name, X[:, 0].astype(np.float64)), rtol=1e-5,
                               atol=1e-30)


@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_results_are_bitwise_identical_for_any_thread_count(rng, name):
    # Big enough that every kernel really splits its work across threads.
    X, W, b = draw(rng, np.float32, 700, 300, 257)
    results = []
    for n in (1, 2, 3):
        with fastopt.threads(n):
            Z, A = run_forward(X, W, b, name)
            dA = np.cos(A)
            grads = run_backward(dA, X, W, A, Z, name)
        results.append((A,) + grads)
    for other in results[1:]:
        for x, y in zip(results[0], other):
            assert np.array_equal(x, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "gelu", "sigmoid"])
def test_standalone_activation_kernels(rng, dtype, name):
    Z = rng.standard_normal((13, 33)).astype(dtype)
    A = np.empty_like(Z)
    code = dense.ACTIVATIONS[name]
    dense.activation_forward(Z, A, code, ALPHA.get(name, 0.0), n_threads=get_num_threads())
    np.testing.assert_allclose(A, act(name, Z), **tol(dtype))
    dA = rng.standard_normal(Z.shape).astype(dtype)
    dZ = np.empty_like(Z)
    dense.activation_backward(dA, A, Z, dZ, code, ALPHA.get(name, 0.0),
                              n_threads=get_num_threads())
    np.testing.assert_allclose(dZ, dA * act_grad(name, Z), **tol(dtype))
