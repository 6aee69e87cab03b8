# How many threads a kernel's prange loop opens, within the caller's budget.

cdef int threads_for(Py_ssize_t n_items, Py_ssize_t min_items_per_thread,
                     int n_threads) noexcept nogil
