"""Batch normalization kernels (PyTorch's BatchNorm1d): the per-layer entry points.

The maths, its formulas and the reasons for its pass structure are in ``_norm_core.pxd``,
which the compiled training step (step.pyx) runs too, fused there with the activation
and the dropout that follow a BatchNorm layer:

    μ = Σᵢ xᵢ / N,  σ² = Σᵢ (xᵢ − μ)² / N (biased, float64),  σ⁻¹ = 1 / √(σ² + eps)
    y = act(x·a + c) · m,  a = γ·σ⁻¹,  c = β − μ·a     (m: the dropout multiplier, 1 without)
    running_mean ← (1 − momentum)·running_mean + momentum·μ
    running_var  ← (1 − momentum)·running_var  + momentum·σ²·N/(N − 1)
    backward, g = dy·m·act'(z):  dβ = Σg,  dγ = Σg·x̂,  dx = (γσ⁻¹/N)·(N·g − dβ − x̂·dγ)

Results are bitwise identical for any thread count (fixed row blocks merged in order).
The caller (fastopt.layers.BatchNorm, the step plan) sizes the workspaces; nothing here
raises: ``partial`` is (n_row_blocks(N), 4, d) float64, ``coef`` (6, d), ``bits``
(N, ceil(d/32)) words.
"""

from cython cimport floating
from libc.stdint cimport uint32_t, uint64_t

from ._philox cimport dropout_key, make_key
from ._norm_core cimport _n_blocks, _bn_forward_train, _bn_forward_eval, _bn_backward
from ._activations cimport ELU, IDENTITY, LEAKY_RELU, RELU

# The activations the fused kernels apply (the same codes as dense.ACTIVATIONS).
FUSED_ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU,
                     "elu": ELU}


def n_row_blocks(Py_ssize_t N):
    """Row blocks of a batch of N: the first dimension of the ``partial`` workspace
    (n_row_blocks(N), 4, d) float64."""
    return _n_blocks(N)


def forward_train(const floating[:, ::1] X, const floating[::1] gamma,
                  const floating[::1] beta, floating[:, ::1] Y,
                  double[::1] mean, double[::1] invstd,
                  floating[::1] running_mean, floating[::1] running_var,
                  double[:, :, ::1] partial, floating[:, ::1] coef,
                  double momentum, double eps, int act, double alpha,
                  uint32_t[:, ::1] bits, uint64_t seed, uint64_t step, uint32_t layer,
                  uint32_t threshold, double scale, bint dropout, *, int n_threads):
    """Training forward: Y, the batch ``mean`` and ``invstd`` (float64, kept for
    backward), the running statistics updated in place, and with ``dropout`` the mask
    bits (N, ⌈d/32⌉) exactly as dropout.forward stores them.

    Workspace: ``partial`` (n_row_blocks(N), 4, d) float64, ``coef`` (6, d): rows 0
    and 1 receive a and c. N ≥ 2 (the caller checks).
    """
    cdef Py_ssize_t N = X.shape[0], d = X.shape[1]
    cdef dropout_key key = make_key(seed, step, layer, threshold)
    if N == 0 or d == 0:
        return
    with nogil:
        _bn_forward_train(&X[0, 0], &gamma[0], &beta[0], &Y[0, 0], &mean[0], &invstd[0],
                          &running_mean[0], &running_var[0], &partial[0, 0, 0], &coef[0, 0],
                          momentum, eps, act, <floating>alpha, &bits[0, 0], bits.shape[1],
                          &key, <floating>scale, dropout, N, d, n_threads)


def forward_eval(const floating[:, ::1] X, const floating[::1] gamma,
                 const floating[::1] beta, const floating[::1] running_mean,
                 const floating[::1] running_var, floating[:, ::1] coef,
                 floating[:, ::1] Y, double eps, int act, double alpha, *, int n_threads):
    """Eval forward: Y = act(X·a + c) with a = γ/√(running_var + eps),
    c = β − running_mean·a (per feature, in float64, into coef rows 0 and 1)."""
    if X.shape[0] == 0 or X.shape[1] == 0:
        return
    with nogil:
        _bn_forward_eval(&X[0, 0], &gamma[0], &beta[0], &running_mean[0], &running_var[0],
                         &coef[0, 0], &Y[0, 0], eps, act, <floating>alpha, X.shape[0],
                         X.shape[1], n_threads)


def backward(const floating[:, ::1] X, const floating[:, ::1] dY,
             const floating[::1] gamma, const double[::1] mean,
             const double[::1] invstd, double[:, :, ::1] partial,
             floating[:, ::1] coef, floating[:, ::1] dX, floating[::1] dgamma,
             floating[::1] dbeta, int act, double alpha, const uint32_t[:, ::1] bits,
             double scale, bint dropout, bint need_dx, *, int n_threads):
    """Training backward from the forward's ``mean``/``invstd``, its a and c (``coef``
    rows 0 and 1, as forward_train left them) and X: dgamma, dbeta, and dX when
    ``need_dx``. With ``dropout`` the mask comes from the forward's bits. Workspace:
    ``partial`` as in forward, ``coef`` rows 2..5 (so coef is (6, d)). dX (also the
    scratch for g) may not alias dY or X."""
    cdef Py_ssize_t N = X.shape[0], d = X.shape[1]
    if N == 0 or d == 0:
        return
    with nogil:
        _bn_backward(&X[0, 0], &dY[0, 0], &gamma[0], &mean[0], &invstd[0],
                     &partial[0, 0, 0], &coef[0, 0], &dX[0, 0], &dgamma[0], &dbeta[0], act,
                     <floating>alpha, &bits[0, 0], bits.shape[1], <floating>scale, dropout,
                     need_dx, N, d, n_threads)
