"""Inverted dropout with counter-based masks (Philox4x32-10, philox.h).

Training forward: ``y = x · m`` with ``m = scale = 1/(1 − q)`` where the element is kept
and 0 where it is dropped. Element e = i·d + j of the (N, d) input is kept when

    philox(counter = (e / 4, layer, step mod 2^32, step / 2^32),
           key = (seed mod 2^32, seed / 2^32 mod 2^32))[e mod 4]  <  threshold,

threshold = floor((1 − q) · 2^32): exact, no float rounding in the decision. The mask
is a pure function of (seed, step, layer, e), so it is identical for any thread count,
row split or SIMD width. Forward also stores it as bits (row i, columns 32g … 32g+31
in ``bits[i, g]``, in philox.h's order); backward reads them: ``dx = dy · m``.

Why stored bits and not regenerating in backward: the mask costs 0.56 ms per 2^20
elements on one core of this machine (``mask_bits``; four 32-column groups of Philox
blocks per step, 0.46-0.55 ns per word), while the bits are 1/32 of a float32 tensor's
bytes; backward from bits is a streaming pass (benchmarks/bench_dropout.py compares the
two). The generator is ALU-bound: 5 vector operations per 32-bit word (10 rounds of two
32x32->64 multiplies, shifts, blends and xors per 8 blocks), about what a streaming
pass over a float32 tensor costs at this machine's L3 bandwidth, so exact per-element
masks cannot be free next to the data they multiply.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t

from ._parallel cimport kernel_threads, threads_for
from ._philox cimport (dropout_key, make_key, dropout_chunk_bits, dropout_bits_general,
                       philox4x32_10, philox_fill, philox_fill_scalar, span_bits,
                       DROPOUT_CHUNK)
from ._dropout_core cimport DROPOUT_PER_THREAD, _dropout_forward, _dropout_backward

def forward(const floating[:, ::1] X, floating[:, ::1] Y, uint32_t[:, ::1] bits,
            uint64_t seed, uint64_t step, uint32_t layer, uint32_t threshold,
            double scale):
    """Y = X · m (see the module docstring); the mask's bits go to ``bits`` (N, ⌈d/32⌉).

    Requires N·d < 2^34 (block indices are 32-bit) and threshold < 2^32.
    """
    cdef Py_ssize_t N = X.shape[0], d = X.shape[1]
    cdef dropout_key key = make_key(seed, step, layer, threshold)
    if N == 0 or d == 0:
        return
    with nogil:
        _dropout_forward(&X[0, 0], &Y[0, 0], &bits[0, 0], bits.shape[1], &key,
                         <floating>scale, N, d)


def backward(const floating[:, ::1] dY, const uint32_t[:, ::1] bits,
             floating[:, ::1] dX, double scale):
    """dX = dY · m, m from the bits that ``forward`` stored. dX may be dY."""
    cdef Py_ssize_t N = dY.shape[0], d = dY.shape[1]
    if N == 0 or d == 0:
        return
    with nogil:
        _dropout_backward(&dY[0, 0], &bits[0, 0], bits.shape[1], &dX[0, 0],
                          <floating>scale, N, d)


def mask_bits(uint32_t[:, ::1] bits, Py_ssize_t d, uint64_t seed, uint64_t step,
              uint32_t layer, uint32_t threshold):
    """The mask bits of an (N, d) activation and nothing else: what generating the
    mask costs on its own, the floor under any fused dropout (benchmarks/bar_norm.py)."""
    cdef Py_ssize_t N = bits.shape[0], wpr = bits.shape[1], i
    cdef int nt = threads_for(N * d, DROPOUT_PER_THREAD, kernel_threads())
    cdef dropout_key key = make_key(seed, step, layer, threshold)
    if wpr < (d + 31) // 32:
        raise ValueError("bits has too few words per row")
    with nogil:
        for i in prange(N, num_threads=nt, schedule='static'):
            span_bits(&bits[i, 0], <uint64_t>(i * d), d, &key)


def regenerate_backward(const floating[:, ::1] dY, floating[:, ::1] dX,
                        uint32_t[:, ::1] bits, uint64_t seed, uint64_t step,
                        uint32_t layer, uint32_t threshold, double scale):
    """dX = dY · m with the mask generated again (what backward would cost without
    stored bits; kept for the benchmark that justifies storing them)."""
    forward(dY, dX, bits, seed, step, layer, threshold, scale)


def philox4x32_10_blocks(const uint32_t[:, ::1] counters, const uint32_t[:, ::1] keys,
                         uint32_t[:, ::1] out):
    """Test entry point: out[r] = Philox4x32-10(counters[r], keys[r]) (raw words)."""
    cdef Py_ssize_t r
    with nogil:
        for r in range(counters.shape[0]):
            philox4x32_10(&counters[r, 0], &keys[r, 0], &out[r, 0])


def philox_fill_blocks(uint32_t[::1] out, uint32_t first, uint32_t c1, uint32_t c2,
                       uint32_t c3, uint32_t k0, uint32_t k1, bint scalar=False):
    """Test entry point: out[4k + w] = word w of Philox4x32-10((first + k, c1, c2, c3),
    (k0, k1)) for k < len(out) / 4, through the SIMD path (or the scalar one)."""
    cdef int n_blocks = <int>(out.shape[0] // 4)
    with nogil:
        if scalar:
            philox_fill_scalar(&out[0], first, n_blocks, c1, c2, c3, k0, k1)
        else:
            philox_fill(&out[0], first, n_blocks, c1, c2, c3, k0, k1)


def chunk_bits(uint32_t[::1] bits, uint64_t e0, int n, uint64_t seed, uint64_t step,
               uint32_t layer, uint32_t threshold, bint general=False):
    """Test entry point: the mask bits of n ≤ 128 columns whose first element is e0,
    through the SIMD path where it applies (or the general one)."""
    cdef dropout_key key = make_key(seed, step, layer, threshold)
    if not 0 < n <= DROPOUT_CHUNK or bits.shape[0] < (n + 31) // 32:
        raise ValueError(f"n must be in [1, {DROPOUT_CHUNK}] with room for its bits")
    with nogil:
        if general:
            dropout_bits_general(&bits[0], e0, n, &key)
        else:
            dropout_chunk_bits(&bits[0], e0, n, &key)
