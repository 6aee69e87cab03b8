# The dense layer's maths, shared by the per-layer kernels (dense.pyx) and the compiled
# training step (step.pyx), so both run the same code and give the same bits.
#
# Forward, per fixed tile of rows:   Z = X·Wᵀ (BLAS), then one pass A = act(Z + b)
# while the tile is still in cache.
# Backward: one pass dZ = dA ⊙ act'(·) that also accumulates db = Σ_rows dZ, then
# dW = dZᵀ·X and dX = dZ·W (BLAS, tiled).
#
# Threads: every GEMM is cut into tiles whose size depends only on the shapes, each tile
# is one single-threaded BLAS call, and OpenMP runs the tiles, so results are bitwise
# identical for any thread count (OpenBLAS's own threading is not). The caller keeps
# scipy's BLAS on one thread while these kernels run (fastopt.threads does).

from cython cimport floating
from cython.parallel cimport prange

from ._math cimport _tanh, _sigmoid, _softplus
from ._blas cimport gemm
from ._parallel cimport threads_for
from ._activations cimport (ELU, GELU, GELU_TANH, IDENTITY, LEAKY_RELU, RELU, SIGMOID,
                           SOFTPLUS, TANH, relu, leaky_relu, elu, gelu_tanh, gelu,
                           relu_grad, leaky_relu_grad, elu_grad, sigmoid_grad, tanh_grad,
                           softplus_grad, gelu_tanh_derivative, gelu_derivative)

cdef enum:
    ELEMENTWISE_PER_THREAD = 32768
# Columns per stripe in the backward pass: one thread owns a stripe for all rows,
# so each db[j] is summed over rows in row order whatever the thread count.
cdef enum:
    STRIPE = 64


# ---- row passes: one explicit loop per activation, so each one vectorizes ----

cdef inline void _epilogue_row(floating* z, const floating* b, floating* a, Py_ssize_t n,
                        int act, floating alpha, bint has_bias, bint keep_z) noexcept nogil:
    """a[j] = act(z[j] + b[j]); z[j] ← z[j] + b[j] when keep_z. a may alias z
    unless keep_z."""
    cdef Py_ssize_t j
    if has_bias and (keep_z or act == IDENTITY):
        for j in range(n):
            z[j] = z[j] + b[j]
        has_bias = False
    if act == IDENTITY:
        if a != z:
            for j in range(n):
                a[j] = z[j]
    elif act == RELU:
        if has_bias:
            for j in range(n):
                a[j] = relu(z[j] + b[j])
        else:
            for j in range(n):
                a[j] = relu(z[j])
    elif act == LEAKY_RELU:
        for j in range(n):
            a[j] = leaky_relu(z[j] + (b[j] if has_bias else 0), alpha)
    elif act == ELU:
        for j in range(n):
            a[j] = elu(z[j] + (b[j] if has_bias else 0), alpha)
    elif act == GELU_TANH:
        for j in range(n):
            a[j] = gelu_tanh(z[j])
    elif act == GELU:
        for j in range(n):
            a[j] = gelu(z[j])
    elif act == SIGMOID:
        for j in range(n):
            a[j] = _sigmoid(z[j] + (b[j] if has_bias else 0))
    elif act == TANH:
        for j in range(n):
            a[j] = _tanh(z[j] + (b[j] if has_bias else 0))
    elif act == SOFTPLUS:
        for j in range(n):
            a[j] = _softplus(z[j] + (b[j] if has_bias else 0))


cdef inline void _grad_row(const floating* da, const floating* a, const floating* z,
                    floating* dz, double* db, Py_ssize_t n, int act, floating alpha,
                    bint has_bias) noexcept nogil:
    """dz[j] = da[j]·act'(·); db[j] += dz[j] (a float64 accumulator). dz may alias da."""
    cdef Py_ssize_t j
    if act == IDENTITY:
        if dz != da:
            for j in range(n):
                dz[j] = da[j]
    elif act == RELU:
        for j in range(n):
            dz[j] = relu_grad(da[j], a[j])
    elif act == LEAKY_RELU:
        for j in range(n):
            dz[j] = leaky_relu_grad(da[j], a[j], alpha)
    elif act == ELU:
        for j in range(n):
            dz[j] = elu_grad(da[j], a[j], alpha)
    elif act == GELU_TANH:
        for j in range(n):
            dz[j] = da[j] * gelu_tanh_derivative(z[j])
    elif act == GELU:
        for j in range(n):
            dz[j] = da[j] * gelu_derivative(z[j])
    elif act == SIGMOID:
        for j in range(n):
            dz[j] = sigmoid_grad(da[j], a[j])
    elif act == TANH:
        for j in range(n):
            dz[j] = tanh_grad(da[j], a[j])
    elif act == SOFTPLUS:
        for j in range(n):
            dz[j] = softplus_grad(da[j], a[j])
    if has_bias:
        for j in range(n):
            db[j] += dz[j]


