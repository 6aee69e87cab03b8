"""Dense layer kernels: the GEMMs and the fused epilogues around them.

Forward, per fixed tile of rows:   Z = X·Wᵀ (BLAS), then one pass A = act(Z + b)
while the tile is still in cache.
Backward: one pass dZ = dA ⊙ act'(·) that also accumulates db = Σ_rows dZ, then
dW = dZᵀ·X and dX = dZ·W (BLAS, tiled).

Threads: fastopt owns them. Every GEMM is cut into tiles whose size depends only on
the shapes, each tile is one single-threaded BLAS call, and OpenMP runs the tiles.
Results are therefore bitwise identical for any thread count (OpenBLAS's own
threading is not: FACTS.md, "Threads"). The caller keeps scipy's BLAS on one thread
while these kernels run (fastopt.threads does).

Derivatives are taken from what the forward kept: the output A for every activation
except GELU, which needs the pre-activation Z.
"""

from cython cimport floating
from cython.parallel cimport prange
from ._math cimport _exp, _expm1, _log1p, _tanh, _erf, _abs, _sigmoid, _softplus

from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc

from ._blas cimport gemm
from ._loss_core cimport _batch_loss
from ._reduce cimport _sum_squares
from ._parallel cimport kernel_threads, threads_for

from ._activations cimport (ELU, GELU, GELU_TANH, IDENTITY, LEAKY_RELU, RELU, SIGMOID,
                           SOFTPLUS, TANH)

ACTIVATIONS = {
    "identity": IDENTITY, "linear": IDENTITY, None: IDENTITY,
    "relu": RELU, "leaky_relu": LEAKY_RELU, "elu": ELU,
    "gelu_tanh": GELU_TANH, "gelu": GELU,
    "sigmoid": SIGMOID, "tanh": TANH, "softplus": SOFTPLUS,
}
NEEDS_PREACTIVATION = frozenset({GELU_TANH, GELU})

# Elements under which an elementwise pass stays on one thread.
cdef enum:
    ELEMENTWISE_PER_THREAD = 32768
# Columns per stripe in the backward pass: one thread owns a stripe for all rows,
# so each db[j] is summed over rows in row order whatever the thread count.
cdef enum:
    STRIPE = 64

# ---- activations needing more than one line ----

cdef double SQRT_2_OVER_PI = 0.7978845608028654
cdef double INV_SQRT_2 = 0.7071067811865476
cdef double INV_SQRT_2PI = 0.3989422804014327
cdef double GELU_C = 0.044715


cdef inline floating _gelu_tanh(floating z) noexcept nogil:
    cdef floating inner = <floating>SQRT_2_OVER_PI * (z + <floating>GELU_C * z * z * z)
    return <floating>0.5 * z * (1 + _tanh(inner))

cdef inline floating _gelu_tanh_grad(floating z) noexcept nogil:
    cdef floating inner = <floating>SQRT_2_OVER_PI * (z + <floating>GELU_C * z * z * z)
    cdef floating t = _tanh(inner)
    cdef floating dinner = <floating>SQRT_2_OVER_PI * (1 + 3 * <floating>GELU_C * z * z)
    return <floating>0.5 * (1 + t) + <floating>0.5 * z * (1 - t * t) * dinner

cdef inline floating _gelu(floating z) noexcept nogil:
    return <floating>0.5 * z * (1 + _erf(z * <floating>INV_SQRT_2))

cdef inline floating _gelu_grad(floating z) noexcept nogil:
    cdef floating cdf = <floating>0.5 * (1 + _erf(z * <floating>INV_SQRT_2))
    return cdf + z * <floating>INV_SQRT_2PI * _exp(<floating>-0.5 * z * z)


# ---- row passes: one explicit loop per activation, so each one vectorizes ----

