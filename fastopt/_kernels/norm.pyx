"""Batch normalization (PyTorch's BatchNorm1d), optionally fused with the activation
and the dropout that follow it.

Training forward, per feature j over the N rows of X:
    μ = Σᵢ xᵢ / N                      (float64 accumulation)
    σ² = Σᵢ (xᵢ − μ)² / N              (biased; second pass over the data, float64)
    σ⁻¹ = 1 / √(σ² + eps)
    z = x·a + c,  a = γ·σ⁻¹,  c = β − μ·a       (x̂ = (x − μ)·σ⁻¹,  z = γ·x̂ + β)
    y = act(z) · m                     (m: dropout multiplier, 1/(1 − q) or 0; see
                                        dropout.pyx; m = 1 without dropout)
    running_mean ← (1 − momentum)·running_mean + momentum·μ
    running_var  ← (1 − momentum)·running_var  + momentum·σ²·N/(N − 1)
Eval forward: the same z and act with μ, σ² from the running statistics (dropout is
the identity).
Backward (g = ∂L/∂z = dy · m · act'(z), z recomputed from x):
    dβ = Σᵢ g,   dγ = Σᵢ g·x̂,   dx = (γ·σ⁻¹/N) · (N·g − dβ − x̂·dγ)

Reductions run over column stripes: one thread owns a stripe of features for all
rows, so every per-feature sum runs over rows in row order: bitwise identical for any
thread count and any stripe width (no partial sums to merge). The stripe width is
chosen so a stripe of X (N × width) stays in L2 between the passes: X is read from
memory once in forward (sum, centred squares, output pass) and X and dY once in
backward (reduction pass, dx pass).
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdint cimport uint16_t, uint32_t, uint64_t

from ._math cimport _expm1
from ._parallel cimport threads_for
from ._philox cimport dropout_key, make_key, expand_mask, dropout_chunk_bits

# Activation codes (the same numbers as dense.ACTIVATIONS); the ones the fused
# kernels apply. Others run as a separate Activation layer.
cdef enum:
    IDENTITY = 0
    RELU = 1
    LEAKY_RELU = 2
    ELU = 3

FUSED_ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU,
                     "elu": ELU}

cdef enum:
    # Elements under which the kernels stay on one thread.
    NORM_PER_THREAD = 32768
    # Widest stripe (columns); also the largest dropout chunk (philox.h).
    MAX_STRIPE = 64
    # Bytes of one stripe of X that should stay in L2 (512 KiB here) between passes,
    # leaving room for dY / dX in backward.
    STRIPE_BYTES = 196608


cdef inline Py_ssize_t _stripe_width(Py_ssize_t N, Py_ssize_t itemsize) noexcept nogil:
    # A multiple of 16 (dropout bits are 16-bit words per row); never depends on
    # the thread count (and the results do not depend on it at all).
    cdef Py_ssize_t w = MAX_STRIPE
    while w > 16 and N * w * itemsize > STRIPE_BYTES:
        w = w // 2
    return w


# ---- activation on a row chunk: one loop per case so each vectorizes ----

cdef inline void _affine_act(const floating* x, const floating* a, const floating* c,
                             floating* y, Py_ssize_t n, int act,
                             floating alpha) noexcept nogil:
    """y[j] = act(x[j]·a[j] + c[j])."""
    cdef Py_ssize_t j
    cdef floating v
    if act == RELU:
        for j in range(n):
            v = x[j] * a[j] + c[j]
            y[j] = v if v > 0 else 0
    elif act == LEAKY_RELU:
        for j in range(n):
            v = x[j] * a[j] + c[j]
            y[j] = v if v > 0 else alpha * v
    elif act == ELU:
        for j in range(n):
            v = x[j] * a[j] + c[j]
            y[j] = v if v > 0 else alpha * _expm1(v)
    else:
        for j in range(n):
            y[j] = x[j] * a[j] + c[j]


cdef inline void _act_grad(const floating* x, const floating* a, const floating* c,
                           const floating* dy, floating* g, Py_ssize_t n, int act,
                           floating alpha) noexcept nogil:
    """g[j] = dy[j]·act'(z), z = x[j]·a[j] + c[j] recomputed exactly as forward did."""
    cdef Py_ssize_t j
    cdef floating v
    if act == RELU:
        for j in range(n):
            v = x[j] * a[j] + c[j]
            g[j] = dy[j] if v > 0 else 0
    elif act == LEAKY_RELU:
        for j in range(n):
            v = x[j] * a[j] + c[j]
            g[j] = dy[j] if v > 0 else alpha * dy[j]
    elif act == ELU:
        # act'(z) = α·eᶻ = α·expm1(z) + α for z ≤ 0
        for j in range(n):
            v = x[j] * a[j] + c[j]
            g[j] = dy[j] if v > 0 else dy[j] * (alpha * _expm1(v) + alpha)
    else:
        for j in range(n):
            g[j] = dy[j]


