# Batch normalization (PyTorch's BatchNorm1d), optionally fused with the activation
# and the dropout that follow it: shared by the per-layer kernels (norm.pyx) and the
# compiled training step (step.pyx), so both run the same code.
#
# and the dropout that follow it.
#
# Training forward, per feature j over the N rows of X:
#     μ = Σᵢ xᵢ / N,  σ² = Σᵢ (xᵢ − μ)² / N   (biased; float64, see "Statistics" below)
#     σ⁻¹ = 1 / √(σ² + eps)
#     z = x·a + c,  a = γ·σ⁻¹,  c = β − μ·a       (x̂ = (x − μ)·σ⁻¹,  z = γ·x̂ + β)
#     y = act(z) · m                     (m: dropout multiplier, 1/(1 − q) or 0; see
#                                         dropout.pyx; m = 1 without dropout)
#     running_mean ← (1 − momentum)·running_mean + momentum·μ
#     running_var  ← (1 − momentum)·running_var  + momentum·σ²·N/(N − 1)
# Eval forward: the same z and act with μ, σ² from the running statistics (dropout is
# the identity).
# Backward (g = ∂L/∂z = dy · m · act'(z), z recomputed from x):
#     dβ = Σᵢ g,   dγ = Σᵢ g·x̂,   dx = (γ·σ⁻¹/N) · (N·g − dβ − x̂·dγ)
#
# Reductions run over FIXED row blocks (their size depends only on N): each block's
# per-feature partials go to a workspace row, and the partials are merged in block order.
# Results are therefore bitwise identical for any thread count. Every pass reads whole
# rows, contiguously.
#
# Statistics: each block is summed in ONE pass, shifted by its own first row K:
# s = Σ(x − K), q = Σ(x − K)² in float64 (x − K is exact in float64 for float32 x). The
# block's mean is K + s/n and its M2 = Σ(x − mean)² = q − s²/n. Because K is one of the
# block's values, n(mean − K)² ≤ n·M2, so the subtraction loses at most log2(n + 1) of
# float64's 53 bits (Chan, Golub, LeVeque 1983, "shifted data"): blocks have 16 rows up
# to N = 1024 and about N/32 beyond, so even a 10^6-row batch keeps 39 bits, more than a
# float32 result can show. Two passes would read every block a second time for nothing.
# Blocks are then merged by Chan et al.'s pairwise update, in block order.
# The backward sums Σg and Σg·x̂ are accumulated in the input's precision over at most
# 16 rows, then added into float64 block partials.
#
# Why not column stripes (each feature summed over all rows by one thread, kept in L2
# between passes): with a power-of-two row stride (d = 1024, 2048) a stripe's rows map
# to a handful of cache sets, so it does not stay in L1 or L2 and every extra pass over
# it went to L3 with strided access: measured 2-3x slower than the row-block passes on
# (512, 2048) float32.
#
# Memory traffic, forward: x twice (statistics, output), y once. Backward: x twice, dy
# once, g = ∂L/∂z written to dX and read back once, dx once. The dropout mask is read as
# bits.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdint cimport uint32_t, uint64_t

from ._parallel cimport threads_for
from ._philox cimport dropout_key, expand_mask, span_bits
from ._activations cimport (ELU, LEAKY_RELU, RELU, relu, leaky_relu, elu,
                           relu_grad, leaky_relu_grad, elu_grad)

cdef enum:
    # Elements under which the kernels stay on one thread.
    NORM_PER_THREAD = 32768
    # Columns per chunk of a row: the stack buffer for the expanded mask. Large enough
    # that the per-chunk set-up is paid rarely.
    CHUNK = 256
    # Rows per reduction block at least, and blocks at most.
    MIN_BLOCK_ROWS = 16
    MAX_BLOCKS = 64
    # Rows summed in the input's precision before going into the float64 partials.
    FLUSH_ROWS = 16
    # Features per thread's share when the block partials are merged.
    MERGE_COLUMNS = 256


