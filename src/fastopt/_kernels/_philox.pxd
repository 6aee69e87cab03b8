# Declarations of philox.h (Philox4x32-10 and the dropout mask helpers built on it),
# shared by dropout.pyx and norm.pyx (which fuses dropout into batch norm).

from cython cimport floating
from libc.stdint cimport uint16_t, uint32_t, uint64_t

cdef extern from "philox.h" nogil:
    ctypedef struct dropout_key:
        uint32_t layer
        uint32_t step_lo
        uint32_t step_hi
        uint32_t seed_lo
        uint32_t seed_hi
        uint32_t threshold
    enum: DROPOUT_CHUNK
    void philox4x32_10(const uint32_t* ctr, const uint32_t* key, uint32_t* out) noexcept
    void philox_fill(uint32_t* out, uint32_t first, int n_blocks, uint32_t c1,
                     uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) noexcept
    void philox_fill_scalar(uint32_t* out, uint32_t first, int n_blocks, uint32_t c1,
                            uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) noexcept
    void dropout_chunk_bits(uint16_t* bits, uint64_t e0, int n,
                            const dropout_key* k) noexcept
    void dropout_expand_f(float* m, const uint16_t* bits, int n, float scale) noexcept
    void dropout_expand_d(double* m, const uint16_t* bits, int n, double scale) noexcept


cdef inline dropout_key make_key(uint64_t seed, uint64_t step, uint32_t layer,
                                 uint32_t threshold) noexcept nogil:
    cdef dropout_key k
    k.layer = layer
    k.step_lo = <uint32_t>step
    k.step_hi = <uint32_t>(step >> 32)
    k.seed_lo = <uint32_t>seed
    k.seed_hi = <uint32_t>(seed >> 32)
    k.threshold = threshold
    return k


cdef inline void expand_mask(floating* m, const uint16_t* bits, int n,
                             floating scale) noexcept nogil:
    """m[j] = scale where bit j of the chunk is set, else 0 (room for 64 values)."""
    if floating is float:
        dropout_expand_f(m, bits, n, scale)
    else:
        dropout_expand_d(m, bits, n, scale)
