"""The GEMM layer: one row-major entry point, dispatched by shape.

    m·n·k ≤ the micro limit      → the register-blocked micro-kernel (gemm_micro.h)
    otherwise                    → the selected backend: scipy's OpenBLAS (cython_blas,
                                   always present) or MKL (libmkl_rt, loaded at run time
                                   by fastopt.config when installed)

The decision is two integer compares per call, made per tile of dense.pyx's fixed grid,
so it depends on the shapes only. Every path is called single-threaded (MKL is set
sequential when it is loaded), so results do not depend on the thread count.

The module state (backend, MKL function pointers, micro limit) is set from Python by
fastopt.config before kernels run; changing it while another thread is inside a kernel
is not supported.
"""

from cython cimport floating
from libc.stdint cimport uintptr_t
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef extern from "gemm_micro.h" nogil:
    int FO_KC
    void fo_gemm_micro_init()
    int fo_gemm_micro_isa()
    int fo_gemm_micro_best_isa()
    int fo_gemm_micro_set_isa(int isa)
    void fo_sgemm_micro(int ta, int tb, int m, int n, int k, float alpha,
                        const float* a, int lda, const float* b, int ldb,
                        float beta, float* c, int ldc)
    void fo_dgemm_micro(int ta, int tb, int m, int n, int k, double alpha,
                        const double* a, int lda, const double* b, int ldb,
                        double beta, double* c, int ldc)

ctypedef void (*cblas_sgemm_t)(int, int, int, int, int, int, float, const float*, int,
                               const float*, int, float, float*, int) noexcept nogil
ctypedef void (*cblas_dgemm_t)(int, int, int, int, int, int, double, const double*, int,
                               const double*, int, double, double*, int) noexcept nogil

cdef enum:
    CBLAS_ROW_MAJOR = 101
    CBLAS_NO_TRANS = 111
    CBLAS_TRANS = 112

cdef enum:
    BACKEND_OPENBLAS = 0
    BACKEND_MKL = 1

# Paths for the direct entry point `gemm` below (tests and benchmarks).
PATHS = {"dispatch": 0, "micro": 1, "openblas": 2, "mkl": 3}
ISAS = ("portable", "avx2", "avx512")
KC = FO_KC

# Products of at most this many multiply-adds go to the micro-kernel. fastopt.config sets
# the limit for this CPU and backend at import (its _LIMIT_* notes give the measurements);
# until then, the limit that is safe for every instruction set.
DEFAULT_MICRO_LIMIT = 4096

cdef int _backend = BACKEND_OPENBLAS
cdef long long _micro_limit = 4096
cdef cblas_sgemm_t _mkl_sgemm = NULL
cdef cblas_dgemm_t _mkl_dgemm = NULL

fo_gemm_micro_init()


cdef inline void _openblas(bint trans_a, bint trans_b, int m, int n, int k,
                           floating alpha, const floating* a, int lda,
                           const floating* b, int ldb,
                           floating beta, floating* c, int ldc) noexcept nogil:
    # Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands
    # and the dimensions, keep the flags. No copy (scipy's f2py wrappers would copy).
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)


