"""Optimizer update kernels: one pass over the flat parameter arena per step.

Each kernel reads p, g and its state once and writes p and the state once.
Elementwise, so results are bitwise identical for any thread count.
"""

from cython cimport floating
from cython.parallel cimport prange

from ._parallel cimport threads_for

cdef enum:
    # Elements under which an update stays on one thread (memory-bound: ~10 µs).
    UPDATE_PER_THREAD = 65536


def sgd(floating[::1] p, const floating[::1] g, double lr):
    """p ← p − lr·g (plain gradient descent)."""
    cdef Py_ssize_t n = p.shape[0], i
    cdef int nt = threads_for(n, UPDATE_PER_THREAD)
    cdef floating step = <floating>lr
    with nogil:
        for i in prange(n, num_threads=nt, schedule='static'):
            p[i] = p[i] - step * g[i]
