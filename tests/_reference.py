"""Independent float64 / integer references shared by the norm and dropout tests.

Nothing here imports fastopt: the expectations are computed from CONTRACT.md's
formulas and Random123's definition of Philox4x32-10.
"""

import numpy as np

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
    e = np.arange(n, dtype=np.uint64)
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
    """CONTRACT.md's one-pass formula: dx, dγ, dβ."""
    n = dy.shape[0]
    dbeta = dy.sum(axis=0)
    dgamma = (dy * xhat).sum(axis=0)
    dx = gamma / (n * np.sqrt(var + eps)) * (n * dy - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta
