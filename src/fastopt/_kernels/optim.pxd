# The optimizers' one-call update, shared with the compiled training step (step.pyx), which
# runs it inside its own nogil call after the backward pass.

cdef struct Common:
    # Gradient conditioning, shared by every optimizer.
    double scale, clip, wd, l1
    # False when wd = l1 = 0: decayed segments then take the plain loop, so zero decay
    # costs nothing and is bitwise the same as no decay (0·inf would not be).
    bint coupled
    bint amsgrad
    # The segments table (k rows of start, stop, decay).
    const Py_ssize_t* seg
    Py_ssize_t nseg


ctypedef struct Update:
    # One optimizer step over the arena, filled by fastopt.optim before the step
    # (BoundUpdate.set) and run by update_run with the step's gradient scale.
    int kind              # UPD_SGD, UPD_ADAGRAD, UPD_RMSPROP, UPD_ADAM (optim.pyx)
    int mode              # SGD: plain / momentum / Nesterov; RMSprop: centered
    bint is_double
    void* p
    const void* g
    void* s0              # state buffers (unused ones point at p)
    void* s1
    void* s2
    Py_ssize_t n
    double sign           # −1 for maximize
    double h[8]           # the step's scalars (learning rates, bias corrections, ...)
    Common c


cdef void update_run(Update* u, double grad_scale, int n_threads) noexcept nogil


cdef class BoundUpdate:
    cdef Update u
    cdef object _keep
