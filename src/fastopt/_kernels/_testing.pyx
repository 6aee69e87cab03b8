"""Entry points for the tests and benchmarks only: the pieces under the shipped kernels
(the tiled GEMM and its grid, the Philox generator, the dropout mask's SIMD and general
paths, the mask alone, and backward with the mask generated again), exposed so they can
be checked against independent references and timed on their own. Nothing in fastopt
imports this module.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t

from ._parallel cimport threads_for
from ._dense_core cimport Tiling, _tiling, _gemm_tiles
from ._dropout_core cimport DROPOUT_PER_THREAD
from ._philox cimport (dropout_key, make_key, dropout_chunk_bits, dropout_bits_general,
                       philox4x32_10, philox_fill, philox_fill_scalar, span_bits,
                       DROPOUT_CHUNK)
from . import dropout as _dropout


# ---- dense ----

def gemm_rowmajor(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C,
                  bint trans_a, bint trans_b, *, int n_threads):
    """C = op(A)·op(B) through the tiled, thread-count-invariant path the dense kernels
    use."""
    cdef Py_ssize_t m = C.shape[0], n = C.shape[1]
    cdef int k = <int>(A.shape[0] if trans_a else A.shape[1])
    if m == 0 or n == 0:
        return
    with nogil:
        _gemm_tiles(trans_a, trans_b, m, n, k, &A[0, 0], <int>A.shape[1], &B[0, 0],
                    <int>B.shape[1], &C[0, 0], <int>C.shape[1], n_threads)


def tile_grid(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k):
    """(tile height, tile width, tiles down, tiles across) for an m×n×k product."""
    cdef Tiling t = _tiling(m, n, k)
    return t.tm, t.tn, t.n_tm, t.n_tn


# ---- dropout masks ----

def mask_bits(uint32_t[:, ::1] bits, Py_ssize_t d, uint64_t seed, uint64_t step,
              uint32_t layer, uint32_t threshold, *, int n_threads):
    """The mask bits of an (N, d) activation and nothing else: what generating the mask
    costs on its own, the floor under any fused dropout (benchmarks/bar_norm.py)."""
    cdef Py_ssize_t N = bits.shape[0], wpr = bits.shape[1], i
    cdef int nt = threads_for(N * d, DROPOUT_PER_THREAD, n_threads)
    cdef dropout_key key = make_key(seed, step, layer, threshold)
    if wpr < (d + 31) // 32:
        raise ValueError("bits has too few words per row")
    with nogil:
        for i in prange(N, num_threads=nt, schedule='static'):
            span_bits(&bits[i, 0], <uint64_t>(i * d), d, &key)


def regenerate_backward(const floating[:, ::1] dY, floating[:, ::1] dX,
                        uint32_t[:, ::1] bits, uint64_t seed, uint64_t step,
                        uint32_t layer, uint32_t threshold, double scale, *, int n_threads):
    """dX = dY · m with the mask generated again: what backward would cost without
    stored bits (benchmarks/bench_dropout.py compares the two)."""
    _dropout.forward(dY, dX, bits, seed, step, layer, threshold, scale, n_threads=n_threads)


def philox4x32_10_blocks(const uint32_t[:, ::1] counters, const uint32_t[:, ::1] keys,
                         uint32_t[:, ::1] out):
    """out[r] = Philox4x32-10(counters[r], keys[r]) (raw words)."""
    cdef Py_ssize_t r
    with nogil:
        for r in range(counters.shape[0]):
            philox4x32_10(&counters[r, 0], &keys[r, 0], &out[r, 0])


def philox_fill_blocks(uint32_t[::1] out, uint32_t first, uint32_t c1, uint32_t c2,
                       uint32_t c3, uint32_t k0, uint32_t k1, bint scalar=False):
    """out[4k + w] = word w of Philox4x32-10((first + k, c1, c2, c3), (k0, k1)) for
    k < len(out) / 4, through the SIMD path (or the scalar one)."""
    cdef int n_blocks = <int>(out.shape[0] // 4)
    with nogil:
        if scalar:
            philox_fill_scalar(&out[0], first, n_blocks, c1, c2, c3, k0, k1)
        else:
            philox_fill(&out[0], first, n_blocks, c1, c2, c3, k0, k1)


def chunk_bits(uint32_t[::1] bits, uint64_t e0, int n, uint64_t seed, uint64_t step,
               uint32_t layer, uint32_t threshold, bint general=False):
    """The mask bits of n ≤ 128 columns whose first element is e0, through the SIMD path
    where it applies (or the general one)."""
    cdef dropout_key key = make_key(seed, step, layer, threshold)
    if not 0 < n <= DROPOUT_CHUNK or bits.shape[0] < (n + 31) // 32:
        raise ValueError(f"n must be in [1, {DROPOUT_CHUNK}] with room for its bits")
    with nogil:
        if general:
            dropout_bits_general(&bits[0], e0, n, &key)
        else:
            dropout_chunk_bits(&bits[0], e0, n, &key)
