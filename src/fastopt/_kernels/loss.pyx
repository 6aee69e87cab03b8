"""Loss kernels: the value and the gradient in one pass over the predictions.

Every loss takes per-row weights ``w`` and a ``scale``; the reported value is
``scale · Σᵢ wᵢ·ℓᵢ`` and the gradient row i is ``scale · wᵢ · ∂ℓᵢ/∂zᵢ``. The mean over a
batch of N is ``w = 1, scale = 1/N``; a weighted mean is ``scale = 1/Σw``. ``row_loss[i]``
receives the unweighted ℓᵢ (for metrics and divergence checks).

The total is summed in float64 over rows in row order after the parallel pass, so it
does not depend on the thread count.
"""

from cython cimport floating
from cython.parallel cimport prange

from ._loss_core cimport (LOSS_BCE, LOSS_MSE, LOSS_PER_THREAD, LOSS_XENT_LABELS, LOSS_XENT_PROBA,
                          _batch_loss, _softmax_xent_row, _weighted_total)
from ._math cimport _exp, _log
from ._parallel cimport threads_for

# Loss kinds understood by the fused Dense training step (dense.DenseChain).
FUSED_KINDS = {"mse": LOSS_MSE, "binary_cross_entropy": LOSS_BCE,
               "softmax_cross_entropy": LOSS_XENT_LABELS,
               "softmax_cross_entropy_proba": LOSS_XENT_PROBA}

ctypedef fused label_t:
    int
    long long


def softmax_cross_entropy(const floating[:, ::1] Z, const label_t[::1] y,
                          const floating[::1] w, double scale, double smoothing,
                          floating[:, ::1] dZ, double[::1] row_loss, *, int n_threads):
    """Softmax cross-entropy from logits with integer labels in [0, K).

    ℓᵢ = logsumexp(zᵢ) − (1 − ε)·z_{i,yᵢ} − (ε/K)·Σₖ z_{i,k}   (ε: label smoothing)
    dZᵢ = scale·wᵢ·(softmax(zᵢ) − (1 − ε)·onehot(yᵢ) − ε/K)
    Returns scale·Σᵢ wᵢ·ℓᵢ. Labels are not checked here (the Python floor does).
    """
    cdef Py_ssize_t N = Z.shape[0], K = Z.shape[1], i
    cdef int nt = threads_for(N * K, LOSS_PER_THREAD, n_threads)
    cdef floating eps = <floating>smoothing
    cdef double total
    with nogil:
        for i in prange(N, num_threads=nt, schedule='static'):
            _softmax_xent_row(&Z[i, 0], <Py_ssize_t>y[i], &dZ[i, 0], K, eps,
                              <floating>(scale * w[i]), &row_loss[i])
        total = _weighted_total(&row_loss[0], &w[0], N, scale)
    return total


def dense_target_loss(int kind, const floating[:, ::1] Z, const floating[:, ::1] T,
                      const floating[::1] w, double scale, floating[:, ::1] dZ,
                      double[::1] row_loss, *, int n_threads):
    """A loss whose targets T are a dense (N, K) array; ``kind`` from FUSED_KINDS.

    softmax_cross_entropy_proba (T: probabilities, rows sum to 1):
        ℓᵢ = −Σₖ T_{ik}·log softmax(zᵢ)ₖ ;  dZᵢ = scale·wᵢ·(softmax(zᵢ)·ΣₖT_{ik} − Tᵢ)
    binary_cross_entropy (T in [0, 1], K outputs per row):
        ℓᵢ = (1/K)·Σₖ [max(z,0) − z·t + log(1 + e^(−|z|))] ;  dZᵢ = scale·wᵢ·(σ(zᵢ) − Tᵢ)/K
    mse (Z: predictions):
        ℓᵢ = (1/K)·Σₖ (z − t)² ;  dZᵢ = scale·wᵢ·2(zᵢ − Tᵢ)/K
    """
    cdef Py_ssize_t N = Z.shape[0], K = Z.shape[1]
    cdef double total
    with nogil:
        total = _batch_loss(kind, &Z[0, 0], &T[0, 0], NULL, &w[0], scale, 0.0,
                            &dZ[0, 0], &row_loss[0], N, K, n_threads)
    return total


