# The one place that owns how many OpenMP threads fastopt's prange loops use.

cdef int kernel_threads() noexcept nogil
cdef int threads_for(Py_ssize_t n_items, Py_ssize_t min_items_per_thread,
                     int n_threads) noexcept nogil