cdef inline Py_ssize_t _block_rows(Py_ssize_t N) noexcept nogil:
    # Depends only on N, never on the thread count.
    cdef Py_ssize_t r = MIN_BLOCK_ROWS
    while N > MAX_BLOCKS * r:
        r = r * 2
    return r



# ---- activation on a row chunk: one loop per case so each vectorizes ----

cdef inline void _affine_act(const floating* x, const floating* a, const floating* c,
                             floating* y, Py_ssize_t n, int act,
                             floating alpha) noexcept nogil:
    """y[j] = act(x[j]·a[j] + c[j])."""
    cdef Py_ssize_t j
    if act == RELU:
        for j in range(n):
            y[j] = relu(x[j] * a[j] + c[j])
    elif act == LEAKY_RELU:
        for j in range(n):
            y[j] = leaky_relu(x[j] * a[j] + c[j], alpha)
    elif act == ELU:
        for j in range(n):
            y[j] = elu(x[j] * a[j] + c[j], alpha)
    else:
        for j in range(n):
            y[j] = x[j] * a[j] + c[j]


cdef inline void _act_grad_sums(const floating* x, const floating* dy, const floating* m,
                                const floating* a, const floating* c, const floating* mu,
                                const floating* inv, floating* g, floating* sg,
                                floating* sgx, Py_ssize_t n, int act,
                                floating alpha) noexcept nogil:
    """g[j] = dy[j]·m[j]·act'(z), z = x[j]·a[j] + c[j] recomputed exactly as forward
    did; sg[j] += g[j], sgx[j] += g[j]·x̂[j] with x̂ = (x − μ)·σ⁻¹, the subtraction
    first (x·σ⁻¹ − μ·σ⁻¹, or Σg·x − μ·Σg, cancels catastrophically when |μ| ≫ σ).
    dy[j] is read before the branch: a conditional load would not vectorize."""
    cdef Py_ssize_t j
    cdef floating u
    if act == RELU:
        for j in range(n):
            u = relu_grad(dy[j] * m[j], x[j] * a[j] + c[j])
            g[j] = u
            sg[j] += u
            sgx[j] += u * ((x[j] - mu[j]) * inv[j])
    elif act == LEAKY_RELU:
        for j in range(n):
            u = leaky_relu_grad(dy[j] * m[j], x[j] * a[j] + c[j], alpha)
            g[j] = u
            sg[j] += u
            sgx[j] += u * ((x[j] - mu[j]) * inv[j])
    elif act == ELU:
        for j in range(n):
            u = elu_grad(dy[j] * m[j], elu(x[j] * a[j] + c[j], alpha), alpha)
            g[j] = u
            sg[j] += u
            sgx[j] += u * ((x[j] - mu[j]) * inv[j])
    else:
        for j in range(n):
            u = dy[j] * m[j]
            g[j] = u
            sg[j] += u
            sgx[j] += u * ((x[j] - mu[j]) * inv[j])


# ---- training forward ----

cdef inline void _block_stats(const floating* X, double* mean, double* m2, double* shift,
                       Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t d) noexcept nogil:
    """mean and M2 = Σ (x − mean)² per feature of rows r0..r1−1, in one pass shifted by
    row r0 (module docstring); ``shift`` is d doubles of scratch. Four rows per sweep
    over the accumulators: one load and store of each per four rows. (Column chunks
    walked down the rows, to keep the accumulators in L1, measured no faster: whole
    rows stream better.)"""
    cdef Py_ssize_t i = r0, j
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    cdef double t0, t1, t2, t3, k, n = r1 - r0
    x0 = X + r0 * d
    for j in range(d):
        shift[j] = x0[j]
        mean[j] = 0
        m2[j] = 0
    while i + 4 <= r1:
        x0 = X + i * d
        x1 = x0 + d
        x2 = x1 + d
        x3 = x2 + d
        for j in range(d):
            k = shift[j]
            t0 = <double>x0[j] - k
            t1 = <double>x1[j] - k
            t2 = <double>x2[j] - k
            t3 = <double>x3[j] - k
            mean[j] += (t0 + t1) + (t2 + t3)
            m2[j] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
        i += 4
    while i < r1:
        x0 = X + i * d
        for j in range(d):
            t0 = <double>x0[j] - shift[j]
            mean[j] += t0
            m2[j] += t0 * t0
        i += 1
    for j in range(d):
        t0 = mean[j]
        mean[j] = shift[j] + t0 / n
        m2[j] = max(m2[j] - t0 * (t0 / n), 0.0)


