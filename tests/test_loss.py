"""Loss kernels (fastopt._kernels.loss) and the Loss classes against float64 references."""

import numpy as np
import pytest
from conftest import tol
from reference import bce, mse, softmax_xent, softmax_xent_proba

from fastopt import losses
from fastopt._kernels import loss as kernels
from fastopt.threads import get_num_threads

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 2), (1, 7), (5, 17), (33, 10), (129, 257)]


def buffers(Z):
    return np.empty_like(Z), np.empty(Z.shape[0], np.float64)


def loss_tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("label_dtype", [np.int64, np.int32])
def test_softmax_cross_entropy_matches_reference(rng, dtype, shape, smoothing, label_dtype):
    N, K = shape
    Z = (rng.standard_normal(shape) * 3).astype(dtype)
    y = rng.integers(0, K, N).astype(label_dtype)
    w = np.ones(N, dtype)
    dZ, rows = buffers(Z)
    value = kernels.softmax_cross_entropy(Z, y, w, 1.0 / N, smoothing, dZ, rows,
                                          n_threads=get_num_threads())
    ref_value, ref_grad, ref_rows = softmax_xent(Z, y, smoothing)
    np.testing.assert_allclose(value, ref_value, **loss_tol(dtype))
    np.testing.assert_allclose(rows, ref_rows, **loss_tol(dtype))
    np.testing.assert_allclose(dZ, ref_grad, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_weighted_losses_use_weighted_mean(rng, dtype):
    N, K = 17, 5
    Z = rng.standard_normal((N, K)).astype(dtype)
    y = rng.integers(0, K, N)
    w = rng.uniform(0.1, 3.0, N).astype(dtype)
    dZ, rows = buffers(Z)
    value = kernels.softmax_cross_entropy(Z, y, w, 1.0 / w.astype(np.float64).sum(), 0.0, dZ, rows,
                                          n_threads=get_num_threads())
    ref_value, ref_grad, _ = softmax_xent(Z, y, 0.0, w)
    np.testing.assert_allclose(value, ref_value, **loss_tol(dtype))
    np.testing.assert_allclose(dZ, ref_grad, **tol(dtype))
    Y = rng.uniform(size=(N, K)).astype(dtype)
    value = kernels.dense_target_loss(kernels.FUSED_KINDS["mse"], Z, Y, w,
                                      1.0 / w.astype(np.float64).sum(), dZ, rows,
                                      n_threads=get_num_threads())
    ref_value, ref_grad, _ = mse(Z, Y, w)
    np.testing.assert_allclose(value, ref_value, **loss_tol(dtype))
    np.testing.assert_allclose(dZ, ref_grad, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_cross_entropy_with_probability_targets(rng, dtype, shape):
    Z = rng.standard_normal(shape).astype(dtype)
    P = rng.uniform(size=shape)
    P = (P / P.sum(axis=1, keepdims=True)).astype(dtype)
    w = np.ones(shape[0], dtype)
    dZ, rows = buffers(Z)
    value = kernels.dense_target_loss(kernels.FUSED_KINDS["softmax_cross_entropy_proba"], Z, P, w,
                                      1.0 / shape[0], dZ, rows, n_threads=get_num_threads())
    ref_value, ref_grad, _ = softmax_xent_proba(Z, P)
    np.testing.assert_allclose(value, ref_value, **loss_tol(dtype))
    np.testing.assert_allclose(dZ, ref_grad, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (33, 3), (130, 17)])
def test_binary_cross_entropy_matches_reference(rng, dtype, shape):
    Z = (rng.standard_normal(shape) * 4).astype(dtype)
    Y = rng.uniform(size=shape).round().astype(dtype)
    w = np.ones(shape[0], dtype)
    dZ, rows = buffers(Z)
    value = kernels.dense_target_loss(kernels.FUSED_KINDS["binary_cross_entropy"], Z, Y, w,
                                      1.0 / shape[0], dZ, rows, n_threads=get_num_threads())
    ref_value, ref_grad, ref_rows = bce(Z, Y)
    np.testing.assert_allclose(value, ref_value, **loss_tol(dtype))
    np.testing.assert_allclose(rows, ref_rows, **loss_tol(dtype))
    np.testing.assert_allclose(dZ, ref_grad, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (129, 17)])
