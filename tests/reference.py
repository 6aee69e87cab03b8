"""Independent float64 references written from CONTRACT.md, sharing no code with fastopt."""

import math

import numpy as np
from scipy.special import erf, expit, logsumexp, softmax

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def act(name, z, alpha=None):
    z = np.asarray(z, dtype=np.float64)
    if name == "identity":
        return z.copy()
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        a = 0.01 if alpha is None else alpha
        return np.where(z > 0, z, a * z)
    if name == "elu":
        a = 1.0 if alpha is None else alpha
        return np.where(z > 0, z, a * np.expm1(np.minimum(z, 0)))
    if name == "gelu":
        return 0.5 * z * (1 + erf(z / math.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * z * (1 + np.tanh(SQRT_2_OVER_PI * (z + 0.044715 * z ** 3)))
    if name == "sigmoid":
        return expit(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "softplus":
        return np.logaddexp(0.0, z)
    raise KeyError(name)


def act_grad(name, z, alpha=None):
    z = np.asarray(z, dtype=np.float64)
    if name == "identity":
        return np.ones_like(z)
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, 0.01 if alpha is None else alpha)
    if name == "elu":
        a = 1.0 if alpha is None else alpha
        return np.where(z > 0, 1.0, a * np.exp(np.minimum(z, 0)))
    if name == "gelu":
        return 0.5 * (1 + erf(z / math.sqrt(2))) + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    if name == "gelu_tanh":
        u = SQRT_2_OVER_PI * (z + 0.044715 * z ** 3)
        t = np.tanh(u)
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * z * z)
    if name == "sigmoid":
        s = expit(z)
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(z) ** 2
    if name == "softplus":
        return expit(z)
    raise KeyError(name)


def softmax_xent(z, y, smoothing=0.0, w=None):
    z = np.asarray(z, np.float64)
    n, k = z.shape
    target = np.full((n, k), smoothing / k)
    target[np.arange(n), y] += 1 - smoothing
    return softmax_xent_proba(z, target, w)


def softmax_xent_proba(z, p, w=None):
    z = np.asarray(z, np.float64)
    p = np.asarray(p, np.float64)
    n = z.shape[0]
    w = np.ones(n) if w is None else np.asarray(w, np.float64)
    rows = -(p * (z - logsumexp(z, axis=1, keepdims=True))).sum(axis=1)
    scale = 1.0 / w.sum()
    grad = (softmax(z, axis=1) * p.sum(axis=1, keepdims=True) - p) * (w * scale)[:, None]
    return float((w * rows).sum() * scale), grad, rows


def bce(z, y, w=None):
    z = np.asarray(z, np.float64)
    y = np.asarray(y, np.float64)
    n, k = z.shape
    w = np.ones(n) if w is None else np.asarray(w, np.float64)
    elem = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    rows = elem.mean(axis=1)
    scale = 1.0 / w.sum()
    grad = (expit(z) - y) / k * (w * scale)[:, None]
    return float((w * rows).sum() * scale), grad, rows


def mse(yhat, y, w=None):
    yhat = np.asarray(yhat, np.float64)
    y = np.asarray(y, np.float64)
    n, k = yhat.shape
    w = np.ones(n) if w is None else np.asarray(w, np.float64)
    rows = ((yhat - y) ** 2).mean(axis=1)
    scale = 1.0 / w.sum()
    grad = 2 * (yhat - y) / k * (w * scale)[:, None]
    return float((w * rows).sum() * scale), grad, rows
