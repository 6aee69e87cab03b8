"""Independent float64 / integer references for the tests, sharing no code with fastopt:
activations, losses, batch normalization (the formulas of PyTorch's BatchNorm1d) and
Philox4x32-10 dropout masks (Random123's definition)."""

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


# ---- Philox4x32-10 masks and batch normalization ----

_MASK = np.uint64(0xFFFFFFFF)
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85


def philox4x32_10(ctr, key):
    """Philox4x32-10 on rows of ``ctr`` (n, 4) with ``key`` (n, 2) or (2,): uint32 (n, 4)."""
    ctr = np.asarray(ctr, np.uint64).reshape(-1, 4)
    key = np.broadcast_to(np.asarray(key, np.uint64), (ctr.shape[0], 2))
    x0, x1, x2, x3 = (ctr[:, i].copy() for i in range(4))
    k0, k1 = key[:, 0].copy(), key[:, 1].copy()
    for _ in range(10):
        p0 = _M0 * x0
        p1 = _M1 * x2
        x0, x1, x2, x3 = ((p1 >> np.uint64(32)) ^ x1 ^ k0) & _MASK, p1 & _MASK, \
            ((p0 >> np.uint64(32)) ^ x3 ^ k1) & _MASK, p0 & _MASK
        k0 = (k0 + np.uint64(_W0)) & _MASK
        k1 = (k1 + np.uint64(_W1)) & _MASK
    return np.stack([x0, x1, x2, x3], axis=1).astype(np.uint32)


def dropout_keep(seed, step, layer, shape, rate):
    """The keep mask fastopt promises: element e = i·d + j is kept when word e mod 4 of
    Philox((e // 4, layer, step mod 2^32, step // 2^32), (seed mod 2^32, seed // 2^32))
    is below floor((1 − rate)·2^32)."""
    n = int(np.prod(shape))
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    ctr = np.zeros((blocks.size, 4), np.uint64)
    ctr[:, 0] = blocks & _MASK
    ctr[:, 1] = layer
    ctr[:, 2] = step & 0xFFFFFFFF
    ctr[:, 3] = step >> 32
    key = np.array([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], np.uint64)
    words = philox4x32_10(ctr, key).reshape(-1)[:n]
    threshold = int(np.floor((1.0 - rate) * 2.0 ** 32))
    return (words.astype(np.uint64) < threshold).reshape(shape)


def bn_forward(x, gamma, beta, eps):
    """Training forward in float64: y, batch mean, biased var, x̂."""
    x = x.astype(np.float64)
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    xhat = (x - mu) / np.sqrt(var + eps)
    return gamma * xhat + beta, mu, var, xhat


def bn_backward(dy, xhat, var, gamma, eps):
    """The one-pass batch-norm backward: dx = γσ⁻¹/N·(N·dy − Σdy − x̂·Σdy·x̂), dγ, dβ."""
    n = dy.shape[0]
    dbeta = dy.sum(axis=0)
    dgamma = (dy * xhat).sum(axis=0)
    dx = gamma / (n * np.sqrt(var + eps)) * (n * dy - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta
