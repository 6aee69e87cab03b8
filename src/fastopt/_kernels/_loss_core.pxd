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
                                  floating* m_out) noexcept nogil:
    """Leave e[k] = exp(z[k] − m) with m = max z, set m_out = m, return Σₖ e[k].
    Subtracting the max keeps every exponent ≤ 0: no overflow for any z. Callers form
    the loss from (m − z) in float64: logsumexp rounded to float32 first would lose
    the digits of ℓ when the logits are large (1e6 − (1e6 − 1))."""
    cdef Py_ssize_t k
    cdef floating m = z[0], s = 0
    for k in range(1, K):
        if z[k] > m:
            m = z[k]
    for k in range(K):
        e[k] = _exp(z[k] - m)
        s = s + e[k]
    m_out[0] = m
    return s


cdef inline void _softmax_xent_row(const floating* z, Py_ssize_t y, floating* dz,
                                   Py_ssize_t K, floating smoothing, floating coef,
                                   double* loss) noexcept nogil:
    # ℓ = logsumexp(z) − (1 − ε)·z_y − (ε/K)·Σz = (1 − ε)(m − z_y) + ε(m − mean z) + log Σe
    cdef Py_ssize_t k
    cdef floating m
    cdef floating s = _row_exp_sum(z, dz, K, &m)
    cdef floating inv_sum = 1 / s
    cdef floating off = smoothing / K
    cdef floating on = 1 - smoothing
    cdef double zsum = 0
    if smoothing != 0:
        for k in range(K):
            zsum += z[k]
    loss[0] = (on * (<double>m - <double>z[y]) + smoothing * (<double>m - zsum / K)
               + _log(<double>s))
    for k in range(K):
        dz[k] = coef * (dz[k] * inv_sum - off)
    dz[y] -= coef * on


cdef inline void _softmax_xent_proba_row(const floating* z, const floating* p, floating* dz,
                                         Py_ssize_t K, floating coef,
                                         double* loss) noexcept nogil:
    # ℓ = Σₖ pₖ·(lse − zₖ) = Σₖ pₖ·(m − zₖ) + Σp·log Σe ; ∂ℓ/∂z = softmax·Σp − p
    cdef Py_ssize_t k
    cdef floating m
    cdef floating s = _row_exp_sum(z, dz, K, &m)
    cdef floating inv_sum = 1 / s
    cdef double psum = 0, pgap = 0
    for k in range(K):
        psum += p[k]
        pgap += <double>p[k] * (<double>m - <double>z[k])
    loss[0] = pgap + psum * _log(<double>s)
    for k in range(K):
        dz[k] = coef * (dz[k] * inv_sum * <floating>psum - p[k])


cdef inline void _pointwise_row(bint bce, const floating* z, const floating* t, floating* dz,
                                Py_ssize_t K, floating coef, double* loss) noexcept nogil:
    # Called with a literal ``bce``: one loop each for binary cross-entropy and MSE.
    cdef Py_ssize_t k
    cdef double s = 0
    cdef floating v
    for k in range(K):
        v = z[k]
        if bce:
            # max(z,0) − z·t + log(1 + e^(−|z|)): never exponentiates a positive number.
            s += (v if v > 0 else 0) - v * t[k] + _log1p(_exp(-_abs(v)))
            dz[k] = coef * (_sigmoid(v) - t[k])
        else:
            v = v - t[k]
            s += <double>v * v
            dz[k] = coef * v
    loss[0] = s / K


cdef inline double _batch_loss(int kind, const floating* Z, const floating* T,
                               const long long* labels, const floating* w, double scale,
                               double smoothing, floating* dZ, double* row_loss,
                               Py_ssize_t N, Py_ssize_t K, int n_threads) noexcept nogil:
    """One loss over a batch (rows in parallel), returning scale·Σᵢ wᵢ·ℓᵢ. T holds the
    targets for MSE, BCE and probability cross-entropy; labels for LOSS_XENT_LABELS."""
    cdef Py_ssize_t i
    cdef int nt = threads_for(N * K, LOSS_PER_THREAD, n_threads)
    if kind == LOSS_MSE:
        for i in prange(N, num_threads=nt, schedule='static'):
            _pointwise_row(False, Z + i * K, T + i * K, dZ + i * K, K,
                           <floating>(2 * scale * w[i] / K), row_loss + i)
    elif kind == LOSS_BCE:
        for i in prange(N, num_threads=nt, schedule='static'):
            _pointwise_row(True, Z + i * K, T + i * K, dZ + i * K, K,
                           <floating>(scale * w[i] / K), row_loss + i)
    elif kind == LOSS_XENT_PROBA:
        for i in prange(N, num_threads=nt, schedule='static'):
            _softmax_xent_proba_row(Z + i * K, T + i * K, dZ + i * K, K,
                                    <floating>(scale * w[i]), row_loss + i)
    else:
        for i in prange(N, num_threads=nt, schedule='static'):
            _softmax_xent_row(Z + i * K, <Py_ssize_t>labels[i], dZ + i * K, K,
                              <floating>smoothing, <floating>(scale * w[i]), row_loss + i)
    return _weighted_total(row_loss, w, N, scale)
