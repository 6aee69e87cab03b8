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
elements on one core of this machine (``_testing.mask_bits``; four 32-column groups of Philox
blocks per step, 0.46-0.55 ns per word), while the bits are 1/32 of a float32 tensor's
bytes; backward from bits is a streaming pass (benchmarks/bench_dropout.py compares the
two). The generator is ALU-bound: 5 vector operations per 32-bit word (10 rounds of two
32x32->64 multiplies, shifts, blends and xors per 8 blocks), about what a streaming
pass over a float32 tensor costs at this machine's L3 bandwidth, so exact per-element
masks cannot be free next to the data they multiply.
"""

from cython cimport floating
from libc.stdint cimport uint32_t, uint64_t

from ._philox cimport dropout_key, make_key
from ._dropout_core cimport _dropout_forward, _dropout_backward


def forward(const floating[:, ::1] X, floating[:, ::1] Y, uint32_t[:, ::1] bits,
            uint64_t seed, uint64_t step, uint32_t layer, uint32_t threshold,
            double scale, *, int n_threads):
    """Y = X · m (see the module docstring); the mask's bits go to ``bits`` (N, ⌈d/32⌉).

    Requires N·d < 2^34 (block indices are 32-bit) and threshold < 2^32.
    """
    cdef Py_ssize_t N = X.shape[0], d = X.shape[1]
    cdef dropout_key key = make_key(seed, step, layer, threshold)
    if N == 0 or d == 0:
        return
    with nogil:
        _dropout_forward(&X[0, 0], &Y[0, 0], &bits[0, 0], bits.shape[1], &key,
                         <floating>scale, N, d, n_threads)


def backward(const floating[:, ::1] dY, const uint32_t[:, ::1] bits,
             floating[:, ::1] dX, double scale, *, int n_threads):
    """dX = dY · m, m from the bits that ``forward`` stored. dX may be dY."""
    cdef Py_ssize_t N = dY.shape[0], d = dY.shape[1]
    if N == 0 or d == 0:
        return
    with nogil:
        _dropout_backward(&dY[0, 0], &bits[0, 0], bits.shape[1], &dX[0, 0],
                          <floating>scale, N, d, n_threads)