# ---- tiled GEMMs ----
#
# C (m×n) is cut into a grid of tiles whose shape depends only on (m, n, k), never on the
# thread count. Each tile is one single-threaded BLAS call; OpenMP runs the tiles.
# A product worth parallelising is first cut in two (so two threads always have work);
# beyond that, tiles are halved along their longer side only while each half keeps at
# least SPLIT_WORK multiply-adds and SPLIT_DIM rows and columns, up to MAX_TILES tiles:
# BLAS repacks the operand panels for every call, and small tiles made that dominate
# (64×64 tiles: 52 GFLOP/s on a 512×1024×2048 product where one whole call gave 70-73;
# 256×256 tiles recovered 71-79 on one thread and 135-145 on two).

cdef enum:
    FIRST_SPLIT_WORK = 1048576   # multiply-adds per half for the first cut (~20 µs)
    FIRST_SPLIT_DIM = 32
    SPLIT_WORK = 8388608         # per half, for every further cut
    SPLIT_DIM = 128
    MAX_TILES = 16

ctypedef struct Tiling:
    Py_ssize_t tm, tn        # tile height and width (last row/column of tiles may be smaller)
    Py_ssize_t n_tm, n_tn    # tiles down and across


cdef inline Py_ssize_t _half(Py_ssize_t d) noexcept nogil:
    # Halves rounded up to a multiple of 16: SIMD-friendly tile edges.
    cdef Py_ssize_t h = (d + 1) // 2
    return (h + 15) // 16 * 16


