# Per-row loss maths shared by the loss kernels (loss.pyx) and the fused Dense training
# step (dense.pyx): value and gradient of one row in one pass. ``coef`` is the row's
# gradient factor (scale·wᵢ, with the loss's own constant folded in).

from cython cimport floating
from cython.parallel cimport prange

from ._math cimport _exp, _log, _log1p, _abs, _sigmoid
from ._parallel cimport threads_for

cdef enum:
    # Elements (N·K) under which a loss stays on one thread.
    LOSS_PER_THREAD = 16384

cdef enum:
    # Loss kinds of the batch driver.
    LOSS_MSE = 0
    LOSS_BCE = 1
    LOSS_XENT_LABELS = 2
    LOSS_XENT_PROBA = 3


cdef inline double _weighted_total(const double* row_loss, const floating* w, Py_ssize_t n,
                                   double scale) noexcept nogil:
    # Serial, in row order, in float64: the total does not depend on the thread count.
    cdef Py_ssize_t i
    cdef double total = 0
    for i in range(n):
        total += w[i] * row_loss[i]
    return total * scale


cdef inline floating _row_exp_sum(const floating* z, floating* e, Py_ssize_t K,
                                 floating* lse) noexcept nogil:
    """Leave e[k] = exp(z[k] − max z), set lse = logsumexp(z), return Σₖ e[k].
    Subtracting the max keeps every exponent ≤ 0: no overflow for any z."""
    cdef Py_ssize_t k
    cdef floating m = z[0], s = 0
    for k in range(1, K):
        if z[k] > m:
            m = z[k]
    for k in range(K):
        e[k] = _exp(z[k] - m)
        s = s + e[k]
    lse[0] = m + _log(s)
    return s


cdef inline void _softmax_xent_row(const floating* z, Py_ssize_t y, floating* dz,
                            Py_ssize_t K, floating smoothing, floating coef,
                            double* loss) noexcept nogil:
    cdef Py_ssize_t k
    cdef floating lse
    cdef floating inv_sum = 1 / _row_exp_sum(z, dz, K, &lse)
    cdef floating off = smoothing / K
    cdef floating on = 1 - smoothing
    cdef double zsum = 0
    if smoothing != 0:
        for k in range(K):
            zsum += z[k]
    loss[0] = <double>lse - on * <double>z[y] - off * zsum
    for k in range(K):
        dz[k] = coef * (dz[k] * inv_sum - off)
    dz[y] -= coef * on


cdef inline void _softmax_xent_proba_row(const floating* z, const floating* p, floating* dz,
                                  Py_ssize_t K, floating coef,
                                  double* loss) noexcept nogil:
    # ℓ = Σₖ pₖ·(lse − zₖ) = lse·Σp − Σ p·z ; ∂ℓ/∂z = softmax·Σp − p
    cdef Py_ssize_t k
    cdef floating lse
    cdef floating inv_sum = 1 / _row_exp_sum(z, dz, K, &lse)
    cdef double psum = 0, pz = 0
    for k in range(K):
        psum += p[k]
        pz += <double>p[k] * z[k]
    loss[0] = <double>lse * psum - pz
    for k in range(K):
        dz[k] = coef * (dz[k] * inv_sum * <floating>psum - p[k])


cdef inline void _bce_row(const floating* z, const floating* y, floating* dz, Py_ssize_t K,
                   floating coef, double* loss) noexcept nogil:
    cdef Py_ssize_t k
    cdef double s = 0
    cdef floating v
    for k in range(K):
        v = z[k]
        # max(z,0) − z·y + log(1 + e^(−|z|)): never exponentiates a positive number.
        s += (v if v > 0 else 0) - v * y[k] + _log1p(_exp(-_abs(v)))
        dz[k] = coef * (_sigmoid(v) - y[k])
    loss[0] = s / K


cdef inline void _mse_row(const floating* yhat, const floating* y, floating* dy, Py_ssize_t K,
                   floating coef, double* loss) noexcept nogil:
    cdef Py_ssize_t k
    cdef double s = 0
    cdef floating r
    for k in range(K):
        r = yhat[k] - y[k]
        s += <double>r * r
        dy[k] = coef * r
    loss[0] = s / K


cdef inline double _batch_loss(int kind, const floating* Z, const floating* T,
                               const long long* labels, const floating* w, double scale,
                               double smoothing, floating* dZ, double* row_loss,
                               Py_ssize_t N, Py_ssize_t K) noexcept nogil:
    """One loss over a batch (rows in parallel), returning scale·Σᵢ wᵢ·ℓᵢ. T holds the
    targets for MSE, BCE and probability cross-entropy; labels for LOSS_XENT_LABELS."""
    cdef Py_ssize_t i
    cdef int nt = threads_for(N * K, LOSS_PER_THREAD)
    if kind == LOSS_MSE:
        for i in prange(N, num_threads=nt, schedule='static'):
            _mse_row(Z + i * K, T + i * K, dZ + i * K, K, <floating>(2 * scale * w[i] / K),
                     row_loss + i)
    elif kind == LOSS_BCE:
        for i in prange(N, num_threads=nt, schedule='static'):
            _bce_row(Z + i * K, T + i * K, dZ + i * K, K, <floating>(scale * w[i] / K),
                     row_loss + i)
    elif kind == LOSS_XENT_PROBA:
        for i in prange(N, num_threads=nt, schedule='static'):
            _softmax_xent_proba_row(Z + i * K, T + i * K, dZ + i * K, K,
                                    <floating>(scale * w[i]), row_loss + i)
    else:
        for i in prange(N, num_threads=nt, schedule='static'):
            _softmax_xent_row(Z + i * K, <Py_ssize_t>labels[i], dZ + i * K, K,
                              <floating>smoothing, <floating>(scale * w[i]), row_loss + i)
    return _weighted_total(row_loss, w, N, scale)