cdef inline void _mkl(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    cdef int ta = CBLAS_TRANS if trans_a else CBLAS_NO_TRANS
    cdef int tb = CBLAS_TRANS if trans_b else CBLAS_NO_TRANS
    if floating is float:
        _mkl_sgemm(CBLAS_ROW_MAJOR, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    else:
        _mkl_dgemm(CBLAS_ROW_MAJOR, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef inline void _micro(bint trans_a, bint trans_b, int m, int n, int k,
                        floating alpha, const floating* a, int lda,
                        const floating* b, int ldb,
                        floating beta, floating* c, int ldc) noexcept nogil:
    if floating is float:
        fo_sgemm_micro(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    else:
        fo_dgemm_micro(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef inline void _dispatch(bint trans_a, bint trans_b, int m, int n, int k,
                           floating alpha, const floating* a, int lda,
                           const floating* b, int ldb,
                           floating beta, floating* c, int ldc) noexcept nogil:
    if <long long>m * n * k <= _micro_limit:
        _micro(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    elif _backend == BACKEND_MKL:
        _mkl(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    else:
        _openblas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef void sgemm_rm(bint trans_a, bint trans_b, int m, int n, int k, float alpha,
                   const float* a, int lda, const float* b, int ldb, float beta,
                   float* c, int ldc) noexcept nogil:
    _dispatch(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef void dgemm_rm(bint trans_a, bint trans_b, int m, int n, int k, double alpha,
                   const double* a, int lda, const double* b, int ldb, double beta,
                   double* c, int ldc) noexcept nogil:
    _dispatch(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


# ---- state, set from fastopt.config ----

def set_backend(str name):
    """Select 'openblas' or 'mkl' (MKL only after set_mkl_pointers)."""
    global _backend
    if name == "openblas":
        _backend = BACKEND_OPENBLAS
    elif name == "mkl":
        if _mkl_sgemm == NULL or _mkl_dgemm == NULL:
            raise RuntimeError("MKL is not loaded")
        _backend = BACKEND_MKL
    else:
        raise ValueError(f"unknown GEMM backend {name!r}")


def get_backend():
    return "mkl" if _backend == BACKEND_MKL else "openblas"


def set_mkl_pointers(uintptr_t sgemm_address, uintptr_t dgemm_address):
    """The addresses of cblas_sgemm and cblas_dgemm in a loaded libmkl_rt (0: unload)."""
    global _mkl_sgemm, _mkl_dgemm, _backend
    if sgemm_address == 0 or dgemm_address == 0:
        _backend = BACKEND_OPENBLAS
        _mkl_sgemm = NULL
        _mkl_dgemm = NULL
    else:
        _mkl_sgemm = <cblas_sgemm_t>sgemm_address
        _mkl_dgemm = <cblas_dgemm_t>dgemm_address


def set_micro_limit(long long work):
    """Products of at most `work` multiply-adds (m·n·k) go to the micro-kernel; 0: none."""
    global _micro_limit
    if work < 0:
        raise ValueError("the micro limit must be >= 0")
    _micro_limit = work


def get_micro_limit():
    return _micro_limit


def default_micro_limit():
    return DEFAULT_MICRO_LIMIT


def micro_isa():
    """The micro-kernel's instruction set: 'portable', 'avx2' or 'avx512'."""
    return ISAS[fo_gemm_micro_isa()]


def best_micro_isa():
    return ISAS[fo_gemm_micro_best_isa()]


def set_micro_isa(str isa):
    """Force the micro-kernel's instruction set (tests); capped at what the CPU runs."""
    if isa not in ISAS:
        raise ValueError(f"unknown instruction set {isa!r}; one of {ISAS}")
    return ISAS[fo_gemm_micro_set_isa(ISAS.index(isa))]


# ---- direct entry point (tests, benchmarks) ----

def gemm(const floating[:, :] A, const floating[:, :] B, floating[:, :] C,
         bint trans_a=False, bint trans_b=False, double alpha=1.0, double beta=0.0,
         str path="dispatch", int repeat=1):
    """C = alpha·op(A)·op(B) + beta·C in ONE single-threaded call of `path`
    ('dispatch', 'micro', 'openblas', 'mkl'), `repeat` times (timing loops without
    Python in between). Rows may be strided (leading dimensions); columns contiguous.
    """
    cdef int m = <int>C.shape[0], n = <int>C.shape[1]
    cdef int k = <int>(A.shape[0] if trans_a else A.shape[1])
    cdef int code = PATHS[path]
    cdef int r
    cdef Py_ssize_t item = sizeof(floating)
    if (B.shape[1] if trans_b else B.shape[0]) != k or \
            (A.shape[1] if trans_a else A.shape[0]) != m or \
            (B.shape[0] if trans_b else B.shape[1]) != n:
        raise ValueError("shapes do not match")
    if ((A.shape[1] > 1 and A.strides[1] != item) or (B.shape[1] > 1 and B.strides[1] != item)
            or (C.shape[1] > 1 and C.strides[1] != item)):
        raise ValueError("columns must be contiguous")
    if code == 3 and (_mkl_sgemm == NULL or _mkl_dgemm == NULL):
        raise RuntimeError("MKL is not loaded")
    if m == 0 or n == 0:
        return
    cdef int lda = <int>max(A.strides[0] // item, A.shape[1], 1)
    cdef int ldb = <int>max(B.strides[0] // item, B.shape[1], 1)
    cdef int ldc = <int>max(C.strides[0] // item, C.shape[1], 1)
    cdef floating fa = <floating>alpha, fb = <floating>beta
    cdef const floating* pa = &A[0, 0] if A.shape[0] * A.shape[1] > 0 else NULL
    cdef const floating* pb = &B[0, 0] if B.shape[0] * B.shape[1] > 0 else NULL
    with nogil:
        for r in range(repeat):
            if code == 0:
                _dispatch(trans_a, trans_b, m, n, k, fa, pa, lda, pb, ldb, fb, &C[0, 0], ldc)
            elif code == 1:
                _micro(trans_a, trans_b, m, n, k, fa, pa, lda, pb, ldb, fb, &C[0, 0], ldc)
            elif code == 2:
                _openblas(trans_a, trans_b, m, n, k, fa, pa, lda, pb, ldb, fb, &C[0, 0], ldc)
            else:
                _mkl(trans_a, trans_b, m, n, k, fa, pa, lda, pb, ldb, fb, &C[0, 0], ldc)
