# The gradient's sum of squares (for the global norm), shared by the optimizer module and
# the fused Dense step so both give the same bits.

from cython cimport floating
from cython.parallel cimport prange

from ._parallel cimport threads_for

cdef enum:
    # Squares are summed in double over fixed blocks of NORM_BLOCK elements, each with
    # NORM_LANES independent accumulators; partial sums are merged in block order.
    NORM_BLOCK = 4096
    NORM_LANES = 16
    NORM_PER_THREAD = 131072


cdef inline double _block_sum_squares(const floating* g, Py_ssize_t lo,
                                      Py_ssize_t hi) noexcept nogil:
    # NORM_LANES independent double accumulators in a fixed order: the adds are not
    # reassociated (no -ffast-math), so this is the same sum on every run and every
    # thread count, and the lanes give the vectorizer and the FPU independent chains.
    cdef double acc[NORM_LANES]
    cdef double x, total
    cdef Py_ssize_t i, k
    for k in range(NORM_LANES):
        acc[k] = 0
    i = lo
    while i + NORM_LANES <= hi:
        for k in range(NORM_LANES):
            x = g[i + k]
            acc[k] = acc[k] + x * x
        i = i + NORM_LANES
    while i < hi:
        x = g[i]
        acc[0] = acc[0] + x * x
        i = i + 1
    k = NORM_LANES
    while k > 1:
        k = k // 2
        for i in range(k):
            acc[i] = acc[i] + acc[i + k]
    total = acc[0]
    return total


cdef inline double _sum_squares(const floating* g, Py_ssize_t n,
                                double* partials, int n_threads) noexcept nogil:
    """Σ g² over n elements; ``partials`` holds ceil(n / NORM_BLOCK) doubles. The block
    edges depend only on n: the result is bitwise the same for any thread count."""
    cdef Py_ssize_t nb = (n + NORM_BLOCK - 1) // NORM_BLOCK, b, hi
    cdef int nt = threads_for(n, NORM_PER_THREAD, n_threads)
    cdef double total = 0
    for b in prange(nb, num_threads=nt, schedule='static'):
        hi = (b + 1) * NORM_BLOCK
        if hi > n:
            hi = n
        partials[b] = _block_sum_squares(g, b * NORM_BLOCK, hi)
    for b in range(nb):
        total = total + partials[b]
    return total
