"""How many OpenMP threads a kernel's parallel region opens.

Every kernel takes its thread budget as an argument (Python passes
``fastopt.get_num_threads()``) and sizes its regions with ``threads_for`` so small
loops stay on one thread: on small work the fork/join of an OpenMP region costs more
than the second core gives back (measured: a 2-thread region costs a few µs to open).

Results never depend on the count: every reduction in fastopt is split into blocks
whose boundaries depend only on the problem's shape, merged in a fixed order.
"""

cdef int threads_for(Py_ssize_t n_items, Py_ssize_t min_items_per_thread,
                     int n_threads) noexcept nogil:
    """Threads worth using for n_items when each thread should get at least
    min_items_per_thread, capped at n_threads (the caller's budget, >= 1)."""
    cdef Py_ssize_t useful
    if min_items_per_thread < 1:
        min_items_per_thread = 1
    if n_threads < 1:
        n_threads = 1
    useful = n_items // min_items_per_thread
    if useful < 1:
        return 1
    if useful < n_threads:
        return <int>useful
    return n_threads


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    cdef int enabled = 0
    with nogil:
        enabled = _probe_openmp()
    return bool(enabled)


cdef extern from *:
    """
    #ifdef _OPENMP
    static int _probe_openmp(void) { return 1; }
    #else
    static int _probe_openmp(void) { return 0; }
    #endif
    """
    int _probe_openmp() noexcept nogil