# ---- training forward: one stripe of features ----

cdef void _forward_stripe(const floating* X, const floating* gamma, const floating* beta,
                          floating* Y, double* mean, double* invstd,
                          floating* run_mean, floating* run_var,
                          Py_ssize_t N, Py_ssize_t d, Py_ssize_t c0, Py_ssize_t c1,
                          double momentum, double eps, int act, floating alpha,
                          uint16_t* bits, Py_ssize_t wpr, const dropout_key* key,
                          floating scale, bint dropout) noexcept nogil:
    cdef double s[MAX_STRIPE]
    cdef double q[MAX_STRIPE]
    cdef floating a[MAX_STRIPE]
    cdef floating c[MAX_STRIPE]
    cdef floating m[MAX_STRIPE]
    cdef Py_ssize_t w = c1 - c0, i, j
    cdef const floating* xr
    cdef floating* yr
    cdef double mu, var, inv, scale_n = 1.0 / N
    for j in range(w):
        s[j] = 0
        q[j] = 0
    for i in range(N):
        xr = X + i * d + c0
        for j in range(w):
            s[j] += <double>xr[j]
    for j in range(w):
        s[j] = s[j] * scale_n
    # Centred second pass (the stripe is still in L2): no cancellation when |μ| ≫ σ.
    for i in range(N):
        xr = X + i * d + c0
        for j in range(w):
            q[j] += (<double>xr[j] - s[j]) * (<double>xr[j] - s[j])
    for j in range(w):
        mu = s[j]
        var = q[j] * scale_n
        inv = 1.0 / sqrt(var + eps)
        mean[c0 + j] = mu
        invstd[c0 + j] = inv
        a[j] = <floating>(gamma[c0 + j] * inv)
        c[j] = <floating>(beta[c0 + j] - mu * (gamma[c0 + j] * inv))
        run_mean[c0 + j] = <floating>((1 - momentum) * run_mean[c0 + j] + momentum * mu)
        run_var[c0 + j] = <floating>((1 - momentum) * run_var[c0 + j]
                                     + momentum * var * N / (N - 1))
    for i in range(N):
        xr = X + i * d + c0
        yr = Y + i * d + c0
        _affine_act(xr, a, c, yr, w, act, alpha)
        if dropout:
            dropout_chunk_bits(bits + i * wpr + c0 // 16, <uint64_t>(i * d + c0), <int>w, key)
            expand_mask(m, bits + i * wpr + c0 // 16, <int>w, scale)
            for j in range(w):
                yr[j] = yr[j] * m[j]


def forward_train(const floating[:, ::1] X, const floating[::1] gamma,
                  const floating[::1] beta, floating[:, ::1] Y,
                  double[::1] mean, double[::1] invstd,
                  floating[::1] running_mean, floating[::1] running_var,
                  double momentum, double eps, int act, double alpha,
                  uint16_t[:, ::1] bits, uint64_t seed, uint64_t step, uint32_t layer,
                  uint32_t threshold, double scale, bint dropout, int stripe=0):
    """Training forward (module docstring): Y, the batch ``mean`` and ``invstd``
    (float64, kept for backward), the running statistics updated in place, and with
    ``dropout`` the mask bits (N, ⌈d/16⌉) as dropout.forward would store them.

    N ≥ 2 (the caller checks). ``stripe`` (a multiple of 16, ≤ 64) overrides the
    automatic stripe width; results do not depend on it.
    """
    cdef Py_ssize_t N = X.shape[0], d = X.shape[1]
    cdef Py_ssize_t w = stripe if stripe > 0 else _stripe_width(N, sizeof(floating))
    cdef Py_ssize_t n_stripes = (d + w - 1) // w, s
    cdef int nt = threads_for(N * d, NORM_PER_THREAD)
    cdef dropout_key key = make_key(seed, step, layer, threshold)
    cdef Py_ssize_t wpr = bits.shape[1]
    cdef uint16_t* bits_ptr = &bits[0, 0]
    cdef floating alpha_f = <floating>alpha, scale_f = <floating>scale
    if nt > n_stripes:
        nt = <int>n_stripes
    with nogil:
        if nt <= 1:
            for s in range(n_stripes):
                _forward_stripe(&X[0, 0], &gamma[0], &beta[0], &Y[0, 0], &mean[0],
                                &invstd[0], &running_mean[0], &running_var[0], N, d,
                                s * w, min(s * w + w, d), momentum, eps, act, alpha_f,
                                bits_ptr, wpr, &key, scale_f, dropout)
        else:
            for s in prange(n_stripes, num_threads=nt, schedule='static'):
                _forward_stripe(&X[0, 0], &gamma[0], &beta[0], &Y[0, 0], &mean[0],
                                &invstd[0], &running_mean[0], &running_var[0], N, d,
                                s * w, min(s * w + w, d), momentum, eps, act, alpha_f,
                                bits_ptr, wpr, &key, scale_f, dropout)


def forward_eval(const floating[:, ::1] X, const floating[::1] gamma,
                 const floating[::1] beta, const floating[::1] running_mean,
                 const floating[::1] running_var, floating[::1] coef_a,
                 floating[::1] coef_c, floating[:, ::1] Y, double eps, int act,
                 double alpha):
    """Eval forward: Y = act(X·a + c) with a = γ/√(running_var + eps),
    c = β − running_mean·a (per feature, computed in float64 into coef_a, coef_c);
    one pass over X."""
    cdef Py_ssize_t N = X.shape[0], d = X.shape[1], i, j
    cdef int nt = threads_for(N * d, NORM_PER_THREAD)
    cdef floating alpha_f = <floating>alpha
    cdef double inv
    with nogil:
        for j in range(d):
            inv = 1.0 / sqrt(<double>running_var[j] + eps)
            coef_a[j] = <floating>(gamma[j] * inv)
            coef_c[j] = <floating>(beta[j] - running_mean[j] * (gamma[j] * inv))
        for i in prange(N, num_threads=nt, schedule='static'):
            _affine_act(&X[i, 0], &coef_a[0], &coef_c[0], &Y[i, 0], d, act, alpha_f)


# ---- backward: one stripe of features ----

cdef void _backward_stripe(const floating* X, const floating* dY, const floating* gamma,
                           const floating* beta, const double* mean,
                           const double* invstd, floating* dX, floating* dgamma,
                           floating* dbeta, Py_ssize_t N, Py_ssize_t d, Py_ssize_t c0,
                           Py_ssize_t c1, int act, floating alpha,
                           const uint16_t* bits, Py_ssize_t wpr, floating scale,
                           bint dropout, bint need_dx) noexcept nogil:
    cdef double sg[MAX_STRIPE]
    cdef double sgx[MAX_STRIPE]
    cdef floating a[MAX_STRIPE]
    cdef floating c[MAX_STRIPE]
    cdef floating mu[MAX_STRIPE]
    cdef floating inv[MAX_STRIPE]
    cdef floating m[MAX_STRIPE]
    cdef floating t[MAX_STRIPE]
    cdef floating ka[MAX_STRIPE]
    cdef floating kb[MAX_STRIPE]
    cdef floating kc[MAX_STRIPE]
    cdef Py_ssize_t w = c1 - c0, i, j
    cdef const floating* xr
    cdef floating* gr
    cdef floating xh
    cdef double k
    for j in range(w):
        sg[j] = 0
        sgx[j] = 0
        a[j] = <floating>(gamma[c0 + j] * invstd[c0 + j])
        c[j] = <floating>(beta[c0 + j] - mean[c0 + j] * (gamma[c0 + j] * invstd[c0 + j]))
        mu[j] = <floating>mean[c0 + j]
        inv[j] = <floating>invstd[c0 + j]
    # Pass 1: g = dy·m·act'(z) into dX (the stripe stays in L2), and the two sums.
    for i in range(N):
        xr = X + i * d + c0
        gr = dX + i * d + c0
        if dropout:
            expand_mask(m, bits + i * wpr + c0 // 16, <int>w, scale)
            for j in range(w):
                t[j] = dY[i * d + c0 + j] * m[j]
            _act_grad(xr, a, c, t, gr, w, act, alpha)
        else:
            _act_grad(xr, a, c, dY + i * d + c0, gr, w, act, alpha)
        for j in range(w):
            xh = (xr[j] - mu[j]) * inv[j]
            sg[j] += <double>gr[j]
            sgx[j] += <double>gr[j] * <double>xh
    for j in range(w):
        dbeta[c0 + j] = <floating>sg[j]
        dgamma[c0 + j] = <floating>sgx[j]
        k = gamma[c0 + j] * invstd[c0 + j] / N
        ka[j] = <floating>(k * N)
        kb[j] = <floating>(-k * sg[j])
        kc[j] = <floating>(-k * sgx[j])
    if not need_dx:
        return
    # Pass 2: dx = k·(N·g − Σg − x̂·Σg·x̂)
    for i in range(N):
        xr = X + i * d + c0
        gr = dX + i * d + c0
        for j in range(w):
            gr[j] = ka[j] * gr[j] + kb[j] + kc[j] * ((xr[j] - mu[j]) * inv[j])


def backward(const floating[:, ::1] X, const floating[:, ::1] dY,
             const floating[::1] gamma, const floating[::1] beta,
             const double[::1] mean, const double[::1] invstd,
             floating[:, ::1] dX, floating[::1] dgamma, floating[::1] dbeta,
             int act, double alpha, const uint16_t[:, ::1] bits, double scale,
             bint dropout, bint need_dx, int stripe=0):
    """Training backward (module docstring) from the forward's ``mean``/``invstd`` and
    X: dgamma, dbeta, and dX (when ``need_dx``; dX is used as scratch either way).
    With ``dropout``, the mask comes from the forward's bits. dX may not alias dY."""
    cdef Py_ssize_t N = X.shape[0], d = X.shape[1]
    cdef Py_ssize_t w = stripe if stripe > 0 else _stripe_width(N, sizeof(floating))
    cdef Py_ssize_t n_stripes = (d + w - 1) // w, s
    cdef int nt = threads_for(N * d, NORM_PER_THREAD)
    cdef Py_ssize_t wpr = bits.shape[1]
    cdef const uint16_t* bits_ptr = &bits[0, 0]
    cdef floating alpha_f = <floating>alpha, scale_f = <floating>scale
    if nt > n_stripes:
        nt = <int>n_stripes
    with nogil:
        if nt <= 1:
            for s in range(n_stripes):
                _backward_stripe(&X[0, 0], &dY[0, 0], &gamma[0], &beta[0], &mean[0],
                                 &invstd[0], &dX[0, 0], &dgamma[0], &dbeta[0], N, d,
                                 s * w, min(s * w + w, d), act, alpha_f, bits_ptr, wpr,
                                 scale_f, dropout, need_dx)
        else:
            for s in prange(n_stripes, num_threads=nt, schedule='static'):
                _backward_stripe(&X[0, 0], &dY[0, 0], &gamma[0], &beta[0], &mean[0],
                                 &invstd[0], &dX[0, 0], &dgamma[0], &dbeta[0], N, d,
                                 s * w, min(s * w + w, d), act, alpha_f, bits_ptr, wpr,
                                 scale_f, dropout, need_dx)
