"""Optimizer update kernels: one pass over the flat parameter arena per step.

Each kernel reads p, g and its state once and writes p and the state once. The
gradient is conditioned on the way in, in torch.optim's order:

    g ← clamp(grad_scale·g, −clip, clip)          clipping (clip = +inf when off)
    g ← −g                                        maximize: folded into grad_scale's sign,
                                                  exact because the clamp is symmetric
    g ← g + wd·p + l1·sign(p)                     coupled L2 / L1, decayed segments only

then the optimizer's own maths (written out in each kernel's docstring). Per-step
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

from ._parallel cimport kernel_threads, threads_for

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


cdef inline Common _common(const Py_ssize_t[:, ::1] segments, double grad_scale, double clip,
                           double wd, double l1):
    cdef Common c
    c.scale, c.clip, c.wd, c.l1 = grad_scale, clip, wd, l1
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
                            const double* k, int mode, bint decayed) noexcept nogil:
    # k = (lr, momentum, buf_decay, keep)
    cdef floating scale = <floating>c.scale, clip = <floating>c.clip
    cdef floating wd = <floating>c.wd, l1 = <floating>c.l1
    cdef floating step = <floating>k[0], fm = <floating>k[1]
    cdef floating fd = <floating>k[2], fk = <floating>k[3]
    cdef floating gi, bi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gi = _cond(g[i], p[i], scale, clip, wd, l1, decayed)
        if mode == SGD_PLAIN:
            p[i] = p[i] - step * gi
        else:
            bi = fd * b[i] + fk * gi
            b[i] = bi
            if mode == SGD_NESTEROV:
                p[i] = p[i] - step * (gi + fm * bi)
            else:
                p[i] = p[i] - step * bi


cdef void _sgd_span(floating* p, const floating* g, floating* b, Py_ssize_t lo, Py_ssize_t hi,
                    const Common* c, const double* k, int mode) noexcept nogil:
    cdef Py_ssize_t s, a, e
    for s in range(c.nseg):
        if not _overlap(c.seg, s, lo, hi, &a, &e):
            continue
        if c.coupled and c.seg[3 * s + 2]:
            if mode == SGD_PLAIN:
                _sgd_range(p, g, b, a, e, c, k, SGD_PLAIN, True)
            elif mode == SGD_MOMENTUM:
                _sgd_range(p, g, b, a, e, c, k, SGD_MOMENTUM, True)
            else:
                _sgd_range(p, g, b, a, e, c, k, SGD_NESTEROV, True)
        else:
            if mode == SGD_PLAIN:
                _sgd_range(p, g, b, a, e, c, k, SGD_PLAIN, False)
            elif mode == SGD_MOMENTUM:
                _sgd_range(p, g, b, a, e, c, k, SGD_MOMENTUM, False)
            else:
                _sgd_range(p, g, b, a, e, c, k, SGD_NESTEROV, False)


def sgd(floating[::1] p, const floating[::1] g, floating[::1] buf,
        const Py_ssize_t[:, ::1] segments, double lr, double momentum, double buf_decay,
        double keep, bint nesterov, double grad_scale, double clip, double wd, double l1):
    """SGD with optional momentum / Nesterov, one pass.

    g ← cond(g)                        (clip, sign, L2/L1 on decayed segments)
    if momentum ≠ 0:  b ← buf_decay·b + keep·g
                      g ← g + momentum·b  if nesterov  else  g ← b
    p ← p − lr·g

    The caller passes buf_decay = momentum and keep = 1 − dampening, except at the
    first step: buf_decay = 0, keep = 1 on a zero buffer give b ← g exactly
    (torch.optim.SGD's first step). momentum = 0 is plain SGD: ``buf`` is not touched.
    """
    cdef Py_ssize_t n = p.shape[0], ci
    cdef int nt = threads_for(n, UPDATE_PER_THREAD, kernel_threads())
    cdef int mode = SGD_PLAIN if momentum == 0 else (SGD_NESTEROV if nesterov else SGD_MOMENTUM)
    cdef Common c
    cdef double k[4]
    if n == 0:
        return
    c = _common(segments, grad_scale, clip, wd, l1)
    k[0], k[1], k[2], k[3] = lr, momentum, buf_decay, keep
    cdef floating* pp = &p[0]
    cdef const floating* gp = &g[0]
    cdef floating* bp = &buf[0] if mode != SGD_PLAIN else pp
    with nogil:
        if nt == 1:
            _sgd_span(pp, gp, bp, 0, n, &c, k, mode)
        else:
            for ci in prange(nt, num_threads=nt, schedule='static'):
                _sgd_span(pp, gp, bp, _chunk_edge(n, ci, nt), _chunk_edge(n, ci + 1, nt),
                          &c, k, mode)


# ==== Adagrad ====

cdef inline void _adagrad_range(floating* p, const floating* g, floating* s,
                                Py_ssize_t lo, Py_ssize_t hi, const Common* c,
                                double clr, double eps, bint decayed) noexcept nogil:
    cdef floating scale = <floating>c.scale, clip = <floating>c.clip
    cdef floating wd = <floating>c.wd, l1 = <floating>c.l1
    cdef floating step = <floating>clr, fe = <floating>eps
    cdef floating gi, si
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gi = _cond(g[i], p[i], scale, clip, wd, l1, decayed)
        si = s[i] + gi * gi
        s[i] = si
        p[i] = p[i] - step * gi / (_sqrt(si) + fe)


cdef void _adagrad_span(floating* p, const floating* g, floating* s, Py_ssize_t lo,
                        Py_ssize_t hi, const Common* c, double clr, double eps) noexcept nogil:
    cdef Py_ssize_t k, a, e
    for k in range(c.nseg):
        if not _overlap(c.seg, k, lo, hi, &a, &e):
            continue
        if c.coupled and c.seg[3 * k + 2]:
            _adagrad_range(p, g, s, a, e, c, clr, eps, True)
        else:
            _adagrad_range(p, g, s, a, e, c, clr, eps, False)


def adagrad(floating[::1] p, const floating[::1] g, floating[::1] acc,
            const Py_ssize_t[:, ::1] segments, double clr, double eps,
            double grad_scale, double clip, double wd, double l1):
    """Adagrad, one pass.

    g ← cond(g) ;  s ← s + g² ;  p ← p − clr·g / (√s + eps)
    with clr = lr / (1 + (t − 1)·lr_decay) computed by the caller.
    """
    cdef Py_ssize_t n = p.shape[0], ci
    cdef int nt = threads_for(n, UPDATE_PER_THREAD, kernel_threads())
    cdef Common c
    if n == 0:
        return
    c = _common(segments, grad_scale, clip, wd, l1)
    cdef floating* pp = &p[0]
    cdef const floating* gp = &g[0]
    cdef floating* sp = &acc[0]
    with nogil:
        if nt == 1:
            _adagrad_span(pp, gp, sp, 0, n, &c, clr, eps)
        else:
            for ci in prange(nt, num_threads=nt, schedule='static'):
                _adagrad_span(pp, gp, sp, _chunk_edge(n, ci, nt), _chunk_edge(n, ci + 1, nt),
                              &c, clr, eps)


# ==== RMSprop ====

cdef inline void _rmsprop_range(floating* p, const floating* g, floating* v, floating* a,
                                floating* b, Py_ssize_t lo, Py_ssize_t hi, const Common* c,
                                double lr, double alpha, double eps, double mom,
                                bint centered, bint momentum, bint decayed) noexcept nogil:
    cdef floating scale = <floating>c.scale, clip = <floating>c.clip
    cdef floating wd = <floating>c.wd, l1 = <floating>c.l1
    cdef floating step = <floating>lr, fa = <floating>alpha, fc = <floating>(1 - alpha)
    cdef floating fe = <floating>eps, fm = <floating>mom
    cdef floating gi, vi, ai, d, bi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gi = _cond(g[i], p[i], scale, clip, wd, l1, decayed)
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


cdef void _rmsprop_span(floating* p, const floating* g, floating* v, floating* a, floating* b,
                        Py_ssize_t lo, Py_ssize_t hi, const Common* c, double lr,
                        double alpha, double eps, double mom, bint centered) noexcept nogil:
    cdef Py_ssize_t k, s, e
    cdef bint decayed
    for k in range(c.nseg):
        if not _overlap(c.seg, k, lo, hi, &s, &e):
            continue
        decayed = c.coupled and c.seg[3 * k + 2] != 0
        if centered:
            if mom > 0:
                if decayed:
                    _rmsprop_range(p, g, v, a, b, s, e, c, lr, alpha, eps, mom, True, True, True)
                else:
                    _rmsprop_range(p, g, v, a, b, s, e, c, lr, alpha, eps, mom, True, True, False)
            else:
                if decayed:
                    _rmsprop_range(p, g, v, a, b, s, e, c, lr, alpha, eps, mom, True, False, True)
                else:
                    _rmsprop_range(p, g, v, a, b, s, e, c, lr, alpha, eps, mom, True, False, False)
        else:
            if mom > 0:
                if decayed:
                    _rmsprop_range(p, g, v, a, b, s, e, c, lr, alpha, eps, mom, False, True, True)
                else:
                    _rmsprop_range(p, g, v, a, b, s, e, c, lr, alpha, eps, mom, False, True, False)
            else:
                if decayed:
                    _rmsprop_range(p, g, v, a, b, s, e, c, lr, alpha, eps, mom, False, False, True)
                else:
                    _rmsprop_range(p, g, v, a, b, s, e, c, lr, alpha, eps, mom, False, False, False)


def rmsprop(floating[::1] p, const floating[::1] g, floating[::1] square_avg,
            floating[::1] grad_avg, floating[::1] buf, const Py_ssize_t[:, ::1] segments,
            double lr, double alpha, double eps, double momentum, bint centered,
            double grad_scale, double clip, double wd, double l1):
    """RMSprop, one pass.

    g ← cond(g) ;  v ← α·v + (1 − α)·g²
    centered: a ← α·a + (1 − α)·g ;  ṽ ← v − a²     else ṽ ← v
    d ← √ṽ + eps
    momentum > 0: b ← momentum·b + g/d ;  p ← p − lr·b      else p ← p − lr·g/d
    ``grad_avg`` / ``buf`` are only touched when centered / momentum > 0.
    """
    cdef Py_ssize_t n = p.shape[0], ci
    cdef int nt = threads_for(n, UPDATE_PER_THREAD, kernel_threads())
    cdef Common c
    if n == 0:
        return
    c = _common(segments, grad_scale, clip, wd, l1)
    cdef floating* pp = &p[0]
    cdef const floating* gp = &g[0]
    cdef floating* vp = &square_avg[0]
    cdef floating* ap = &grad_avg[0] if centered else vp
    cdef floating* bp = &buf[0] if momentum > 0 else vp
    with nogil:
        if nt == 1:
            _rmsprop_span(pp, gp, vp, ap, bp, 0, n, &c, lr, alpha, eps, momentum, centered)
        else:
            for ci in prange(nt, num_threads=nt, schedule='static'):
                _rmsprop_span(pp, gp, vp, ap, bp, _chunk_edge(n, ci, nt),
                              _chunk_edge(n, ci + 1, nt), &c, lr, alpha, eps, momentum,
                              centered)


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
                     double shrink) noexcept nogil:
    cdef Py_ssize_t k, s, e
    cdef bint shrinks = shrink != 1
    for k in range(c.nseg):
        if not _overlap(c.seg, k, lo, hi, &s, &e):
            continue
        if not c.seg[3 * k + 2] or not (c.coupled or shrinks):
            _adam_case(p, g, m, v, vmax, s, e, c, beta1, beta2, step_size, inv_sqrt_bc2,
                       eps, shrink, False, False)
        elif c.coupled and shrinks:
            _adam_case(p, g, m, v, vmax, s, e, c, beta1, beta2, step_size, inv_sqrt_bc2,
                       eps, shrink, True, True)
        elif c.coupled:
            _adam_case(p, g, m, v, vmax, s, e, c, beta1, beta2, step_size, inv_sqrt_bc2,
                       eps, shrink, True, False)
        else:
            _adam_case(p, g, m, v, vmax, s, e, c, beta1, beta2, step_size, inv_sqrt_bc2,
                       eps, shrink, False, True)


def adam(floating[::1] p, const floating[::1] g, floating[::1] exp_avg,
         floating[::1] exp_avg_sq, floating[::1] max_exp_avg_sq,
         const Py_ssize_t[:, ::1] segments, double beta1, double beta2, double step_size,
         double inv_sqrt_bc2, double eps, double shrink, bint amsgrad,
         double grad_scale, double clip, double wd, double l1):
    """Adam / AMSGrad / AdamW, one pass.

    g ← cond(g)
    m ← β1·m + (1 − β1)·g ;  v ← β2·v + (1 − β2)·g²
    amsgrad: v̂ ← max(v̂, v) and v̂ replaces v below
    d ← √v · inv_sqrt_bc2 + eps
    p ← shrink·p − step_size · m / d          (shrink on decayed segments only)
    The caller passes step_size = lr / (1 − β1^t), inv_sqrt_bc2 = 1 / √(1 − β2^t), and
    shrink = 1 − lr·wd for AdamW (decoupled decay; then wd = 0 here), 1 for Adam.
    ``max_exp_avg_sq`` is only touched when amsgrad.
    """
    cdef Py_ssize_t n = p.shape[0], ci
    cdef int nt = threads_for(n, UPDATE_PER_THREAD, kernel_threads())
    cdef Common c
    if n == 0:
        return
    c = _common(segments, grad_scale, clip, wd, l1)
    cdef floating* pp = &p[0]
    cdef const floating* gp = &g[0]
    cdef floating* mp = &exp_avg[0]
    cdef floating* vp = &exp_avg_sq[0]
    cdef floating* wp = &max_exp_avg_sq[0] if amsgrad else vp
    c.amsgrad = amsgrad
    with nogil:
        if nt == 1:
            _adam_span(pp, gp, mp, vp, wp, 0, n, &c, beta1, beta2, step_size, inv_sqrt_bc2,
                       eps, shrink)
        else:
            for ci in prange(nt, num_threads=nt, schedule='static'):
                _adam_span(pp, gp, mp, vp, wp, _chunk_edge(n, ci, nt),
                           _chunk_edge(n, ci + 1, nt), &c, beta1, beta2, step_size,
                           inv_sqrt_bc2, eps, shrink)


# ==== global norm ====

def sum_squares(const floating[::1] g, double[::1] partials):
    """Σ g² in double, by fixed blocks of NORM_BLOCK elements merged in block order.

    ``partials`` holds one double per block (ceil(n / NORM_BLOCK) of them; see
    ``norm_blocks``). The block edges depend only on n, so the result is bitwise the
    same for any thread count.
    """
    cdef Py_ssize_t n = g.shape[0], nb = (n + NORM_BLOCK - 1) // NORM_BLOCK
    cdef double total
    if n == 0:
        return 0.0
    if partials.shape[0] < nb:
        raise ValueError(f"partials holds {partials.shape[0]} doubles, {nb} needed")
    with nogil:
        total = _sum_squares(&g[0], n, &partials[0], kernel_threads())
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


cdef inline void _update_chunk(floating* marker, const Update* u, const Common* c,
                               Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef floating* p = <floating*>u.p
    cdef const floating* g = <const floating*>u.g
    cdef floating* s0 = <floating*>u.s0
    cdef floating* s1 = <floating*>u.s1
    cdef floating* s2 = <floating*>u.s2
    if u.kind == UPD_SGD:
        _sgd_span(p, g, s0, lo, hi, c, u.h, u.mode)
    elif u.kind == UPD_ADAGRAD:
        _adagrad_span(p, g, s0, lo, hi, c, u.h[0], u.h[1])
    elif u.kind == UPD_RMSPROP:
        _rmsprop_span(p, g, s0, s1, s2, lo, hi, c, u.h[0], u.h[1], u.h[2], u.h[3], u.mode)
    else:
        _adam_span(p, g, s0, s1, s2, lo, hi, c, u.h[0], u.h[1], u.h[2], u.h[3], u.h[4],
                   u.h[5])


cdef void update_run(Update* u, double grad_scale) noexcept nogil:
    """Run the filled update with this step's gradient scale (clipping factor)."""
    cdef Py_ssize_t n = u.n, ci
    cdef int nt = threads_for(n, UPDATE_PER_THREAD, kernel_threads())
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
        self.u.c = _common(segments, 1.0, clip, wd, l1)
        self.u.c.amsgrad = amsgrad
        self._keep = (p, g, states, segments)

    def scalars(self, tuple h):
        """Only the per-step scalars changed (same arrays, segments and conditioning)."""
        cdef Py_ssize_t k
        for k in range(len(h)):
            self.u.h[k] = h[k]

    def run(self, double grad_scale):
        """Take the step: p and the state updated in place."""
        with nogil:
            update_run(&self.u, grad_scale)