def test_mse_matches_reference(rng, dtype, shape):
    Yhat = rng.standard_normal(shape).astype(dtype)
    Y = rng.standard_normal(shape).astype(dtype)
    w = np.ones(shape[0], dtype)
    dY, rows = buffers(Yhat)
    value = kernels.dense_target_loss(kernels.FUSED_KINDS["mse"], Yhat, Y, w, 1.0 / shape[0], dY,
                                      rows, n_threads=get_num_threads())
    ref_value, ref_grad, _ = mse(Yhat, Y)
    np.testing.assert_allclose(value, ref_value, **loss_tol(dtype))
    np.testing.assert_allclose(dY, ref_grad, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_are_stable_for_logits_of_1e4(dtype):
    Z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype)
    y = np.array([1, 2, 0])
    w = np.ones(3, dtype)
    dZ, rows = buffers(Z)
    value = kernels.softmax_cross_entropy(Z, y, w, 1 / 3, 0.0, dZ, rows,
                                          n_threads=get_num_threads())
    assert np.isfinite(value) and np.isfinite(dZ).all()
    ref_value, ref_grad, _ = softmax_xent(Z, y)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(dZ, ref_grad, atol=1e-7)
    Y = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype)
    value = kernels.dense_target_loss(kernels.FUSED_KINDS["binary_cross_entropy"], Z, Y, w, 1 / 3,
                                      dZ, rows, n_threads=get_num_threads())
    ref_value, ref_grad, _ = bce(Z, Y)
    assert np.isfinite(value) and np.isfinite(dZ).all()
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(dZ, ref_grad, atol=1e-7)


@pytest.mark.parametrize("name,make_target", [
    ("softmax_cross_entropy", lambda rng, n, k: rng.integers(0, k, n)),
    ("binary_cross_entropy", lambda rng, n, k: rng.uniform(size=(n, k))),
    ("mse", lambda rng, n, k: rng.standard_normal((n, k))),
])
def test_loss_gradient_matches_central_differences(rng, name, make_target):
    n, k = 6, 4
    loss = losses.get_loss(name)
    Z = rng.standard_normal((n, k))
    T = loss.prepare_targets(make_target(rng, n, k), k, np.float64)
    _, grad = loss(Z, T)
    grad = grad.copy()
    numeric = np.empty_like(Z)
    h = 1e-6
    for idx in np.ndindex(Z.shape):
        Zp, Zm = Z.copy(), Z.copy()
        Zp[idx] += h
        Zm[idx] -= h
        numeric[idx] = (loss(Zp, T)[0] - loss(Zm, T)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_target_validation_names_the_problem():
    ce = losses.SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match=r"class labels must be in \[0, 3\)"):
        ce.prepare_targets(np.array([0, 1, 3]), 3, np.float32)
    with pytest.raises(ValueError, match="must be integers"):
        ce.prepare_targets(np.array([0.5, 1.0]), 3, np.float32)
    with pytest.raises(ValueError, match="at least 2 outputs"):
        ce.prepare_targets(np.array([0, 1]), 1, np.float32)
    with pytest.raises(TypeError, match="numeric"):
        ce.prepare_targets(np.array(["a", "b"]), 3, np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        losses.BinaryCrossEntropy().prepare_targets(np.array([0.0, 2.0]), 1, np.float32)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        losses.MeanSquaredError().prepare_targets(np.zeros((4, 3)), 2, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        losses.MeanSquaredError().prepare_targets(np.array([np.nan, 1.0]), 1, np.float32)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get_loss("hinge")
