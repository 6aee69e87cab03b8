# Row-major GEMM over scipy's Fortran BLAS (scipy.linalg.cython_blas): nothing is
# linked at build time, scipy's OpenBLAS does the work.
#
# A row-major matrix is the transpose of a column-major one, so the row-major
# C = op(A)·op(B) is computed as the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the
# operands and the dimensions, keep the transpose flags. No copy is made (scipy's
# f2py wrappers copy C-ordered arrays to Fortran order on every call; this does not).

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """C (m×n, row-major, ld ldc) = alpha·op(A)·op(B) + beta·C.

    op(A) is m×k: A is stored m×k (lda ≥ k) or, when trans_a, k×m (lda ≥ m).
    op(B) is k×n: B is stored k×n (ldb ≥ n) or, when trans_b, n×k (ldb ≥ k).
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)
