"""Optimizer update kernels: one pass over the flat parameter arena per step.

Each kernel reads p, g and its state once and writes p and the state once. The
gradient is conditioned on the way in, in torch.optim's order:

    g ← clamp(grad_scale·g, −clip, clip)          clipping (clip = +inf when off)
    g ← −g                                        maximize: folded into grad_scale's sign,
                                                  exact because the clamp is symmetric
    g ← g + wd·p + l1·sign(p)                     coupled L2 / L1, decayed segments only

then the optimizer's own maths (the fastopt.optim classes' docstrings write it out). Per-step
scalars (bias corrections, decayed learning rates) come in already computed in double.

Segments: ``segments`` is an (k, 3) table of contiguous runs ``(start, stop, decay)``
covering [0, n); weight decay, L1 and AdamW's decoupled shrink apply only where
``decay`` is non-zero. Threads cut [0, n) into equal cache-line-aligned chunks, and
each walks the segments that overlap its chunk: one fork/join per step.

Elementwise: the vector body and the scalar tail compute each element with the same
operations (multiply-adds are contracted to FMA in both, -ffp-contract=fast), and the
thread chunks only decide which thread computes an element, so results are bitwise
identical for any thread count.

Vectorization: the per-element maths lives in ``_*_range`` inline functions called
with literal flags, so gcc inlines one specialised loop per case with the branches
gone; each of those loops is vectorized (checked with -fopt-info-vec-optimized:
"loop vectorized using 32 byte vectors" for every ``_*_range`` instance, float and
double). Only the clamp is left unconditional: with clip = +inf it is the identity,
NaN and ±inf included, and costs two compares in a memory-bound loop.
"""

from cython cimport floating
from cython.parallel cimport prange

from ._math cimport _sqrt, _sign
from ._reduce cimport NORM_BLOCK, _sum_squares
from libc.stdint cimport uintptr_t

from ._parallel cimport threads_for

cdef enum:
    # Elements under which an update stays on one thread (memory-bound: ~10 µs).
    UPDATE_PER_THREAD = 65536
    # Chunk edges fall on multiples of this many elements: a 64-byte line for float64,
    # two for float32, so two threads never write the same cache line.
    CHUNK_ALIGN = 16


# ---- shared pieces ----

cdef inline floating _clamp(floating x, floating c) noexcept nogil:
    # NaN fails both tests and passes through, as torch.clamp propagates it.
    if x > c:
        return c
    if x < -c:
        return -c
    return x


cdef inline floating _cond(floating g, floating p, floating scale, floating clip,
                           floating wd, floating l1, bint decayed) noexcept nogil:
    """The gradient the optimizer sees: clipped, signed, with coupled L2 and L1."""
    g = _clamp(scale * g, clip)
    if decayed:
        g = g + wd * p + l1 * _sign(p)
    return g


