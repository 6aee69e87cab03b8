# The one GEMM entry point of fastopt's kernels (_blas.pxd's gemm calls these): row-major
# C = alpha·op(A)·op(B) + beta·C, dispatched per call by shape to the micro-kernel, or
# to the selected backend (scipy's OpenBLAS or MKL). Single-threaded: callers own the
# threads (dense.pyx runs one call per tile of a fixed grid).

cdef void sgemm_rm(bint trans_a, bint trans_b, int m, int n, int k, float alpha,
                   const float* a, int lda, const float* b, int ldb, float beta,
                   float* c, int ldc) noexcept nogil
cdef void dgemm_rm(bint trans_a, bint trans_b, int m, int n, int k, double alpha,
                   const double* a, int lda, const double* b, int ldb, double beta,
                   double* c, int ldc) noexcept nogil
