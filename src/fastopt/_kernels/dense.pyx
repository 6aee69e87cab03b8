"""Dense layer kernels: the per-layer entry points of the layer protocol (and tests).

The maths (tiled GEMMs, the fused bias + activation epilogue, the activation gradient with
the bias-gradient reduction) lives in ``_dense_core.pxd``, which the compiled training
step (step.pyx) runs too: both paths execute the same code.

Derivatives are taken from what the forward kept: the output A for every activation
except GELU, which needs the pre-activation Z.
"""

from cython cimport floating

from ._dense_core cimport (_forward_layer, _backward_layer, _act_forward_rows,
                           _act_backward_rows)
from ._activations cimport (ELU, GELU, GELU_TANH, IDENTITY, LEAKY_RELU, RELU, SIGMOID,
                           SOFTPLUS, TANH)

ACTIVATIONS = {
    "identity": IDENTITY, "linear": IDENTITY, None: IDENTITY,
    "relu": RELU, "leaky_relu": LEAKY_RELU, "elu": ELU,
    "gelu_tanh": GELU_TANH, "gelu": GELU,
    "sigmoid": SIGMOID, "tanh": TANH, "softplus": SOFTPLUS,
}
NEEDS_PREACTIVATION = frozenset({GELU_TANH, GELU})


def forward(const floating[:, ::1] X, const floating[:, ::1] W, const floating[::1] b,
            floating[:, ::1] Z, floating[:, ::1] A, int act, double alpha,
            bint has_bias, *, int n_threads):
    """Z = X·Wᵀ + b; A = act(Z).

    X (N, in), W (out, in), b (out,), Z and A (N, out). Z keeps the pre-activation
    only when the activation needs it for backward (GELU); otherwise A may be the
    same buffer as Z and Z's content is unspecified afterwards.
    """
    if X.shape[0] == 0:
        return
    with nogil:
        _forward_layer(&X[0, 0], &W[0, 0], &b[0] if has_bias else NULL, &Z[0, 0], &A[0, 0],
                       X.shape[0], <int>X.shape[1], W.shape[0], act, <floating>alpha, has_bias, n_threads)


def backward(const floating[:, ::1] dA, const floating[:, ::1] X,
             const floating[:, ::1] W, const floating[:, ::1] A,
             const floating[:, ::1] Z, floating[:, ::1] dZ, floating[:, ::1] dW,
             floating[::1] db, floating[:, ::1] dX, int act, double alpha,
             bint has_bias, bint need_dx, *, int n_threads):
    """dZ = dA ⊙ act'(·), db = Σ_rows dZ, dW = dZᵀ·X, dX = dZ·W (when need_dx).

    dZ may be dA itself (then dA is overwritten). Z is read only for activations
    that need the pre-activation. dW, db and dX are overwritten, not accumulated.
    """
    cdef Py_ssize_t N = X.shape[0]
    cdef const floating* dA_ptr = &dA[0, 0] if N else NULL
    cdef const floating* A_ptr = &A[0, 0] if N else NULL
    cdef const floating* Z_ptr = &Z[0, 0] if N else NULL
    cdef floating* dZ_ptr = &dZ[0, 0] if N else NULL
    cdef const floating* X_ptr = &X[0, 0] if N else NULL
    cdef floating* dX_ptr = &dX[0, 0] if (N and need_dx) else NULL
    with nogil:
        _backward_layer(dA_ptr, X_ptr, &W[0, 0], A_ptr, Z_ptr, dZ_ptr, &dW[0, 0],
                        &db[0] if has_bias else NULL, dX_ptr, N, X.shape[1], W.shape[0], act,
                        <floating>alpha, has_bias, need_dx, n_threads)



def activation_forward(const floating[:, ::1] Z, floating[:, ::1] A, int act,
                       double alpha, *, int n_threads):
    """A = act(Z), elementwise (a standalone Activation layer)."""
    if Z.shape[0] == 0:
        return
    with nogil:
        _act_forward_rows(&Z[0, 0], &A[0, 0], Z.shape[0], Z.shape[1], act, <floating>alpha, n_threads)


def activation_backward(const floating[:, ::1] dA, const floating[:, ::1] A,
                        const floating[:, ::1] Z, floating[:, ::1] dZ, int act,
                        double alpha, *, int n_threads):
    """dZ = dA ⊙ act'(·), elementwise."""
    if dA.shape[0] == 0:
        return
    with nogil:
        _act_backward_rows(&dA[0, 0], &A[0, 0], &Z[0, 0], &dZ[0, 0], dA.shape[0],
                           dA.shape[1], act, <floating>alpha, n_threads)