cdef void _distill_row(const floating* zs, const floating* zt, Py_ssize_t y,
                       floating* dz, floating* et, Py_ssize_t K, floating inv_T,
                       floating alpha, floating coef, double* loss) noexcept nogil:
    # Soft part: T²·KL(p_t ‖ p_s) with p = softmax(z/T); its gradient in z_s is T·(p_s − p_t).
    # Hard part: cross-entropy with the label at temperature 1.
    # et (K scratch values) holds the teacher's softened exponentials.
    cdef Py_ssize_t k
    cdef floating T = 1 / inv_T
    cdef floating ms = zs[0] * inv_T, mt = zt[0] * inv_T, m1 = zs[0]
    cdef double ss = 0, st = 0, s1 = 0, kl = 0
    cdef double lse_s, lse_t, lse_1, log_pt, log_ps
    for k in range(1, K):
        if zs[k] * inv_T > ms:
            ms = zs[k] * inv_T
        if zt[k] * inv_T > mt:
            mt = zt[k] * inv_T
        if zs[k] > m1:
            m1 = zs[k]
    for k in range(K):
        dz[k] = _exp(zs[k] * inv_T - ms)
        et[k] = _exp(zt[k] * inv_T - mt)
        ss += dz[k]
        st += et[k]
        s1 += _exp(zs[k] - m1)
    lse_s = ms + _log(<floating>ss)
    lse_t = mt + _log(<floating>st)
    lse_1 = m1 + _log(<floating>s1)
    for k in range(K):
        log_pt = zt[k] * inv_T - lse_t
        log_ps = zs[k] * inv_T - lse_s
        kl += (et[k] / st) * (log_pt - log_ps)
        dz[k] = coef * (alpha * T * <floating>(dz[k] / ss - et[k] / st)
                        + (1 - alpha) * _exp(<floating>(zs[k] - lse_1)))
    dz[y] -= coef * (1 - alpha)
    loss[0] = alpha * T * T * kl + (1 - alpha) * (lse_1 - zs[y])


def distillation(const floating[:, ::1] Zs, const floating[:, ::1] Zt,
                 const label_t[::1] y, const floating[::1] w, double scale,
                 double temperature, double alpha, floating[:, ::1] dZ,
                 floating[:, ::1] scratch, double[::1] row_loss, *, int n_threads):
    """Knowledge distillation (Hinton et al.) from student logits Zs and teacher logits Zt:

    ℓᵢ = α·T²·KL(softmax(zₜ/T) ‖ softmax(zₛ/T)) + (1 − α)·CE(zₛ, yᵢ)
    dZᵢ = scale·wᵢ·[α·T·(softmax(zₛ/T) − softmax(zₜ/T)) + (1 − α)·(softmax(zₛ) − onehot(yᵢ))]
    ``scratch`` is (N, K) workspace.
    """
    cdef Py_ssize_t N = Zs.shape[0], K = Zs.shape[1], i
    cdef int nt = threads_for(N * K, LOSS_PER_THREAD, n_threads)
    cdef floating inv_T = <floating>(1.0 / temperature)
    cdef floating a = <floating>alpha
    cdef double total
    with nogil:
        for i in prange(N, num_threads=nt, schedule='static'):
            _distill_row(&Zs[i, 0], &Zt[i, 0], <Py_ssize_t>y[i], &dZ[i, 0], &scratch[i, 0], K,
                         inv_T, a, <floating>(scale * w[i]), &row_loss[i])
        total = _weighted_total(&row_loss[0], &w[0], N, scale)
    return total
