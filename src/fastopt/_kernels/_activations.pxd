# Activation codes shared by every kernel that applies one (dense.pyx, norm.pyx);
# fastopt.layers maps names to them through dense.ACTIVATIONS.

cdef enum:
    IDENTITY = 0
    RELU = 1
    LEAKY_RELU = 2
    ELU = 3
    GELU_TANH = 4
    GELU = 5
    SIGMOID = 6
    TANH = 7
    SOFTPLUS = 8