cdef inline void _affine_act_mask(const floating* x, const floating* a,
                                  const floating* c, const floating* m, floating* y,
                                  Py_ssize_t n, int act, floating alpha) noexcept nogil:
    """y[j] = act(x[j]·a[j] + c[j]) · m[j]."""
    cdef Py_ssize_t j
    if act == RELU:
        for j in range(n):
            y[j] = relu(x[j] * a[j] + c[j]) * m[j]
    elif act == LEAKY_RELU:
        for j in range(n):
            y[j] = leaky_relu(x[j] * a[j] + c[j], alpha) * m[j]
    elif act == ELU:
        for j in range(n):
            y[j] = elu(x[j] * a[j] + c[j], alpha) * m[j]
    else:
        for j in range(n):
            y[j] = (x[j] * a[j] + c[j]) * m[j]


cdef inline void _output_row(const floating* x, floating* y, const floating* a,
                      const floating* c, Py_ssize_t d, int act, floating alpha,
                      uint32_t* bits, uint64_t e0, const dropout_key* key,
                      floating scale, bint dropout) noexcept nogil:
    cdef floating m[CHUNK]
    cdef Py_ssize_t c0 = 0, n
    if not dropout:
        _affine_act(x, a, c, y, d, act, alpha)
        return
    while c0 < d:
        n = min(<Py_ssize_t>CHUNK, d - c0)
        span_bits(bits + c0 // 32, e0 + <uint64_t>c0, n, key)
        expand_mask(m, bits + c0 // 32, <int>n, scale)
        _affine_act_mask(x + c0, a + c0, c + c0, m, y + c0, n, act, alpha)
        c0 += n



cdef inline Py_ssize_t _n_blocks(Py_ssize_t N) noexcept nogil:
    cdef Py_ssize_t r = _block_rows(N)
    return (N + r - 1) // r if N > 0 else 1


cdef inline void _bn_forward_train(const floating* x_ptr, const floating* gamma,
                                   const floating* beta, floating* y_ptr, double* mean,
                                   double* invstd, floating* running_mean,
                                   floating* running_var, double* partial, floating* coef,
                                   double momentum, double eps, int act, floating alpha_f,
                                   uint32_t* bits_ptr, Py_ssize_t wpr, const dropout_key* key,
                                   floating scale_f, bint dropout, Py_ssize_t N,
                                   Py_ssize_t d, int n_threads) noexcept nogil:
    """Training forward over N ≥ 2 rows of d features. Workspace: ``partial``
    (_n_blocks(N), 4, d) float64, ``coef`` (6, d): rows 0 and 1 receive a and c.
    With ``dropout`` the mask bits go to ``bits_ptr`` (N rows of ``wpr`` words)."""
    if N == 0 or d == 0:
        return
    # (M2 is held in invstd until the finish turns it into σ⁻¹.)
    _bn_local_stats(x_ptr, partial, mean, invstd, N, d, n_threads)
    _bn_finish_output(x_ptr, gamma, beta, y_ptr, mean, invstd, running_mean, running_var,
                      coef, momentum, eps, act, alpha_f, bits_ptr, wpr, key, scale_f,
                      dropout, N, d, N, 0, n_threads)


cdef inline void _bn_forward_eval(const floating* x_ptr, const floating* gamma,
                                  const floating* beta, const floating* running_mean,
                                  const floating* running_var, floating* coef,
                                  floating* y_ptr, double eps, int act, floating alpha_f,
                                  Py_ssize_t N, Py_ssize_t d, int n_threads) noexcept nogil:
    """Eval forward: Y = act(X·a + c) with a = γ/√(running_var + eps),
    c = β − running_mean·a (per feature, in float64, into coef rows 0 and 1); one
    pass over X."""
    cdef Py_ssize_t i, j
    cdef int nt = threads_for(N * d, NORM_PER_THREAD, n_threads)
    cdef double inv
    for j in range(d):
        inv = 1.0 / sqrt(<double>running_var[j] + eps)
        coef[j] = <floating>(gamma[j] * inv)
        coef[d + j] = <floating>(beta[j] - running_mean[j] * (gamma[j] * inv))
    for i in prange(N, num_threads=nt, schedule='static'):
        _affine_act(x_ptr + i * d, coef, coef + d, y_ptr + i * d, d, act, alpha_f)

cdef inline void _add_into(double* total, floating* part, Py_ssize_t d) noexcept nogil:
    """total += part (float64), part ← 0."""
    cdef Py_ssize_t j
    for j in range(d):
        total[j] += part[j]
        part[j] = 0


cdef inline void _block_grad_sums(const floating* X, const floating* dY, floating* G,
                           const floating* a, const floating* c, const floating* mu,
                           const floating* inv, double* sg, double* sgx, floating* scratch,
                           Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t d, int act,
                           floating alpha, const uint32_t* bits, Py_ssize_t wpr,
                           floating scale, bint dropout) noexcept nogil:
    """G = dy·m·act'(z) on the block's rows (into dX, which the dx pass then reads)
    and its per-feature sums Σg, Σg·x̂: summed in the input's precision over FLUSH_ROWS
    rows in ``scratch`` (2·d values), then into the float64 ``sg`` and ``sgx``.
    Whole rows, one after another: walking column chunks down the block's rows keeps
    the per-feature arrays in L1 but measured 1.5x slower (16 interleaved row streams
    per array defeat the prefetcher)."""
    cdef Py_ssize_t i, j, c0, n
    cdef floating* ag = scratch
    cdef floating* agx = scratch + d
    cdef floating m[CHUNK]
    for j in range(CHUNK):
        m[j] = 1
    for j in range(d):
        sg[j] = 0
        sgx[j] = 0
        ag[j] = 0
        agx[j] = 0
    for i in range(r0, r1):
        c0 = 0
        while c0 < d:
            n = min(<Py_ssize_t>CHUNK, d - c0)
            if dropout:
                expand_mask(m, bits + i * wpr + c0 // 32, <int>n, scale)
            _act_grad_sums(X + i * d + c0, dY + i * d + c0, m, a + c0, c + c0, mu + c0,
                           inv + c0, G + i * d + c0, ag + c0, agx + c0, n, act, alpha)
            c0 += n
        if (i - r0) % FLUSH_ROWS == FLUSH_ROWS - 1 or i == r1 - 1:
            _add_into(sg, ag, d)
            _add_into(sgx, agx, d)


cdef inline void _dx_row(const floating* x, floating* g, const floating* a, const floating* mu,
                  const floating* q, const floating* r, Py_ssize_t d) noexcept nogil:
    """g ← a·g + (q·(x − μ) + r) = γσ⁻¹/N·(N·g − Σg − x̂·Σg·x̂), in place, with
    q = −γσ⁻²/N·Σg·x̂ and r = −γσ⁻¹/N·Σg (float64, then rounded): four per-feature
    arrays instead of five. x − μ is taken first: folding μ into r as well (p·x + r)
    cancels by |μ|/σ and failed the N = 2 reference test without FMA hardware."""
    cdef Py_ssize_t j
    for j in range(d):
        g[j] = a[j] * g[j] + (q[j] * (x[j] - mu[j]) + r[j])



cdef inline void _sum_blocks(double* partial, Py_ssize_t n_blocks, Py_ssize_t d,
                             Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """partial[0, k, j] += partial[b, k, j] for b = 1, 2, … in order (k = 0, 1)."""
    cdef Py_ssize_t b, j
    cdef double* pb
    for b in range(1, n_blocks):
        pb = partial + b * 4 * d
        for j in range(j0, j1):
            partial[j] = partial[j] + pb[j]
            partial[d + j] = partial[d + j] + pb[d + j]


cdef inline void _bn_backward(const floating* x_ptr, const floating* dy_ptr,
                              const floating* gamma, const double* mean,
                              const double* invstd, double* partial, floating* coef,
                              floating* dx_ptr, floating* dgamma, floating* dbeta, int act,
                              floating alpha_f, const uint32_t* bits_ptr, Py_ssize_t wpr,
                              floating scale_f, bint dropout, bint need_dx, Py_ssize_t N,
                              Py_ssize_t d, int n_threads) noexcept nogil:
    """Training backward from the forward's ``mean``/``invstd``, its a and c (``coef``
    rows 0 and 1, as _bn_forward_train left them) and X: dgamma, dbeta, and dX when
    ``need_dx``. With ``dropout`` the mask comes from the forward's bits. Workspace:
    ``partial`` as in forward, ``coef`` rows 2..5. dX (also the scratch for g) may not
    alias dY or X."""
    if N == 0 or d == 0:
        return
    _bn_grad_sums(x_ptr, dy_ptr, mean, invstd, partial, coef, dx_ptr, dgamma, dbeta, act,
                  alpha_f, bits_ptr, wpr, scale_f, dropout, N, d, n_threads)
    if need_dx:
        _bn_dx(x_ptr, gamma, invstd, partial, coef, dx_ptr, N, d, N, n_threads)


# ---- synchronized batch norm (data-parallel training, fastopt.distributed) ----
#
# The training forward and backward above, split where the statistics of the whole
# GLOBAL batch are needed: each rank computes its share's (mean, M2) per feature
# (``_bn_local_stats``), the ranks' triples (count, mean, M2) are merged in rank order by
# the caller (Chan et al.'s update, the same one the block merge uses), and
# ``_bn_finish_output`` normalizes with the merged numbers; backward, ``_bn_grad_sums``
# leaves the share's Σg and Σg·x̂, the caller sums them over the ranks, and ``_bn_dx``
# finishes dX with the global sums and the global row count. The single-process
# functions above are these same pieces with the global batch = the local one.

cdef inline void _merge_blocks(const double* partial, double* mean, double* m2,
                               Py_ssize_t R, Py_ssize_t N, Py_ssize_t n_blocks, Py_ssize_t d,
                               Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """Features j0..j1−1: Chan et al.'s pairwise merge of the blocks' (mean, M2), in
    block order. ``partial`` is (n_blocks, 4, d): rows 0 and 1 of each block hold its
    mean and M2."""
    cdef Py_ssize_t b, j
    cdef double n_a = min(R, N), n_b, n_ab, delta
    cdef const double* pb
    for j in range(j0, j1):
        mean[j] = partial[j]
        m2[j] = partial[d + j]
    for b in range(1, n_blocks):
        n_b = min(b * R + R, N) - b * R
        n_ab = n_a + n_b
        pb = partial + b * 4 * d
        for j in range(j0, j1):
            delta = pb[j] - mean[j]
            mean[j] = mean[j] + delta * (n_b / n_ab)
            m2[j] = m2[j] + pb[d + j] + delta * delta * (n_a * n_b / n_ab)
        n_a = n_ab


cdef inline void _bn_local_stats(const floating* x_ptr, double* partial, double* mean,
                                 double* m2, Py_ssize_t N, Py_ssize_t d, int n_threads) noexcept nogil:
    """mean and M2 per feature of N ≥ 0 rows (blocks as in _bn_forward_train, merged in
    block order); N = 0 gives zeros."""
    cdef Py_ssize_t R = _block_rows(N)
    cdef Py_ssize_t n_blocks = (N + R - 1) // R, b, j
    cdef int nt = threads_for(N * d, NORM_PER_THREAD, n_threads)
    if N == 0:
        for j in range(d):
            mean[j] = 0
            m2[j] = 0
        return
    if nt <= 1 or n_blocks == 1:
        for b in range(n_blocks):
            _block_stats(x_ptr, partial + b * 4 * d, partial + (b * 4 + 1) * d,
                         partial + (b * 4 + 2) * d, b * R, min(b * R + R, N), d)
    else:
        for b in prange(n_blocks, num_threads=nt, schedule='static'):
            _block_stats(x_ptr, partial + b * 4 * d, partial + (b * 4 + 1) * d,
                         partial + (b * 4 + 2) * d, b * R, min(b * R + R, N), d)
    # Per feature, so feature ranges can go to different threads: each feature's blocks
    # are still merged in block order.
    if nt <= 1:
        _merge_blocks(partial, mean, m2, R, N, n_blocks, d, 0, d)
    else:
        for b in prange((d + MERGE_COLUMNS - 1) // MERGE_COLUMNS, num_threads=nt,
                        schedule='static'):
            _merge_blocks(partial, mean, m2, R, N, n_blocks, d, b * MERGE_COLUMNS,
                          min(b * MERGE_COLUMNS + MERGE_COLUMNS, d))


cdef inline void _bn_finish_output(const floating* x_ptr, const floating* gamma,
                                   const floating* beta, floating* y_ptr,
                                   const double* mean, double* invstd,
                                   floating* running_mean, floating* running_var,
                                   floating* coef, double momentum, double eps, int act,
                                   floating alpha_f, uint32_t* bits_ptr, Py_ssize_t wpr,
                                   const dropout_key* key, floating scale_f, bint dropout,
                                   Py_ssize_t N, Py_ssize_t d, Py_ssize_t N_global,
                                   Py_ssize_t row0, int n_threads) noexcept nogil:
    """From the GLOBAL batch's mean and M2 (M2 in ``invstd`` on entry, σ⁻¹ on return):
    a and c (coef rows 0, 1), the running statistics (with N_global), and the output of
    this rank's N rows, whose dropout masks are those of global rows row0.."""
    cdef Py_ssize_t i, j
    cdef int nt = threads_for(N * d, NORM_PER_THREAD, n_threads)
    cdef floating* a_ptr = coef
    cdef floating* c_ptr = coef + d
    cdef double var, inv
    for j in range(d):
        var = invstd[j] / N_global
        inv = 1.0 / sqrt(var + eps)
        invstd[j] = inv
        a_ptr[j] = <floating>(gamma[j] * inv)
        c_ptr[j] = <floating>(beta[j] - mean[j] * (gamma[j] * inv))
        running_mean[j] = <floating>((1 - momentum) * running_mean[j] + momentum * mean[j])
        running_var[j] = <floating>((1 - momentum) * running_var[j]
                                    + momentum * var * N_global / (N_global - 1))
    if N == 0:
        return
    for i in prange(N, num_threads=nt, schedule='static'):
        _output_row(x_ptr + i * d, y_ptr + i * d, a_ptr, c_ptr, d, act, alpha_f,
                    bits_ptr + i * wpr, <uint64_t>((row0 + i) * d), key, scale_f, dropout)


cdef inline void _bn_grad_sums(const floating* x_ptr, const floating* dy_ptr,
                               const double* mean, const double* invstd, double* partial,
                               floating* coef, floating* dx_ptr, floating* dgamma,
                               floating* dbeta, int act, floating alpha_f,
                               const uint32_t* bits_ptr, Py_ssize_t wpr, floating scale_f,
                               bint dropout, Py_ssize_t N, Py_ssize_t d, int n_threads) noexcept nogil:
    """The first half of _bn_backward on this rank's N ≥ 0 rows: g into dX, the share's
    Σg and Σg·x̂ into partial[0, 0] and partial[0, 1] (float64) and, rounded, into
    dbeta and dgamma (the share's part of the gradient arena, summed over the ranks with
    the rest of it)."""
    cdef Py_ssize_t R = _block_rows(N)
    cdef Py_ssize_t n_blocks = (N + R - 1) // R, b, j
    cdef int nt = threads_for(N * d, NORM_PER_THREAD, n_threads)
    cdef floating* a_ptr = coef
    cdef floating* c_ptr = coef + d
    cdef floating* mu_ptr = coef + 2 * d
    cdef floating* inv_ptr = coef + 3 * d
    for j in range(d):
        mu_ptr[j] = <floating>mean[j]
        inv_ptr[j] = <floating>invstd[j]
    if N == 0:
        for j in range(d):
            partial[j] = 0
            partial[d + j] = 0
            dbeta[j] = 0
            dgamma[j] = 0
        return
    if nt <= 1 or n_blocks == 1:
        for b in range(n_blocks):
            _block_grad_sums(x_ptr, dy_ptr, dx_ptr, a_ptr, c_ptr, mu_ptr, inv_ptr,
                             partial + b * 4 * d, partial + (b * 4 + 1) * d,
                             <floating*>(partial + (b * 4 + 2) * d), b * R,
                             min(b * R + R, N), d, act, alpha_f, bits_ptr, wpr, scale_f,
                             dropout)
    else:
        for b in prange(n_blocks, num_threads=nt, schedule='static'):
            _block_grad_sums(x_ptr, dy_ptr, dx_ptr, a_ptr, c_ptr, mu_ptr, inv_ptr,
                             partial + b * 4 * d, partial + (b * 4 + 1) * d,
                             <floating*>(partial + (b * 4 + 2) * d), b * R,
                             min(b * R + R, N), d, act, alpha_f, bits_ptr, wpr, scale_f,
                             dropout)
    # Block order, into block 0's row, feature ranges on different threads (a loop
    # over blocks per feature strides by 4·d doubles: ~10% of the whole backward).
    if nt <= 1:
        _sum_blocks(partial, n_blocks, d, 0, d)
    else:
        for b in prange((d + MERGE_COLUMNS - 1) // MERGE_COLUMNS, num_threads=nt,
                        schedule='static'):
            _sum_blocks(partial, n_blocks, d, b * MERGE_COLUMNS,
                        min(b * MERGE_COLUMNS + MERGE_COLUMNS, d))
    for j in range(d):
        dbeta[j] = <floating>partial[j]
        dgamma[j] = <floating>partial[d + j]


cdef inline void _bn_dx(const floating* x_ptr, const floating* gamma, const double* invstd,
                        const double* partial, floating* coef, floating* dx_ptr,
                        Py_ssize_t N, Py_ssize_t d, Py_ssize_t N_global, int n_threads) noexcept nogil:
    """The second half: dX of this rank's rows from the GLOBAL Σg, Σg·x̂ (partial[0, 0]
    and partial[0, 1], summed over the ranks by the caller) and the global row count."""
    cdef Py_ssize_t i, j
    cdef int nt = threads_for(N * d, NORM_PER_THREAD, n_threads)
    cdef floating* a_ptr = coef
    cdef floating* mu_ptr = coef + 2 * d
    cdef floating* q_ptr = coef + 4 * d
    cdef floating* r_ptr = coef + 5 * d
    cdef double k
    for j in range(d):
        k = gamma[j] * invstd[j] / N_global
        q_ptr[j] = <floating>(-k * partial[d + j] * invstd[j])
        r_ptr[j] = <floating>(-k * partial[j])
    if N == 0:
        return
    for i in prange(N, num_threads=nt, schedule='static'):
        _dx_row(x_ptr + i * d, dx_ptr + i * d, a_ptr, mu_ptr, q_ptr, r_ptr, d)