cdef void _epilogue_row(floating* z, const floating* b, floating* a, Py_ssize_t n,
                        int act, floating alpha, bint has_bias, bint keep_z) noexcept nogil:
    """a[j] = act(z[j] + b[j]); z[j] ← z[j] + b[j] when keep_z. a may alias z
    unless keep_z."""
    cdef Py_ssize_t j
    cdef floating v
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
                v = z[j] + b[j]
                a[j] = v if v > 0 else 0
        else:
            for j in range(n):
                v = z[j]
                a[j] = v if v > 0 else 0
    elif act == LEAKY_RELU:
        for j in range(n):
            v = z[j] + (b[j] if has_bias else 0)
            a[j] = v if v > 0 else alpha * v
    elif act == ELU:
        for j in range(n):
            v = z[j] + (b[j] if has_bias else 0)
            a[j] = v if v > 0 else alpha * _expm1(v)
    elif act == GELU_TANH:
        for j in range(n):
            a[j] = _gelu_tanh(z[j])
    elif act == GELU:
        for j in range(n):
            a[j] = _gelu(z[j])
    elif act == SIGMOID:
        for j in range(n):
            a[j] = _sigmoid(z[j] + (b[j] if has_bias else 0))
    elif act == TANH:
        for j in range(n):
            a[j] = _tanh(z[j] + (b[j] if has_bias else 0))
    elif act == SOFTPLUS:
        for j in range(n):
            a[j] = _softplus(z[j] + (b[j] if has_bias else 0))


cdef void _grad_row(const floating* da, const floating* a, const floating* z,
                    floating* dz, double* db, Py_ssize_t n, int act, floating alpha,
                    bint has_bias) noexcept nogil:
    """dz[j] = da[j]·act'(·); db[j] += dz[j] (a float64 accumulator). dz may alias da."""
    cdef Py_ssize_t j
    cdef floating d, v
    if act == IDENTITY:
        if dz != da:
            for j in range(n):
                dz[j] = da[j]
    elif act == RELU:
        for j in range(n):
            dz[j] = da[j] if a[j] > 0 else 0
    elif act == LEAKY_RELU:
        for j in range(n):
            dz[j] = da[j] if a[j] > 0 else alpha * da[j]
    elif act == ELU:
        # For z ≤ 0, a = α(eᶻ − 1) so act' = eᶻ·α = a + α.
        for j in range(n):
            v = a[j]
            dz[j] = da[j] if v > 0 else da[j] * (v + alpha)
    elif act == GELU_TANH:
        for j in range(n):
            dz[j] = da[j] * _gelu_tanh_grad(z[j])
    elif act == GELU:
        for j in range(n):
            dz[j] = da[j] * _gelu_grad(z[j])
    elif act == SIGMOID:
        for j in range(n):
            v = a[j]
            dz[j] = da[j] * v * (1 - v)
    elif act == TANH:
        for j in range(n):
            v = a[j]
            dz[j] = da[j] * (1 - v * v)
    elif act == SOFTPLUS:
        # act'(z) = σ(z) = 1 − e^(−a); -expm1 keeps it exact when a is tiny.
        for j in range(n):
            dz[j] = -da[j] * _expm1(-a[j])
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