cdef inline Py_ssize_t _chunk_edge(Py_ssize_t n, Py_ssize_t c, Py_ssize_t nt) noexcept nogil:
    if c >= nt:
        return n
    return (n * c // nt) // CHUNK_ALIGN * CHUNK_ALIGN


cdef inline bint _overlap(const Py_ssize_t* seg, Py_ssize_t s, Py_ssize_t lo, Py_ssize_t hi,
                          Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    """Clip segment s to [lo, hi); False when they do not meet."""
    a[0] = seg[3 * s] if seg[3 * s] > lo else lo
    b[0] = seg[3 * s + 1] if seg[3 * s + 1] < hi else hi
    return a[0] < b[0]


cdef inline Common _common(const Py_ssize_t[:, ::1] segments, double clip, double wd,
                           double l1):
    cdef Common c
    c.scale, c.clip, c.wd, c.l1 = 1.0, clip, wd, l1
    c.coupled = wd != 0 or l1 != 0
    c.amsgrad = False
    c.seg, c.nseg = &segments[0, 0], segments.shape[0]
    return c


# ==== SGD ====

cdef enum:
    SGD_PLAIN = 0
    SGD_MOMENTUM = 1
    SGD_NESTEROV = 2


cdef inline void _sgd_range(floating* p, const floating* g, floating* b,
                            Py_ssize_t lo, Py_ssize_t hi, const Common* c,
                            const double* k, int mode, bint coupled) noexcept nogil:
    # k = (lr, momentum, buf_decay, keep)
    cdef floating scale = <floating>c.scale, clip = <floating>c.clip
    cdef floating wd = <floating>c.wd, l1 = <floating>c.l1
    cdef floating step = <floating>k[0], fm = <floating>k[1]
    cdef floating fd = <floating>k[2], fk = <floating>k[3]
    cdef floating gi, bi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gi = _cond(g[i], p[i], scale, clip, wd, l1, coupled)
        if mode == SGD_PLAIN:
            p[i] = p[i] - step * gi
        else:
            bi = fd * b[i] + fk * gi
            b[i] = bi
            if mode == SGD_NESTEROV:
                p[i] = p[i] - step * (gi + fm * bi)
            else:
                p[i] = p[i] - step * bi


cdef inline void _sgd_case(floating* p, const floating* g, floating* b, Py_ssize_t lo,
                           Py_ssize_t hi, const Common* c, const double* k, int mode,
                           bint coupled) noexcept nogil:
    if mode == SGD_PLAIN:
        _sgd_range(p, g, b, lo, hi, c, k, SGD_PLAIN, coupled)
    elif mode == SGD_MOMENTUM:
        _sgd_range(p, g, b, lo, hi, c, k, SGD_MOMENTUM, coupled)
    else:
        _sgd_range(p, g, b, lo, hi, c, k, SGD_NESTEROV, coupled)


cdef void _sgd_span(floating* p, const floating* g, floating* b, Py_ssize_t lo, Py_ssize_t hi,
                    const Common* c, const double* k, int mode, bint coupled) noexcept nogil:
    if coupled:
        _sgd_case(p, g, b, lo, hi, c, k, mode, True)
    else:
        _sgd_case(p, g, b, lo, hi, c, k, mode, False)


# ==== Adagrad ====

cdef inline void _adagrad_range(floating* p, const floating* g, floating* s,
                                Py_ssize_t lo, Py_ssize_t hi, const Common* c,
                                double clr, double eps, bint coupled) noexcept nogil:
    cdef floating scale = <floating>c.scale, clip = <floating>c.clip
    cdef floating wd = <floating>c.wd, l1 = <floating>c.l1
    cdef floating step = <floating>clr, fe = <floating>eps
    cdef floating gi, si
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gi = _cond(g[i], p[i], scale, clip, wd, l1, coupled)
        si = s[i] + gi * gi
        s[i] = si
        p[i] = p[i] - step * gi / (_sqrt(si) + fe)


cdef void _adagrad_span(floating* p, const floating* g, floating* s, Py_ssize_t lo,
                        Py_ssize_t hi, const Common* c, double clr, double eps,
                        bint coupled) noexcept nogil:
    if coupled:
        _adagrad_range(p, g, s, lo, hi, c, clr, eps, True)
    else:
        _adagrad_range(p, g, s, lo, hi, c, clr, eps, False)


# ==== RMSprop ====

cdef inline void _rmsprop_range(floating* p, const floating* g, floating* v, floating* a,
                                floating* b, Py_ssize_t lo, Py_ssize_t hi, const Common* c,
                                double lr, double alpha, double eps, double mom,
                                bint centered, bint momentum, bint coupled) noexcept nogil:
    cdef floating scale = <floating>c.scale, clip = <floating>c.clip
    cdef floating wd = <floating>c.wd, l1 = <floating>c.l1
    cdef floating step = <floating>lr, fa = <floating>alpha, fc = <floating>(1 - alpha)
    cdef floating fe = <floating>eps, fm = <floating>mom
    cdef floating gi, vi, ai, d, bi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gi = _cond(g[i], p[i], scale, clip, wd, l1, coupled)
        vi = fa * v[i] + fc * gi * gi
        v[i] = vi
        if centered:
            ai = fa * a[i] + fc * gi
            a[i] = ai
            vi = vi - ai * ai
        d = _sqrt(vi) + fe
        if momentum:
            bi = fm * b[i] + gi / d
            b[i] = bi
            p[i] = p[i] - step * bi
        else:
            p[i] = p[i] - step * gi / d


cdef inline void _rmsprop_case(floating* p, const floating* g, floating* v, floating* a,
                               floating* b, Py_ssize_t lo, Py_ssize_t hi, const Common* c,
                               double lr, double alpha, double eps, double mom,
                               bint centered, bint coupled) noexcept nogil:
    if mom > 0:
        _rmsprop_range(p, g, v, a, b, lo, hi, c, lr, alpha, eps, mom, centered, True, coupled)
    else:
        _rmsprop_range(p, g, v, a, b, lo, hi, c, lr, alpha, eps, mom, centered, False, coupled)


cdef void _rmsprop_span(floating* p, const floating* g, floating* v, floating* a, floating* b,
                        Py_ssize_t lo, Py_ssize_t hi, const Common* c, double lr,
                        double alpha, double eps, double mom, bint centered,
                        bint coupled) noexcept nogil:
    if not coupled:
        if centered:
            _rmsprop_case(p, g, v, a, b, lo, hi, c, lr, alpha, eps, mom, True, False)
        else:
            _rmsprop_case(p, g, v, a, b, lo, hi, c, lr, alpha, eps, mom, False, False)
    elif centered:
        _rmsprop_case(p, g, v, a, b, lo, hi, c, lr, alpha, eps, mom, True, True)
    else:
        _rmsprop_case(p, g, v, a, b, lo, hi, c, lr, alpha, eps, mom, False, True)


# ==== Adam / AdamW ====

cdef inline void _adam_range(floating* p, const floating* g, floating* m, floating* v,
                             floating* vmax, Py_ssize_t lo, Py_ssize_t hi, const Common* c,
                             double beta1, double beta2, double step_size,
                             double inv_sqrt_bc2, double eps, double shrink,
                             bint amsgrad, bint coupled, bint shrinks) noexcept nogil:
    cdef floating scale = <floating>c.scale, clip = <floating>c.clip
    cdef floating wd = <floating>c.wd, l1 = <floating>c.l1
    cdef floating b1 = <floating>beta1, c1 = <floating>(1 - beta1)
    cdef floating b2 = <floating>beta2, c2 = <floating>(1 - beta2)
    cdef floating step = <floating>step_size, ib = <floating>inv_sqrt_bc2
    cdef floating fe = <floating>eps, fs = <floating>shrink
    cdef floating gi, mi, vi, d
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gi = _cond(g[i], p[i], scale, clip, wd, l1, coupled)
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        m[i] = mi
        v[i] = vi
        if amsgrad:
            # v̂ ← max(v̂, v): written so a NaN in v reaches v̂, as torch.maximum does.
            if vmax[i] > vi:
                vi = vmax[i]
            vmax[i] = vi
        # One sqrt and one division per element: at 1 thread on L2-resident data they
        # are the bottleneck (Zen 3: replacing the division by a multiply made the
        # 235,914-element step 30% faster on 1 thread, 10% on 2, where L3 bandwidth
        # binds). Kept exact: approximations would need hand-written intrinsics.
        d = _sqrt(vi) * ib + fe
        if shrinks:
            p[i] = p[i] * fs - step * mi / d
        else:
            p[i] = p[i] - step * mi / d


cdef inline void _adam_case(floating* p, const floating* g, floating* m, floating* v,
                            floating* vmax, Py_ssize_t lo, Py_ssize_t hi, const Common* c,
                            double beta1, double beta2, double step_size,
                            double inv_sqrt_bc2, double eps, double shrink,
                            bint coupled, bint shrinks) noexcept nogil:
    if c.amsgrad:
        _adam_range(p, g, m, v, vmax, lo, hi, c, beta1, beta2, step_size, inv_sqrt_bc2,
                    eps, shrink, True, coupled, shrinks)
    else:
        _adam_range(p, g, m, v, vmax, lo, hi, c, beta1, beta2, step_size, inv_sqrt_bc2,
                    eps, shrink, False, coupled, shrinks)


cdef void _adam_span(floating* p, const floating* g, floating* m, floating* v, floating* vmax,
                     Py_ssize_t lo, Py_ssize_t hi, const Common* c, double beta1,
                     double beta2, double step_size, double inv_sqrt_bc2, double eps,
                     double shrink, bint decayed) noexcept nogil:
    # On a decayed segment: coupled L2/L1 when set, AdamW's shrink when ≠ 1.
    cdef bint coupled = decayed and c.coupled, shrinks = decayed and shrink != 1
    if coupled and shrinks:
        _adam_case(p, g, m, v, vmax, lo, hi, c, beta1, beta2, step_size, inv_sqrt_bc2,
                   eps, shrink, True, True)
    elif coupled:
        _adam_case(p, g, m, v, vmax, lo, hi, c, beta1, beta2, step_size, inv_sqrt_bc2,
                   eps, shrink, True, False)
    elif shrinks:
        _adam_case(p, g, m, v, vmax, lo, hi, c, beta1, beta2, step_size, inv_sqrt_bc2,
                   eps, shrink, False, True)
    else:
        _adam_case(p, g, m, v, vmax, lo, hi, c, beta1, beta2, step_size, inv_sqrt_bc2,
                   eps, shrink, False, False)


# ==== global norm ====

def sum_squares(const floating[::1] g, double[::1] partials, *, int n_threads):
    """Σ g² in double, by fixed blocks of NORM_BLOCK elements merged in block order.

    ``partials`` holds one double per block (``norm_blocks(n)`` of them; the caller
    sizes it). The block edges depend only on n, so the result is bitwise the same for
    any thread count.
    """
    cdef Py_ssize_t n = g.shape[0]
    cdef double total
    if n == 0:
        return 0.0
    with nogil:
        total = _sum_squares(&g[0], n, &partials[0], n_threads)
    return total


def norm_blocks(Py_ssize_t n):
    """How many partial sums ``sum_squares`` needs for n elements."""
    return (n + NORM_BLOCK - 1) // NORM_BLOCK


# ==== one entry point for every optimizer: the Python step and the compiled plan ====

cdef enum:
    UPD_SGD = 0
    UPD_ADAGRAD = 1
    UPD_RMSPROP = 2
    UPD_ADAM = 3

UPDATE_KINDS = {"sgd": UPD_SGD, "adagrad": UPD_ADAGRAD, "rmsprop": UPD_RMSPROP,
                "adam": UPD_ADAM}


cdef inline void _update_segment(floating* marker, const Update* u, const Common* c,
                                 Py_ssize_t lo, Py_ssize_t hi, bint decayed) noexcept nogil:
    cdef floating* p = <floating*>u.p
    cdef const floating* g = <const floating*>u.g
    cdef floating* s0 = <floating*>u.s0
    cdef floating* s1 = <floating*>u.s1
    cdef floating* s2 = <floating*>u.s2
    # Coupled L2 / L1 apply on decayed segments when set (zero decay takes the plain loop).
    cdef bint coupled = decayed and c.coupled
    if u.kind == UPD_SGD:
        _sgd_span(p, g, s0, lo, hi, c, u.h, u.mode, coupled)
    elif u.kind == UPD_ADAGRAD:
        _adagrad_span(p, g, s0, lo, hi, c, u.h[0], u.h[1], coupled)
    elif u.kind == UPD_RMSPROP:
        _rmsprop_span(p, g, s0, s1, s2, lo, hi, c, u.h[0], u.h[1], u.h[2], u.h[3], u.mode,
                      coupled)
    else:
        _adam_span(p, g, s0, s1, s2, lo, hi, c, u.h[0], u.h[1], u.h[2], u.h[3], u.h[4],
                   u.h[5], decayed)


cdef inline void _update_chunk(floating* marker, const Update* u, const Common* c,
                               Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """[lo, hi) of the arena, one segment at a time."""
    cdef Py_ssize_t s, a, e
    for s in range(c.nseg):
        if _overlap(c.seg, s, lo, hi, &a, &e):
            _update_segment(marker, u, c, a, e, c.seg[3 * s + 2] != 0)


cdef void update_run(Update* u, double grad_scale, int n_threads) noexcept nogil:
    """Run the filled update with this step's gradient scale (clipping factor) on at most
    n_threads threads."""
    cdef Py_ssize_t n = u.n, ci
    cdef int nt = threads_for(n, UPDATE_PER_THREAD, n_threads)
    cdef Common c = u.c
    if n == 0:
        return
    c.scale = u.sign * grad_scale
    if nt == 1:
        if u.is_double:
            _update_chunk(<double*>NULL, u, &c, 0, n)
        else:
            _update_chunk(<float*>NULL, u, &c, 0, n)
    else:
        for ci in prange(nt, num_threads=nt, schedule='static'):
            if u.is_double:
                _update_chunk(<double*>NULL, u, &c, _chunk_edge(n, ci, nt),
                              _chunk_edge(n, ci + 1, nt))
            else:
                _update_chunk(<float*>NULL, u, &c, _chunk_edge(n, ci, nt),
                              _chunk_edge(n, ci + 1, nt))


cdef uintptr_t _addr(object a):
    return <uintptr_t>a.__array_interface__["data"][0]


cdef class BoundUpdate:
    """One optimizer step, bound to its arrays and scalars (fastopt.optim fills it; the
    caller guarantees shapes, dtypes and contiguity)."""

    def set(self, int kind, int mode, p, g, tuple states, const Py_ssize_t[:, ::1] segments,
            tuple h, bint maximize, double clip, double wd, double l1, bint amsgrad):
        cdef Py_ssize_t k
        self.u.kind, self.u.mode = kind, mode
        self.u.is_double = p.dtype.itemsize == 8
        self.u.p = <void*>_addr(p)
        self.u.g = <const void*>_addr(g)
        self.u.s0 = <void*>_addr(states[0] if len(states) > 0 else p)
        self.u.s1 = <void*>_addr(states[1] if len(states) > 1 else (states[0] if states else p))
        self.u.s2 = <void*>_addr(states[2] if len(states) > 2 else
                                 (states[1] if len(states) > 1 else p))
        self.u.n = p.shape[0]
        self.u.sign = -1.0 if maximize else 1.0
        for k in range(len(h)):
            self.u.h[k] = h[k]
        self.u.c = _common(segments, clip, wd, l1)
        self.u.c.amsgrad = amsgrad
        self._keep = (p, g, states, segments)

    def scalars(self, tuple h):
        """Only the per-step scalars changed (same arrays, segments and conditioning)."""
        cdef Py_ssize_t k
        for k in range(len(h)):
            self.u.h[k] = h[k]

    def run(self, double grad_scale, *, int n_threads):
        """Take the step: p and the state updated in place."""
        with nogil:
            update_run(&self.u, grad_scale, n_threads)
