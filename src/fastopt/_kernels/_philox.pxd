# Declarations of philox.h (Philox4x32-10 and the dropout mask helpers built on it),
# shared by dropout.pyx and norm.pyx (which fuses dropout into batch norm).

from cython cimport floating
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "philox.h" nogil:
    ctypedef struct dropout_key:
        uint32_t threshold
    enum: DROPOUT_CHUNK
    dropout_key dropout_make_key(uint64_t seed, uint64_t step, uint32_t layer,
                                 uint32_t threshold) noexcept
    void philox4x32_10(const uint32_t* ctr, const uint32_t* key, uint32_t* out) noexcept
    void philox_fill(uint32_t* out, uint32_t first, int n_blocks, uint32_t c1,
                     uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) noexcept
    void philox_fill_scalar(uint32_t* out, uint32_t first, int n_blocks, uint32_t c1,
                            uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) noexcept
    void dropout_chunk_bits(uint32_t* bits, uint64_t e0, int n,
                            const dropout_key* k) noexcept
    void dropout_bits_general(uint32_t* bits, uint64_t e0, int n,
                              const dropout_key* k) noexcept
    void dropout_expand_f(float* m, const uint32_t* bits, int n, float scale) noexcept
    void dropout_expand_d(double* m, const uint32_t* bits, int n, double scale) noexcept


cdef inline dropout_key make_key(uint64_t seed, uint64_t step, uint32_t layer,
                                 uint32_t threshold) noexcept nogil:
    return dropout_make_key(seed, step, layer, threshold)


cdef inline void expand_mask(floating* m, const uint32_t* bits, int n,
                             floating scale) noexcept nogil:
    """m[t] = scale where column t of the chunk is kept, else 0 (m has room for n
    rounded up to a multiple of 8)."""
    if floating is float:
        dropout_expand_f(m, bits, n, scale)
    else:
        dropout_expand_d(m, bits, n, scale)


cdef inline void span_bits(uint32_t* bits, uint64_t e0, Py_ssize_t n,
                           const dropout_key* key) noexcept nogil:
    """The mask bits of n columns of a row whose first element is e0 (32 per word),
    DROPOUT_CHUNK columns per generator call."""
    cdef Py_ssize_t c0 = 0
    while c0 < n:
        dropout_chunk_bits(bits + c0 // 32, e0 + <uint64_t>c0,
                           <int>min(<Py_ssize_t>DROPOUT_CHUNK, n - c0), key)
        c0 += DROPOUT_CHUNK
