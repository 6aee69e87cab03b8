# Inverted dropout over rows (dropout.pyx documents the mask): shared by the per-layer
# kernels (dropout.pyx) and the compiled training step (step.pyx).

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t

from ._parallel cimport threads_for
from ._philox cimport dropout_key, expand_mask, dropout_chunk_bits, DROPOUT_CHUNK

cdef enum:
    # Elements under which dropout stays on one thread: generating the mask costs
    # ~1 ns per element, so a second thread pays off early.
    DROPOUT_PER_THREAD = 8192


cdef inline void _forward_row(const floating* x, floating* y, uint32_t* bits, uint64_t e0,
                              Py_ssize_t d, const dropout_key* key,
                              floating scale) noexcept nogil:
    cdef floating m[DROPOUT_CHUNK]
    cdef Py_ssize_t c0 = 0, j, n
    while c0 < d:
        n = min(<Py_ssize_t>DROPOUT_CHUNK, d - c0)
        dropout_chunk_bits(bits + c0 // 32, e0 + <uint64_t>c0, <int>n, key)
        expand_mask(m, bits + c0 // 32, <int>n, scale)
        for j in range(n):
            y[c0 + j] = x[c0 + j] * m[j]
        c0 += n


cdef inline void _apply_row(const floating* dy, floating* dx, const uint32_t* bits,
                            Py_ssize_t d, floating scale) noexcept nogil:
    cdef floating m[DROPOUT_CHUNK]
    cdef Py_ssize_t c0 = 0, j, n
    while c0 < d:
        n = min(<Py_ssize_t>DROPOUT_CHUNK, d - c0)
        expand_mask(m, bits + c0 // 32, <int>n, scale)
        for j in range(n):
            dx[c0 + j] = dy[c0 + j] * m[j]
        c0 += n


cdef inline void _dropout_forward(const floating* x, floating* y, uint32_t* bits,
                                  Py_ssize_t wpr, const dropout_key* key, floating scale,
                                  Py_ssize_t N, Py_ssize_t d, int n_threads) noexcept nogil:
    """y = x · m over N rows of d; the mask's bits go to ``bits`` (N rows of wpr words)."""
    _dropout_forward_at(x, y, bits, wpr, key, scale, N, d, 0, n_threads)


cdef inline void _dropout_forward_at(const floating* x, floating* y, uint32_t* bits,
                                     Py_ssize_t wpr, const dropout_key* key, floating scale,
                                     Py_ssize_t N, Py_ssize_t d,
                                     Py_ssize_t row0, int n_threads) noexcept nogil:
    """``_dropout_forward`` on rows that are rows row0.. of the batch the mask is drawn
    for (data-parallel training: a rank's share of the global batch takes the masks the
    single process gives those rows; element e = (row0 + i)·d + j)."""
    cdef Py_ssize_t i
    cdef int nt = threads_for(N * d, DROPOUT_PER_THREAD, n_threads)
    for i in prange(N, num_threads=nt, schedule='static'):
        _forward_row(x + i * d, y + i * d, bits + i * wpr, <uint64_t>((row0 + i) * d), d,
                     key, scale)


cdef inline void _dropout_backward(const floating* dy, const uint32_t* bits, Py_ssize_t wpr,
                                   floating* dx, floating scale, Py_ssize_t N,
                                   Py_ssize_t d, int n_threads) noexcept nogil:
    """dx = dy · m, m from the stored bits (dx may be dy)."""
    cdef Py_ssize_t i
    cdef int nt = threads_for(N * d, 4 * DROPOUT_PER_THREAD, n_threads)
    for i in prange(N, num_threads=nt, schedule='static'):
        _apply_row(dy + i * d, dx + i * d, bits + i * wpr, d, scale)
