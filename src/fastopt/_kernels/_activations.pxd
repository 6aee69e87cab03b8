# The activations: their codes and their maths, written once for every kernel that applies
# one (the dense epilogue and gradient rows in _dense_core, the fused batch-norm rows in
# _norm_core, and through them the compiled step). fastopt.layers maps names to the codes
# through dense.ACTIVATIONS.
#
# Each activation is a scalar inline function; the kernels keep one explicit loop per
# activation and call these in it, so every loop still vectorizes with the branch gone.
#
# Derivatives come as ``*_grad(da, a, ...)`` = da · act'(z) expressed through the output
# a = act(z), except the GELUs, whose derivative needs z. relu, leaky_relu (α ≥ 0) and
# elu (α ≥ 0) tell the branch by a > 0, which is z > 0: a caller holding only z may pass
# z for relu and leaky_relu (same sign), and act(z) for elu (the derivative needs it).

from cython cimport floating

from ._math cimport _exp, _expm1, _tanh, _erf

# The codes, numbered 0, 1, 2, ... in this order.
cdef enum:
    IDENTITY, RELU, LEAKY_RELU, ELU, GELU_TANH, GELU, SIGMOID, TANH, SOFTPLUS


# ---- act(z) ----

cdef inline floating relu(floating z) noexcept nogil:
    return z if z > 0 else 0

cdef inline floating leaky_relu(floating z, floating alpha) noexcept nogil:
    return z if z > 0 else alpha * z

cdef inline floating elu(floating z, floating alpha) noexcept nogil:
    return z if z > 0 else alpha * _expm1(z)

cdef inline floating gelu_tanh(floating z) noexcept nogil:
    # z/2 · (1 + tanh(√(2/π)·(z + 0.044715·z³)))
    cdef floating inner = <floating>0.7978845608028654 * (z + <floating>0.044715 * z * z * z)
    return <floating>0.5 * z * (1 + _tanh(inner))

cdef inline floating gelu(floating z) noexcept nogil:
    # z·Φ(z) = z/2 · (1 + erf(z/√2))
    return <floating>0.5 * z * (1 + _erf(z * <floating>0.7071067811865476))

# sigmoid, tanh and softplus are _math's _sigmoid, _tanh and _softplus (the losses use
# them too).


# ---- da · act'(z), from the output a ----

cdef inline floating relu_grad(floating da, floating a) noexcept nogil:
    return da if a > 0 else 0

cdef inline floating leaky_relu_grad(floating da, floating a, floating alpha) noexcept nogil:
    return da if a > 0 else alpha * da

cdef inline floating elu_grad(floating da, floating a, floating alpha) noexcept nogil:
    # For z ≤ 0, a = α(eᶻ − 1), so act'(z) = α·eᶻ = a + α.
    return da if a > 0 else da * (a + alpha)

cdef inline floating sigmoid_grad(floating da, floating a) noexcept nogil:
    return da * a * (1 - a)

cdef inline floating tanh_grad(floating da, floating a) noexcept nogil:
    return da * (1 - a * a)

cdef inline floating softplus_grad(floating da, floating a) noexcept nogil:
    # act'(z) = σ(z) = 1 − e^(−a); −expm1 keeps it exact when a is tiny.
    return -da * _expm1(-a)


# ---- act'(z), from the pre-activation z ----

cdef inline floating gelu_tanh_derivative(floating z) noexcept nogil:
    cdef floating inner = <floating>0.7978845608028654 * (z + <floating>0.044715 * z * z * z)
    cdef floating t = _tanh(inner)
    cdef floating dinner = <floating>0.7978845608028654 * (1 + 3 * <floating>0.044715 * z * z)
    return <floating>0.5 * (1 + t) + <floating>0.5 * z * (1 - t * t) * dinner

cdef inline floating gelu_derivative(floating z) noexcept nogil:
    # Φ(z) + z·φ(z)
    cdef floating cdf = <floating>0.5 * (1 + _erf(z * <floating>0.7071067811865476))
    return cdf + z * <floating>0.3989422804014327 * _exp(<floating>-0.5 * z * z)