cdef Tiling _tiling(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
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


cdef void _gemm_tiles(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, int k,
                      const floating* a, int lda, const floating* b, int ldb,
                      floating* c, int ldc, int max_threads) noexcept nogil:
    """C = op(A)·op(B), row-major, over the fixed tile grid."""
    cdef Tiling t = _tiling(m, n, k)
    cdef Py_ssize_t n_tiles = t.n_tm * t.n_tn, tile
    cdef int nt = max_threads if max_threads < n_tiles else <int>n_tiles
    if nt <= 1:
        for tile in range(n_tiles):
            _gemm_tile(t, tile, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
    else:
        for tile in prange(n_tiles, num_threads=nt, schedule='static'):
            _gemm_tile(t, tile, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)


cdef void _forward_tile(Tiling t, Py_ssize_t tile, const floating* X, const floating* W,
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


cdef void _forward_layer(const floating* X, const floating* W, const floating* b,
                         floating* Z, floating* A, Py_ssize_t N, int n_in, Py_ssize_t n_out,
                         int act, floating alpha, bint has_bias) noexcept nogil:
    cdef Tiling t = _tiling(N, n_out, n_in)
    cdef Py_ssize_t n_tiles = t.n_tm * t.n_tn, tile
    cdef int nt = kernel_threads()
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


def forward(const floating[:, ::1] X, const floating[:, ::1] W, const floating[::1] b,
            floating[:, ::1] Z, floating[:, ::1] A, int act, double alpha,
            bint has_bias):
    """Z = X·Wᵀ + b; A = act(Z).

    X (N, in), W (out, in), b (out,), Z and A (N, out). Z keeps the pre-activation
    only when the activation needs it for backward (GELU); otherwise A may be the
    same buffer as Z and Z's content is unspecified afterwards.
    """
    if X.shape[0] == 0:
        return
    with nogil:
        _forward_layer(&X[0, 0], &W[0, 0], &b[0] if has_bias else NULL, &Z[0, 0], &A[0, 0],
                       X.shape[0], <int>X.shape[1], W.shape[0], act, <floating>alpha, has_bias)


def gemm_rowmajor(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C,
                  bint trans_a, bint trans_b):
    """C = op(A)·op(B) through the tiled, thread-count-invariant path (tests, benchmarks)."""
    cdef Py_ssize_t m = C.shape[0], n = C.shape[1]
    cdef int k = <int>(A.shape[0] if trans_a else A.shape[1])
    if m == 0 or n == 0:
        return
    with nogil:
        _gemm_tiles(trans_a, trans_b, m, n, k, &A[0, 0], <int>A.shape[1], &B[0, 0],
                    <int>B.shape[1], &C[0, 0], <int>C.shape[1], kernel_threads())


def tile_grid(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k):
    """(tile height, tile width, tiles down, tiles across) for an m×n×k product."""
    cdef Tiling t = _tiling(m, n, k)
    return t.tm, t.tn, t.n_tm, t.n_tn


cdef void _grad_stripe(const floating* dA, const floating* A, const floating* Z,
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


cdef void _backward_layer(const floating* dA, const floating* X, const floating* W,
                          const floating* A, const floating* Z, floating* dZ, floating* dW,
                          floating* db, floating* dX, Py_ssize_t N, Py_ssize_t n_in,
                          Py_ssize_t n_out, int act, floating alpha, bint has_bias,
                          bint need_dx) noexcept nogil:
    cdef Py_ssize_t n_stripes = (n_out + STRIPE - 1) // STRIPE
    cdef Py_ssize_t s
    cdef int nt = threads_for(N * n_out, ELEMENTWISE_PER_THREAD)
    cdef int max_threads = kernel_threads()
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
                <int>n_in, max_threads)
    if need_dx:
        # dX (N×in) = dZ (N×out) · W (out×in)
        _gemm_tiles(False, False, N, n_in, <int>n_out, dZ, <int>n_out, W, <int>n_in, dX,
                    <int>n_in, max_threads)


def backward(const floating[:, ::1] dA, const floating[:, ::1] X,
             const floating[:, ::1] W, const floating[:, ::1] A,
             const floating[:, ::1] Z, floating[:, ::1] dZ, floating[:, ::1] dW,
             floating[::1] db, floating[:, ::1] dX, int act, double alpha,
             bint has_bias, bint need_dx):
    """dZ = dA ⊙ act'(·), db = Σ_rows dZ, dW = dZᵀ·X, dX = dZ·W (when need_dx).

    dZ may be dA itself (then dA is overwritten). Z is read only for activations
    that need the pre-activation. dW, db and dX are overwritten, not accumulated.
    """
    cdef Py_ssize_t N = X.shape[0]
    cdef const floating* dA_ptr = &dA[0, 0] if N else NULL
    cdef const floating* A_ptr = &A[0, 0] if N else NULL
    cdef const floating* Z_ptr = &Z[0, 0] if N else NULL
    cdef floating* dZ_ptr = &dZ[0, 0] if N else NULL
    cdef const floating* X_ptr = &X[0, 0] if N else NULL
    cdef floating* dX_ptr = &dX[0, 0] if (N and need_dx) else NULL
    with nogil:
        _backward_layer(dA_ptr, X_ptr, &W[0, 0], A_ptr, Z_ptr, dZ_ptr, &dW[0, 0],
                        &db[0] if has_bias else NULL, dX_ptr, N, X.shape[1], W.shape[0], act,
                        <floating>alpha, has_bias, need_dx)


def activation_forward(const floating[:, ::1] Z, floating[:, ::1] A, int act,
                       double alpha):
    """A = act(Z), elementwise (a standalone Activation layer)."""
    cdef Py_ssize_t N = Z.shape[0], n = Z.shape[1], i
    cdef int nt = threads_for(N * n, ELEMENTWISE_PER_THREAD)
    cdef floating alpha_f = <floating>alpha
    if N == 0:
        return
    with nogil:
        for i in prange(N, num_threads=nt, schedule='static'):
            _epilogue_row(<floating*>&Z[i, 0], NULL, &A[i, 0], n, act, alpha_f,
                          False, False)


def activation_backward(const floating[:, ::1] dA, const floating[:, ::1] A,
                        const floating[:, ::1] Z, floating[:, ::1] dZ, int act,
                        double alpha):
    """dZ = dA ⊙ act'(·), elementwise."""
    cdef Py_ssize_t N = dA.shape[0], n = dA.shape[1], i
    cdef int nt = threads_for(N * n, ELEMENTWISE_PER_THREAD)
    cdef floating alpha_f = <floating>alpha
    cdef bint needs_z = act == GELU or act == GELU_TANH
    if N == 0:
        return
    with nogil:
        for i in prange(N, num_threads=nt, schedule='static'):
            _grad_row(&dA[i, 0], &A[i, 0], &Z[i, 0] if needs_z else NULL, &dZ[i, 0],
                      NULL, n, act, alpha_f, False)


# ---- the fused training step of a Dense stack ----
#
# Python between kernels cost more than the kernels themselves on small models (a
# 32-64-64-1 step spent ~2/3 of its time in call overhead: memoryview acquisition,
# attribute lookups). A DenseChain binds every buffer of one batch size once and then runs
# forward, loss and backward of the whole stack in one call without the GIL.

cdef enum:
    # Per layer: the addresses of X (input), W, b, Z, A, dZ, dW, db, dX.
    F_X, F_W, F_B, F_Z, F_A, F_DZ, F_DW, F_DB, F_DX, N_FIELDS


cdef double _chain_run(floating* kind_marker, Py_ssize_t n_layers, Py_ssize_t N,
                       const uintptr_t* ptr, const Py_ssize_t* dims, const int* acts,
                       const double* alphas, const bint* biases, int loss_kind,
                       double smoothing, uintptr_t T, uintptr_t labels, uintptr_t w,
                       uintptr_t dout, uintptr_t row_loss, double scale,
                       uintptr_t grad, Py_ssize_t n_grad, uintptr_t partials,
                       double* grad_sum_squares) noexcept nogil:
    cdef Py_ssize_t l, n_in, n_out
    cdef const uintptr_t* f
    cdef double total
    cdef const floating* dA
    for l in range(n_layers):
        f = ptr + l * N_FIELDS
        _forward_layer(<const floating*>f[F_X], <const floating*>f[F_W],
                       <const floating*>f[F_B], <floating*>f[F_Z], <floating*>f[F_A], N,
                       <int>dims[2 * l], dims[2 * l + 1], acts[l], <floating>alphas[l],
                       biases[l])
    f = ptr + (n_layers - 1) * N_FIELDS
    total = _batch_loss(loss_kind, <const floating*>f[F_A], <const floating*>T,
                        <const long long*>labels, <const floating*>w, scale, smoothing,
                        <floating*>dout, <double*>row_loss, N, dims[2 * n_layers - 1])
    dA = <const floating*>dout
    for l in range(n_layers - 1, -1, -1):
        f = ptr + l * N_FIELDS
        _backward_layer(dA, <const floating*>f[F_X], <const floating*>f[F_W],
                        <const floating*>f[F_A], <const floating*>f[F_Z], <floating*>f[F_DZ],
                        <floating*>f[F_DW], <floating*>f[F_DB], <floating*>f[F_DX], N,
                        dims[2 * l], dims[2 * l + 1], acts[l], <floating>alphas[l],
                        biases[l], l > 0)
        dA = <const floating*>f[F_DX]
    # The global gradient norm's sum of squares, while the gradients are still in cache.
    grad_sum_squares[0] = _sum_squares(<const floating*>grad, n_grad, <double*>partials)
    return total


cdef uintptr_t _address(object array):
    return <uintptr_t>0 if array is None else <uintptr_t>array.__array_interface__["data"][0]


cdef class DenseChain:
    """Forward, loss and backward of a stack of Dense layers in one call, on buffers
    bound once (one batch size). Built and cached by fastopt.train; not a public API.

    ``layers``: per layer ``(X, W, b, Z, A, dZ, dW, db, dX, act, alpha)`` arrays (b and db
    None without a bias), X being the previous layer's A. ``grad`` is the whole gradient
    arena and ``partials`` its norm workspace (optim.norm_blocks doubles). The caller guarantees shapes,
    dtypes and C-contiguity; the chain keeps references so no buffer can go away.
    """

    cdef Py_ssize_t n_layers, N
    cdef bint is_double
    cdef int loss_kind
    cdef double smoothing
    cdef uintptr_t* ptr
    cdef Py_ssize_t* dims
    cdef int* acts
    cdef double* alphas
    cdef bint* biases
    cdef uintptr_t T, labels, w, dout, row_loss, grad, partials
    cdef Py_ssize_t n_grad
    cdef readonly double grad_sum_squares
    cdef object _keep

    def __cinit__(self, layers, T, labels, w, dout, row_loss, int loss_kind,
                  double smoothing, grad, partials):
        cdef Py_ssize_t l, j
        self.n_layers = len(layers)
        self.N = layers[0][0].shape[0]
        self.is_double = layers[0][1].dtype.itemsize == 8
        self.loss_kind = loss_kind
        self.smoothing = smoothing
        self.ptr = <uintptr_t*>malloc(self.n_layers * N_FIELDS * sizeof(uintptr_t))
        self.dims = <Py_ssize_t*>malloc(self.n_layers * 2 * sizeof(Py_ssize_t))
        self.acts = <int*>malloc(self.n_layers * sizeof(int))
        self.alphas = <double*>malloc(self.n_layers * sizeof(double))
        self.biases = <bint*>malloc(self.n_layers * sizeof(bint))
        if not (self.ptr and self.dims and self.acts and self.alphas and self.biases):
            raise MemoryError()
        for l, layer in enumerate(layers):
            for j in range(N_FIELDS):
                self.ptr[l * N_FIELDS + j] = _address(layer[j])
            self.dims[2 * l] = layer[1].shape[1]
            self.dims[2 * l + 1] = layer[1].shape[0]
            self.acts[l] = layer[9]
            self.alphas[l] = layer[10]
            self.biases[l] = layer[2] is not None
        self.T, self.labels, self.w = _address(T), _address(labels), _address(w)
        self.dout, self.row_loss = _address(dout), _address(row_loss)
        self.grad, self.partials, self.n_grad = _address(grad), _address(partials), grad.shape[0]
        self._keep = (layers, T, labels, w, dout, row_loss, grad, partials)

    def __dealloc__(self):
        free(self.ptr)
        free(self.dims)
        free(self.acts)
        free(self.alphas)
        free(self.biases)

    def run(self, double scale):
        """One forward + loss + backward; returns the loss (scale·Σ wᵢℓᵢ) and leaves the
        gradient arena's sum of squares in ``grad_sum_squares``."""
        cdef double total
        with nogil:
            if self.is_double:
                total = _chain_run(<double*>NULL, self.n_layers, self.N, self.ptr, self.dims,
                                   self.acts, self.alphas, self.biases, self.loss_kind,
                                   self.smoothing, self.T, self.labels, self.w, self.dout,
                                   self.row_loss, scale, self.grad, self.n_grad,
                                   self.partials, &self.grad_sum_squares)
            else:
                total = _chain_run(<float*>NULL, self.n_layers, self.N, self.ptr, self.dims,
                                   self.acts, self.alphas, self.biases, self.loss_kind,
                                   self.smoothing, self.T, self.labels, self.w, self.dout,
                                   self.row_loss, scale, self.grad, self.n_grad,
                                   self.partials, &self.grad_sum_squares)
        return total