cdef inline Tiling _tiling(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    cdef Tiling t
    cdef Py_ssize_t min_work = FIRST_SPLIT_WORK, min_dim = FIRST_SPLIT_DIM
    t.tm = m
    t.tn = n
    while (t.tm * t.tn * k >= 2 * min_work
           and ((m + t.tm - 1) // t.tm) * ((n + t.tn - 1) // t.tn) < MAX_TILES):
        if t.tn >= t.tm and t.tn >= 2 * min_dim:
            t.tn = _half(t.tn)
        elif t.tm >= 2 * min_dim:
            t.tm = _half(t.tm)
        elif t.tn >= 2 * min_dim:
            t.tn = _half(t.tn)
        else:
            break
        min_work = SPLIT_WORK
        min_dim = SPLIT_DIM
    t.n_tm = (m + t.tm - 1) // t.tm
    t.n_tn = (n + t.tn - 1) // t.tn
    return t


cdef inline void _gemm_tile(Tiling t, Py_ssize_t tile, bint trans_a, bint trans_b,
                            Py_ssize_t m, Py_ssize_t n, int k,
                            const floating* a, int lda, const floating* b, int ldb,
                            floating* c, int ldc) noexcept nogil:
    cdef Py_ssize_t i0 = (tile // t.n_tn) * t.tm, j0 = (tile % t.n_tn) * t.tn
    cdef Py_ssize_t i1 = min(i0 + t.tm, m), j1 = min(j0 + t.tn, n)
    gemm(trans_a, trans_b, <int>(i1 - i0), <int>(j1 - j0), k, <floating>1.0,
         a + (i0 if trans_a else i0 * lda), lda,
         b + (j0 * ldb if trans_b else j0), ldb,
         <floating>0.0, c + i0 * ldc + j0, ldc)


cdef inline void _gemm_tiles(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, int k,
                      const floating* a, int lda, const floating* b, int ldb,
                      floating* c, int ldc, int n_threads) noexcept nogil:
    """C = op(A)·op(B), row-major, over the fixed tile grid."""
    cdef Tiling t = _tiling(m, n, k)
    cdef Py_ssize_t n_tiles = t.n_tm * t.n_tn, tile
    cdef int nt = n_threads if n_threads < n_tiles else <int>n_tiles
    if nt <= 1:
        for tile in range(n_tiles):
            _gemm_tile(t, tile, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
    else:
        for tile in prange(n_tiles, num_threads=nt, schedule='static'):
            _gemm_tile(t, tile, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)


cdef inline void _forward_tile(Tiling t, Py_ssize_t tile, const floating* X, const floating* W,
                        const floating* b, floating* Z, floating* A, Py_ssize_t N,
                        int n_in, Py_ssize_t n_out, int act, floating alpha,
                        bint has_bias, bint keep_z) noexcept nogil:
    # The epilogue runs on the tile just computed, while it is still in cache.
    cdef Py_ssize_t i0 = (tile // t.n_tn) * t.tm, j0 = (tile % t.n_tn) * t.tn
    cdef Py_ssize_t i1 = min(i0 + t.tm, N), j1 = min(j0 + t.tn, n_out), i
    _gemm_tile(t, tile, False, True, N, n_out, n_in, X, n_in, W, n_in, Z, <int>n_out)
    for i in range(i0, i1):
        _epilogue_row(Z + i * n_out + j0, b + j0 if has_bias else NULL, A + i * n_out + j0,
                      j1 - j0, act, alpha, has_bias, keep_z)


cdef inline void _forward_layer(const floating* X, const floating* W, const floating* b,
                         floating* Z, floating* A, Py_ssize_t N, int n_in, Py_ssize_t n_out,
                         int act, floating alpha, bint has_bias, int n_threads) noexcept nogil:
    cdef Tiling t = _tiling(N, n_out, n_in)
    cdef Py_ssize_t n_tiles = t.n_tm * t.n_tn, tile
    cdef int nt = n_threads
    cdef bint keep_z = act == GELU or act == GELU_TANH
    if N == 0:
        return
    if nt > n_tiles:
        nt = <int>n_tiles
    if nt <= 1:
        for tile in range(n_tiles):
            _forward_tile(t, tile, X, W, b, Z, A, N, n_in, n_out, act, alpha, has_bias, keep_z)
    else:
        for tile in prange(n_tiles, num_threads=nt, schedule='static'):
            _forward_tile(t, tile, X, W, b, Z, A, N, n_in, n_out, act, alpha, has_bias, keep_z)



cdef inline void _grad_stripe(const floating* dA, const floating* A, const floating* Z,
                       floating* dZ, floating* db, Py_ssize_t N, Py_ssize_t n_out,
                       Py_ssize_t c0, Py_ssize_t c1, int act, floating alpha,
                       bint has_bias) noexcept nogil:
    # db is summed over rows in float64 (a float32 sum drifted by 1.6e-5 at 200k rows).
    cdef Py_ssize_t i, off
    cdef Py_ssize_t j
    cdef double acc[STRIPE]
    for j in range(c1 - c0):
        acc[j] = 0
    for i in range(N):
        off = i * n_out + c0
        _grad_row(dA + off, A + off, Z + off if Z != NULL else NULL, dZ + off,
                  acc, c1 - c0, act, alpha, has_bias)
    if has_bias:
        for j in range(c1 - c0):
            db[c0 + j] = <floating>acc[j]


cdef inline void _backward_layer(const floating* dA, const floating* X, const floating* W,
                          const floating* A, const floating* Z, floating* dZ, floating* dW,
                          floating* db, floating* dX, Py_ssize_t N, Py_ssize_t n_in,
                          Py_ssize_t n_out, int act, floating alpha, bint has_bias,
                          bint need_dx, int n_threads) noexcept nogil:
    cdef Py_ssize_t n_stripes = (n_out + STRIPE - 1) // STRIPE
    cdef Py_ssize_t s
    cdef int nt = threads_for(N * n_out, ELEMENTWISE_PER_THREAD, n_threads)
    if not (act == GELU or act == GELU_TANH):
        Z = NULL
    if N == 0:
        for s in range(n_out * n_in):
            dW[s] = 0
        if has_bias:
            for s in range(n_out):
                db[s] = 0
        return
    if nt > n_stripes:
        nt = <int>n_stripes
    if nt <= 1:
        for s in range(n_stripes):
            _grad_stripe(dA, A, Z, dZ, db, N, n_out, s * STRIPE,
                         min(s * STRIPE + STRIPE, n_out), act, alpha, has_bias)
    else:
        for s in prange(n_stripes, num_threads=nt, schedule='static'):
            _grad_stripe(dA, A, Z, dZ, db, N, n_out, s * STRIPE,
                         min(s * STRIPE + STRIPE, n_out), act, alpha, has_bias)
    # dW (out×in) = dZᵀ (out×N) · X (N×in)
    _gemm_tiles(True, False, n_out, n_in, <int>N, dZ, <int>n_out, X, <int>n_in, dW,
                <int>n_in, n_threads)
    if need_dx:
        # dX (N×in) = dZ (N×out) · W (out×in)
        _gemm_tiles(False, False, N, n_in, <int>n_out, dZ, <int>n_out, W, <int>n_in, dX,
                    <int>n_in, n_threads)




cdef inline void _act_forward_rows(const floating* Z, floating* A, Py_ssize_t N, Py_ssize_t n,
                                   int act, floating alpha, int n_threads) noexcept nogil:
    """A = act(Z), elementwise over N rows of n (A may be Z)."""
    cdef Py_ssize_t i
    cdef int nt = threads_for(N * n, ELEMENTWISE_PER_THREAD, n_threads)
    for i in prange(N, num_threads=nt, schedule='static'):
        _epilogue_row(<floating*>Z + i * n, NULL, A + i * n, n, act, alpha, False, False)


cdef inline void _act_backward_rows(const floating* dA, const floating* A, const floating* Z,
                                    floating* dZ, Py_ssize_t N, Py_ssize_t n, int act,
                                    floating alpha, int n_threads) noexcept nogil:
    """dZ = dA ⊙ act'(·), elementwise; Z is read only for the GELUs."""
    cdef Py_ssize_t i
    cdef int nt = threads_for(N * n, ELEMENTWISE_PER_THREAD, n_threads)
    cdef bint needs_z = act == GELU or act == GELU_TANH
    for i in prange(N, num_threads=nt, schedule='static'):
        _grad_row(dA + i * n, A + i * n, Z + i * n if needs_z else NULL, dZ + i * n,
                  NULL, n, act, alpha, False)
