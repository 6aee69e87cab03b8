# Row-major GEMM: the entry point every dense kernel calls (one single-threaded call per
# tile). The work happens behind it, in _gemm.pyx: the small-GEMM micro-kernel for small
# products, else the selected backend (scipy's OpenBLAS through cython_blas, or MKL).

from cython cimport floating
from ._gemm cimport sgemm_rm, dgemm_rm


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """C (m×n, row-major, ld ldc) = alpha·op(A)·op(B) + beta·C.

    op(A) is m×k: A is stored m×k (lda ≥ k) or, when trans_a, k×m (lda ≥ m).
    op(B) is k×n: B is stored k×n (ldb ≥ n) or, when trans_b, n×k (ldb ≥ k).
    beta = 0: C is not read.
    """
    if floating is float:
        sgemm_rm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    else:
        dgemm_rm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
