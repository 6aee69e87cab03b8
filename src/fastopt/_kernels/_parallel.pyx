"""OpenMP thread count used by every fastopt kernel.

The count is set from Python (``fastopt.set_num_threads``); kernels read it through
``kernel_threads()`` and size their parallel regions with ``threads_for`` so small
loops stay on one thread: on small work the fork/join of an OpenMP region costs more
than the second core gives back (measured: a 2-thread region costs a few µs to open).

Results never depend on the count: every reduction in fastopt is split into blocks
whose boundaries depend only on the problem's shape, merged in a fixed order.
"""

cdef int _num_threads = 1


cdef int kernel_threads() noexcept nogil:
    return _num_threads


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


def get_num_threads():
    """Threads the kernels may use (an upper bound; small loops use fewer)."""
    return _num_threads


def set_num_threads(int n):
    """Set the kernels' thread count. Callers validate; here it is clamped to >= 1."""
    global _num_threads
    _num_threads = n if n > 0 else 1


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
