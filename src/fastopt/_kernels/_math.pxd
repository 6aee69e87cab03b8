# Scalar maths shared by the kernels, specialised for float and double so float32
# kernels call expf/log1pf (not the double versions) and stay in single precision.

from cython cimport floating
from libc.math cimport exp, expm1, log, log1p, tanh, erf, sqrt, fabs
from libc.math cimport expf, expm1f, logf, log1pf, tanhf, erff, sqrtf, fabsf


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)

cdef inline floating _expm1(floating x) noexcept nogil:
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)

cdef inline floating _log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)

cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)

cdef inline floating _log1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)

cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)

cdef inline floating _erf(floating x) noexcept nogil:
    if floating is float:
        return erff(x)
    else:
        return erf(x)

cdef inline floating _abs(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)

cdef inline floating _sigmoid(floating z) noexcept nogil:
    # Never exponentiates a positive number: no overflow for any z.
    cdef floating e
    if z >= 0:
        return 1 / (1 + _exp(-z))
    e = _exp(z)
    return e / (1 + e)

cdef inline floating _softplus(floating z) noexcept nogil:
    return (z if z > 0 else 0) + _log1p(_exp(-_abs(z)))

cdef inline floating _sign(floating x) noexcept nogil:
    # sign(0) = 0 (and 0 for NaN): the L1 sub-gradient at 0 is taken as 0.
    return <floating>(x > 0) - <floating>(x < 0)
