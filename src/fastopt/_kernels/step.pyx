"""The compiled training step: a model's whole forward, loss, backward and gradient-norm
reduction in one call without the GIL, over a table of stages bound once.

``fastopt.plan`` compiles a model's layers into that table for one batch size and one
mode (training or evaluation), allocating every buffer there; this module only runs it.
Each stage calls the same inline kernels as the per-layer entry points (``_dense_core``,
``_norm_core``, ``_dropout_core``, ``_loss_core``), so the plan gives the same bits as
the layer-by-layer path; the one fusion the table adds, batch norm with the activation
and the dropout after it, is one pass instead of three with the same arithmetic.

One step: gather the batch's rows (a contiguous slice is read in place; shuffled rows are
copied into the plan's own buffers by a parallel gather), back up the batch-norm running
statistics (so a refused step leaves no trace), run the stages forward, the loss (value
and d loss / d output in one pass), the stages backward in reverse (stages before the
first one with parameters are skipped: nothing needs their input gradient), and the sum
of squares of the whole gradient arena for the global norm.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t, uintptr_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from ._parallel cimport threads_for
from ._philox cimport dropout_key, make_key
from ._dense_core cimport (_forward_layer, _backward_layer, _act_forward_rows,
                           _act_backward_rows)
from ._norm_core cimport (_bn_forward_train, _bn_forward_eval, _bn_backward,
                          _bn_local_stats, _bn_finish_output, _bn_grad_sums, _bn_dx)
from ._dropout_core cimport _dropout_forward_at, _dropout_backward
from ._loss_core cimport _batch_loss
from ._reduce cimport _sum_squares
from .optim cimport BoundUpdate, update_run
from libc.math cimport sqrt, isfinite

cdef enum:
    ST_DENSE = 0
    ST_BATCHNORM = 1
    ST_ACTIVATION = 2
    ST_DROPOUT = 3
    ST_AFFINE = 4          # y = (x − mean)·inv (Standardize)
    ST_COPY = 5            # y = x (a model whose every layer is the identity here)
    # Bytes under which a gather stays on one thread.
    GATHER_PER_THREAD = 65536

STAGE_KINDS = {"dense": ST_DENSE, "batchnorm": ST_BATCHNORM, "activation": ST_ACTIVATION,
               "dropout": ST_DROPOUT, "affine": ST_AFFINE, "copy": ST_COPY}

# Buffer fields of a stage, by name (fastopt.plan fills them; 0 = unused).
cdef enum:
    F_X, F_Y, F_Z, F_DZ, F_DX, F_DY, F_W, F_B, F_DW, F_DB, F_MEAN, F_INVSTD, \
        F_RUNNING_MEAN, F_RUNNING_VAR, F_BACKUP_MEAN, F_BACKUP_VAR, F_PARTIAL, F_COEF, \
        F_BITS, N_FIELDS

FIELDS = ("x", "y", "z", "dz", "dx", "dy", "w", "b", "dw", "db", "mean", "invstd",
          "running_mean", "running_var", "backup_mean", "backup_var", "partial", "coef",
          "bits")


ctypedef struct Stage:
    int kind
    Py_ssize_t d_in, d_out
    int act
    double alpha
    bint has_bias
    bint backprop          # the backward pass runs this stage
    bint need_dx           # ... and must produce its input gradient
    bint dropout           # batch norm: fused dropout; dropout stage: always
    uint32_t threshold, layer
    double scale           # dropout's 1/(1 − rate)
    double momentum, eps
    Py_ssize_t wpr         # mask words per row
    uintptr_t f[N_FIELDS]


cdef inline void _gather(const char* src, char* dst, const int64_t* idx, Py_ssize_t rows,
                         Py_ssize_t row_bytes, int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef int nt = threads_for(rows * row_bytes, GATHER_PER_THREAD, n_threads)
    for i in prange(rows, num_threads=nt, schedule='static'):
        memcpy(dst + i * row_bytes, src + idx[i] * row_bytes, row_bytes)


cdef void _forward(floating* marker, Stage* stages, Py_ssize_t n, Py_ssize_t N,
                   uint64_t seed, uint64_t step, bint training,
                   Py_ssize_t row0, int n_threads) noexcept nogil:
    cdef Py_ssize_t s
    for s in range(n):
        _forward_stage(marker, &stages[s], N, seed, step, training, row0, n_threads)


cdef void _backward(floating* marker, Stage* stages, Py_ssize_t n,
                    Py_ssize_t N, int n_threads) noexcept nogil:
    cdef Py_ssize_t s
    for s in range(n - 1, -1, -1):
        if not stages[s].backprop:
            break
        _backward_stage(marker, &stages[s], N, n_threads)


cdef void _forward_stage(floating* marker, Stage* st, Py_ssize_t N, uint64_t seed,
                         uint64_t step, bint training, Py_ssize_t row0, int n_threads) noexcept nogil:
    # row0: the batch's first row within the global batch its dropout masks are drawn
    # for (0 but in data-parallel training; batch norm's row0 goes through bn_output).
    cdef dropout_key key
    if st.kind == ST_DENSE:
        _forward_layer(<const floating*>st.f[F_X], <const floating*>st.f[F_W],
                       <const floating*>st.f[F_B], <floating*>st.f[F_Z],
                       <floating*>st.f[F_Y], N, <int>st.d_in, st.d_out, st.act,
                       <floating>st.alpha, st.has_bias, n_threads)
    elif st.kind == ST_BATCHNORM:
        if training:
            key = make_key(seed, step, st.layer, st.threshold)
            memcpy(<void*>st.f[F_BACKUP_MEAN], <void*>st.f[F_RUNNING_MEAN],
                   st.d_out * sizeof(floating))
            memcpy(<void*>st.f[F_BACKUP_VAR], <void*>st.f[F_RUNNING_VAR],
                   st.d_out * sizeof(floating))
            _bn_forward_train(<const floating*>st.f[F_X], <const floating*>st.f[F_W],
                              <const floating*>st.f[F_B], <floating*>st.f[F_Y],
                              <double*>st.f[F_MEAN], <double*>st.f[F_INVSTD],
                              <floating*>st.f[F_RUNNING_MEAN],
                              <floating*>st.f[F_RUNNING_VAR], <double*>st.f[F_PARTIAL],
                              <floating*>st.f[F_COEF], st.momentum, st.eps, st.act,
                              <floating>st.alpha, <uint32_t*>st.f[F_BITS], st.wpr, &key,
                              <floating>st.scale, st.dropout, N, st.d_out, n_threads)
        else:
            _bn_forward_eval(<const floating*>st.f[F_X], <const floating*>st.f[F_W],
                             <const floating*>st.f[F_B],
                             <const floating*>st.f[F_RUNNING_MEAN],
                             <const floating*>st.f[F_RUNNING_VAR],
                             <floating*>st.f[F_COEF], <floating*>st.f[F_Y], st.eps,
                             st.act, <floating>st.alpha, N, st.d_out, n_threads)
    elif st.kind == ST_ACTIVATION:
        _act_forward_rows(<const floating*>st.f[F_X], <floating*>st.f[F_Y], N, st.d_out,
                          st.act, <floating>st.alpha, n_threads)
    elif st.kind == ST_DROPOUT:
        key = make_key(seed, step, st.layer, st.threshold)
        _dropout_forward_at(<const floating*>st.f[F_X], <floating*>st.f[F_Y],
                            <uint32_t*>st.f[F_BITS], st.wpr, &key, <floating>st.scale, N,
                            st.d_out, row0, n_threads)
    elif st.kind == ST_AFFINE:
        _affine_rows(<const floating*>st.f[F_X], <const floating*>st.f[F_W],
                     <const floating*>st.f[F_B], <floating*>st.f[F_Y], N, st.d_out)
    else:
        memcpy(<void*>st.f[F_Y], <void*>st.f[F_X], N * st.d_out * sizeof(floating))


cdef inline void _affine_rows(const floating* x, const floating* mean, const floating* inv,
                              floating* y, Py_ssize_t N, Py_ssize_t d) noexcept nogil:
    # (x − mean)·inv, rounded after each operation as numpy's two ufunc calls do.
    cdef Py_ssize_t i, j
    cdef floating t
    for i in range(N):
        for j in range(d):
            t = x[i * d + j] - mean[j]
            y[i * d + j] = t * inv[j]


cdef void _backward_stage(floating* marker, Stage* st, Py_ssize_t N, int n_threads) noexcept nogil:
    cdef Py_ssize_t j
    if st.kind == ST_DENSE:
        _backward_layer(<const floating*>st.f[F_DY], <const floating*>st.f[F_X],
                        <const floating*>st.f[F_W], <const floating*>st.f[F_Y],
                        <const floating*>st.f[F_Z], <floating*>st.f[F_DZ],
                        <floating*>st.f[F_DW], <floating*>st.f[F_DB],
                        <floating*>st.f[F_DX], N, st.d_in, st.d_out, st.act,
                        <floating>st.alpha, st.has_bias, st.need_dx, n_threads)
    elif st.kind == ST_BATCHNORM:
        _bn_backward(<const floating*>st.f[F_X], <const floating*>st.f[F_DY],
                     <const floating*>st.f[F_W], <const double*>st.f[F_MEAN],
                     <const double*>st.f[F_INVSTD], <double*>st.f[F_PARTIAL],
                     <floating*>st.f[F_COEF], <floating*>st.f[F_DX],
                     <floating*>st.f[F_DW], <floating*>st.f[F_DB], st.act,
                     <floating>st.alpha, <const uint32_t*>st.f[F_BITS], st.wpr,
                     <floating>st.scale, st.dropout, st.need_dx, N, st.d_out, n_threads)
    elif st.kind == ST_ACTIVATION:
        _act_backward_rows(<const floating*>st.f[F_DY], <const floating*>st.f[F_Y],
                           <const floating*>st.f[F_X], <floating*>st.f[F_DX], N,
                           st.d_out, st.act, <floating>st.alpha, n_threads)
    elif st.kind == ST_DROPOUT:
        _dropout_backward(<const floating*>st.f[F_DY], <const uint32_t*>st.f[F_BITS],
                          st.wpr, <floating*>st.f[F_DX], <floating>st.scale, N,
                          st.d_out, n_threads)
    elif st.kind == ST_AFFINE:
        for j in range(N * st.d_out):
            (<floating*>st.f[F_DX])[j] = ((<const floating*>st.f[F_DY])[j]
                                          * (<const floating*>st.f[F_B])[j % st.d_out])
    else:
        memcpy(<void*>st.f[F_DX], <void*>st.f[F_DY], N * st.d_out * sizeof(floating))


cdef double _weight_sum(const floating* w, Py_ssize_t n) noexcept nogil:
    # In row order, in float64: Loss.scale_for sums the same way (a cumulative sum).
    cdef double total = 0
    cdef Py_ssize_t i
    for i in range(n):
        total += w[i]
    return total


cdef class StepPlan:
    """A compiled stage table (built by fastopt.plan, which owns and checks every buffer;
    not a public API). ``stages`` is a list of dicts: "kind", the scalars of ``Stage``
    and the buffer fields of ``FIELDS`` as arrays (None for unused)."""

    cdef Stage* stages
    cdef Py_ssize_t n_stages, N, n_out, n_in, n_grad
    cdef bint is_double, training
    cdef uint64_t seed
    cdef int loss_kind
    cdef double smoothing
    # the batch: where stage 0 reads and the loss reads targets and weights
    cdef uintptr_t x_src, t_src, w_src, x_own, t_own, w_own, ones
    cdef Py_ssize_t x_row, t_row
    cdef bint weighted
    cdef uintptr_t _t, _w      # the current batch's targets and weights
    cdef uintptr_t out, dout, row_loss, grad, partials
    cdef readonly double grad_sum_squares
    cdef readonly double loss_scale
    cdef readonly double grad_scale     # the clipping factor the update was given
    cdef readonly bint applied          # run_step took the optimizer's step
    # data-parallel training (fastopt.distributed): this rank's share starts at row
    # ``row0`` of the global batch (dropout masks), and the loss is scaled by the global
    # batch's 1/N or 1/Σw (``scale_override`` ≥ 0) instead of the share's
    cdef readonly Py_ssize_t row0
    cdef readonly double scale_override
    cdef object _keep, _data

    def __cinit__(self, list stages, Py_ssize_t N, bint is_double, bint training,
                  uint64_t seed, object x_own, object t_own, object w_own, object ones,
                  object out, object dout, object row_loss, object grad, object partials,
                  int loss_kind, double smoothing):
        cdef Py_ssize_t s, k
        self.n_stages = len(stages)
        self.stages = <Stage*>calloc(max(1, self.n_stages), sizeof(Stage))
        if self.stages == NULL:
            raise MemoryError()
        self.N, self.is_double, self.training, self.seed = N, is_double, training, seed
        for s, spec in enumerate(stages):
            st = &self.stages[s]
            st.kind = STAGE_KINDS[spec["kind"]]
            st.d_in, st.d_out = spec["d_in"], spec["d_out"]
            st.act, st.alpha = spec.get("act", 0), spec.get("alpha", 0.0)
            st.has_bias = spec.get("has_bias", False)
            st.backprop, st.need_dx = spec["backprop"], spec["need_dx"]
            st.dropout = spec.get("dropout", False)
            st.threshold, st.layer = spec.get("threshold", 0), spec.get("layer", 0)
            st.scale = spec.get("scale", 1.0)
            st.momentum, st.eps = spec.get("momentum", 0.0), spec.get("eps", 0.0)
            st.wpr = spec.get("wpr", 0)
            for k, name in enumerate(FIELDS):
                st.f[k] = _address(spec.get(name))
        self.n_in = stages[0]["d_in"]
        self.n_out = stages[self.n_stages - 1]["d_out"]
        self.x_own, self.t_own, self.w_own = _address(x_own), _address(t_own), _address(w_own)
        self.ones, self.out, self.dout = _address(ones), _address(out), _address(dout)
        self.row_loss, self.grad = _address(row_loss), _address(grad)
        self.partials = _address(partials)
        self.n_grad = 0 if grad is None else grad.shape[0]
        self.loss_kind, self.smoothing = loss_kind, smoothing
        self._keep = (stages, x_own, t_own, w_own, ones, out, dout, row_loss, grad, partials)
        self._data = None
        self.x_src = self.t_src = self.w_src = 0
        self.x_row = self.t_row = 0
        self.row0 = 0
        self.scale_override = -1.0

    def __dealloc__(self):
        free(self.stages)

    def bind_data(self, X, T, W):
        """The arrays batches are taken from (C-contiguous, checked by the caller):
        X (n, n_in); T the targets (labels (n,) int64 or (n, K)), or None; W (n,) or None."""
        self._data = (X, T, W)
        self.x_src = _address(X)
        self.x_row = X.strides[0]
        self.t_src = _address(T)
        self.t_row = 0 if T is None else T.strides[0]
        self.w_src = _address(W)
        self.weighted = W is not None

    cdef void _place(self, const int64_t* idx, Py_ssize_t start, int n_threads) noexcept nogil:
        """Point stage 0, the targets and the weights at the batch: rows start.. of the
        bound data, or its rows idx[0..N) gathered into the plan's own buffers."""
        cdef Py_ssize_t N = self.N
        if idx == NULL:
            self.stages[0].f[F_X] = self.x_src + start * self.x_row
            self._t = self.t_src + start * self.t_row if self.t_src else 0
            self._w = self.w_src + start * (8 if self.is_double else 4) if self.weighted \
                else self.ones
        else:
            _gather(<const char*>self.x_src, <char*>self.x_own, idx, N, self.x_row, n_threads)
            self.stages[0].f[F_X] = self.x_own
            if self.t_src:
                _gather(<const char*>self.t_src, <char*>self.t_own, idx, N, self.t_row, n_threads)
                self._t = self.t_own
            else:
                self._t = 0
            if self.weighted:
                _gather(<const char*>self.w_src, <char*>self.w_own, idx, N,
                        8 if self.is_double else 4, n_threads)
                self._w = self.w_own
            else:
                self._w = self.ones

    def run(self, uint64_t step, const int64_t[::1] idx=None, Py_ssize_t start=0, *, int n_threads):
        """One training step's forward, fused loss and backward on the batch (rows
        ``start..start+N`` of the bound data, or its rows ``idx[start:start+N]``).
        Returns scale·Σ wᵢℓᵢ; leaves the arena's Σg² in ``grad_sum_squares``."""
        cdef const int64_t* ip = &idx[start] if idx is not None else NULL
        cdef double total, scale
        cdef Stage* last = &self.stages[self.n_stages - 1]
        with nogil:
            self._place(ip, start, n_threads)
            if self.is_double:
                scale = (_weight_sum(<const double*>self._w, self.N) if self.weighted
                         else <double>self.N)
                scale = 1.0 / scale if scale > 0 else 0.0
                if self.scale_override >= 0:
                    scale = self.scale_override
                _forward(<double*>NULL, self.stages, self.n_stages, self.N, self.seed, step,
                         self.training, self.row0, n_threads)
                total = _batch_loss(self.loss_kind, <const double*>self.out,
                                    <const double*>self._t, <const long long*>self._t,
                                    <const double*>self._w, scale, self.smoothing,
                                    <double*>self.dout, <double*>self.row_loss, self.N,
                                    self.n_out, n_threads)
                _backward(<double*>NULL, self.stages, self.n_stages, self.N, n_threads)
                self.grad_sum_squares = _sum_squares(<const double*>self.grad, self.n_grad,
                                                     <double*>self.partials, n_threads)
            else:
                scale = (_weight_sum(<const float*>self._w, self.N) if self.weighted
                         else <double>self.N)
                scale = 1.0 / scale if scale > 0 else 0.0
                if self.scale_override >= 0:
                    scale = self.scale_override
                _forward(<float*>NULL, self.stages, self.n_stages, self.N, self.seed, step,
                         self.training, self.row0, n_threads)
                total = _batch_loss(self.loss_kind, <const float*>self.out,
                                    <const float*>self._t, <const long long*>self._t,
                                    <const float*>self._w, scale, self.smoothing,
                                    <float*>self.dout, <double*>self.row_loss, self.N,
                                    self.n_out, n_threads)
                _backward(<float*>NULL, self.stages, self.n_stages, self.N, n_threads)
                self.grad_sum_squares = _sum_squares(<const float*>self.grad, self.n_grad,
                                                     <double*>self.partials, n_threads)
        self.loss_scale = scale
        return total

    def run_step(self, uint64_t step, const int64_t[::1] idx, Py_ssize_t start,
                 BoundUpdate update, double clip_norm, *, int n_threads):
        """``run``, then, when the loss and the gradient norm are finite, the optimizer's
        prepared update with the clipping factor min(1, clip_norm / (‖g‖ + 1e-6))
        (clip_norm ≤ 0: no clipping), all in the same call. ``applied`` tells whether the
        update was taken; when not, nothing was changed but the batch-norm running
        statistics (``restore_state`` puts them back) and the gradient buffer."""
        cdef double total = self.run(step, idx, start, n_threads=n_threads)
        cdef double norm = sqrt(self.grad_sum_squares), gscale = 1.0
        self.applied = False
        if isfinite(total) and isfinite(norm):
            if clip_norm > 0:
                gscale = min(1.0, clip_norm / (norm + 1e-6))
            self.grad_scale = gscale
            with nogil:
                update_run(&update.u, gscale, n_threads)
            self.applied = True
        return total

    def forward(self, uint64_t step, const int64_t[::1] idx=None, Py_ssize_t start=0, *, int n_threads):
        """The forward stages only (evaluation plans, and losses without a fused kernel):
        the output is in the plan's output buffer."""
        cdef const int64_t* ip = &idx[start] if idx is not None else NULL
        with nogil:
            self._place(ip, start, n_threads)
            if self.is_double:
                _forward(<double*>NULL, self.stages, self.n_stages, self.N, self.seed, step,
                         self.training, self.row0, n_threads)
            else:
                _forward(<float*>NULL, self.stages, self.n_stages, self.N, self.seed, step,
                         self.training, self.row0, n_threads)

    def backward(self, *, int n_threads):
        """The backward stages from d loss / d output already in the plan's ``dout``
        buffer, then the arena's Σg² (``grad_sum_squares``)."""
        with nogil:
            if self.is_double:
                _backward(<double*>NULL, self.stages, self.n_stages, self.N, n_threads)
                self.grad_sum_squares = _sum_squares(<const double*>self.grad, self.n_grad,
                                                     <double*>self.partials, n_threads)
            else:
                _backward(<float*>NULL, self.stages, self.n_stages, self.N, n_threads)
                self.grad_sum_squares = _sum_squares(<const float*>self.grad, self.n_grad,
                                                     <double*>self.partials, n_threads)

    # -- one piece at a time: where a step's time goes (benchmarks/compare.py --breakdown) --

    def forward_stage(self, Py_ssize_t s, uint64_t step, *, int n_threads):
        """Stage s's forward alone (after a ``forward`` or ``run`` placed the batch)."""
        with nogil:
            if self.is_double:
                _forward_stage(<double*>NULL, &self.stages[s], self.N, self.seed, step,
                               self.training, self.row0, n_threads)
            else:
                _forward_stage(<float*>NULL, &self.stages[s], self.N, self.seed, step,
                               self.training, self.row0, n_threads)

    def backward_stage(self, Py_ssize_t s, *, int n_threads):
        """Stage s's backward alone (a no-op for stages the backward pass skips)."""
        if not self.stages[s].backprop:
            return
        with nogil:
            if self.is_double:
                _backward_stage(<double*>NULL, &self.stages[s], self.N, n_threads)
            else:
                _backward_stage(<float*>NULL, &self.stages[s], self.N, n_threads)

    def loss_only(self, *, int n_threads):
        """The fused loss alone, on the current output (scale 1/N)."""
        cdef double total
        with nogil:
            if self.is_double:
                total = _batch_loss(self.loss_kind, <const double*>self.out,
                                    <const double*>self._t, <const long long*>self._t,
                                    <const double*>self._w, 1.0 / self.N, self.smoothing,
                                    <double*>self.dout, <double*>self.row_loss, self.N,
                                    self.n_out, n_threads)
            else:
                total = _batch_loss(self.loss_kind, <const float*>self.out,
                                    <const float*>self._t, <const long long*>self._t,
                                    <const float*>self._w, 1.0 / self.N, self.smoothing,
                                    <float*>self.dout, <double*>self.row_loss, self.N,
                                    self.n_out, n_threads)
        return total

    def norm_only(self, *, int n_threads):
        """The gradient arena's Σg² alone."""
        with nogil:
            if self.is_double:
                self.grad_sum_squares = _sum_squares(<const double*>self.grad, self.n_grad,
                                                     <double*>self.partials, n_threads)
            else:
                self.grad_sum_squares = _sum_squares(<const float*>self.grad, self.n_grad,
                                                     <double*>self.partials, n_threads)
        return self.grad_sum_squares

    def gather_only(self, const int64_t[::1] idx, Py_ssize_t start=0, *, int n_threads):
        """The batch gather alone (rows idx[start:start+N] into the plan's buffers)."""
        with nogil:
            self._place(&idx[start], start, n_threads)

    # -- data-parallel training (fastopt.distributed drives these between collectives) --

    def set_share(self, Py_ssize_t row0, double loss_scale):
        """This rank's share starts at row ``row0`` of the global batch; the loss (and so
        d loss / d output) is scaled by ``loss_scale`` (the global batch's 1/N or 1/Σw;
        negative: the share's own, as a single process)."""
        self.row0, self.scale_override = row0, loss_scale

    def place(self, const int64_t[::1] idx=None, Py_ssize_t start=0, *, int n_threads):
        """Point the plan at the batch (and gather shuffled rows) without running it."""
        cdef const int64_t* ip = &idx[start] if idx is not None else NULL
        with nogil:
            self._place(ip, start, n_threads)

    def loss_scaled(self, double scale, *, int n_threads):
        """The fused loss on the current output with the given scale."""
        cdef double total
        with nogil:
            if self.is_double:
                total = _batch_loss(self.loss_kind, <const double*>self.out,
                                    <const double*>self._t, <const long long*>self._t,
                                    <const double*>self._w, scale, self.smoothing,
                                    <double*>self.dout, <double*>self.row_loss, self.N,
                                    self.n_out, n_threads)
            else:
                total = _batch_loss(self.loss_kind, <const float*>self.out,
                                    <const float*>self._t, <const long long*>self._t,
                                    <const float*>self._w, scale, self.smoothing,
                                    <float*>self.dout, <double*>self.row_loss, self.N,
                                    self.n_out, n_threads)
        return total

    def weight_sum(self):
        """Σw of the placed batch in row order, float64 (N without weights)."""
        if not self.weighted:
            return <double>self.N
        if self.is_double:
            return _weight_sum(<const double*>self._w, self.N)
        return _weight_sum(<const float*>self._w, self.N)

    def bn_stats(self, Py_ssize_t s, *, int n_threads):
        """Batch-norm stage s, forward, first half: back up the running statistics and
        leave this share's mean and M2 per feature in the stage's ``mean`` and ``invstd``
        buffers (the caller merges them over the ranks and writes the global ones back)."""
        cdef Stage* st = &self.stages[s]
        cdef size_t item = 8 if self.is_double else 4
        with nogil:
            memcpy(<void*>st.f[F_BACKUP_MEAN], <void*>st.f[F_RUNNING_MEAN], st.d_out * item)
            memcpy(<void*>st.f[F_BACKUP_VAR], <void*>st.f[F_RUNNING_VAR], st.d_out * item)
            if self.is_double:
                _bn_local_stats(<const double*>st.f[F_X], <double*>st.f[F_PARTIAL],
                                <double*>st.f[F_MEAN], <double*>st.f[F_INVSTD], self.N,
                                st.d_out, n_threads)
            else:
                _bn_local_stats(<const float*>st.f[F_X], <double*>st.f[F_PARTIAL],
                                <double*>st.f[F_MEAN], <double*>st.f[F_INVSTD], self.N,
                                st.d_out, n_threads)

    def bn_output(self, Py_ssize_t s, uint64_t step, Py_ssize_t n_global, *, int n_threads):
        """Second half: normalize with the global mean and M2 now in ``mean``/``invstd``
        (n_global rows), update the running statistics, write the share's output (with
        the fused activation and the dropout of global rows row0..)."""
        cdef Stage* st = &self.stages[s]
        cdef dropout_key key = make_key(self.seed, step, st.layer, st.threshold)
        with nogil:
            if self.is_double:
                _bn_finish_output(<const double*>st.f[F_X], <const double*>st.f[F_W],
                                  <const double*>st.f[F_B], <double*>st.f[F_Y],
                                  <const double*>st.f[F_MEAN], <double*>st.f[F_INVSTD],
                                  <double*>st.f[F_RUNNING_MEAN],
                                  <double*>st.f[F_RUNNING_VAR], <double*>st.f[F_COEF],
                                  st.momentum, st.eps, st.act, <double>st.alpha,
                                  <uint32_t*>st.f[F_BITS], st.wpr, &key, <double>st.scale,
                                  st.dropout, self.N, st.d_out, n_global, self.row0, n_threads)
            else:
                _bn_finish_output(<const float*>st.f[F_X], <const float*>st.f[F_W],
                                  <const float*>st.f[F_B], <float*>st.f[F_Y],
                                  <const double*>st.f[F_MEAN], <double*>st.f[F_INVSTD],
                                  <float*>st.f[F_RUNNING_MEAN],
                                  <float*>st.f[F_RUNNING_VAR], <float*>st.f[F_COEF],
                                  st.momentum, st.eps, st.act, <float>st.alpha,
                                  <uint32_t*>st.f[F_BITS], st.wpr, &key, <float>st.scale,
                                  st.dropout, self.N, st.d_out, n_global, self.row0, n_threads)

    def bn_grad_sums(self, Py_ssize_t s, *, int n_threads):
        """Batch-norm stage s, backward, first half: g into dX and the share's Σg, Σg·x̂
        into ``partial[0, 0]``, ``partial[0, 1]`` (and into dβ, dγ of the arena)."""
        cdef Stage* st = &self.stages[s]
        with nogil:
            if self.is_double:
                _bn_grad_sums(<const double*>st.f[F_X], <const double*>st.f[F_DY],
                              <const double*>st.f[F_MEAN], <const double*>st.f[F_INVSTD],
                              <double*>st.f[F_PARTIAL], <double*>st.f[F_COEF],
                              <double*>st.f[F_DX], <double*>st.f[F_DW],
                              <double*>st.f[F_DB], st.act, <double>st.alpha,
                              <const uint32_t*>st.f[F_BITS], st.wpr, <double>st.scale,
                              st.dropout, self.N, st.d_out, n_threads)
            else:
                _bn_grad_sums(<const float*>st.f[F_X], <const float*>st.f[F_DY],
                              <const double*>st.f[F_MEAN], <const double*>st.f[F_INVSTD],
                              <double*>st.f[F_PARTIAL], <float*>st.f[F_COEF],
                              <float*>st.f[F_DX], <float*>st.f[F_DW],
                              <float*>st.f[F_DB], st.act, <float>st.alpha,
                              <const uint32_t*>st.f[F_BITS], st.wpr, <float>st.scale,
                              st.dropout, self.N, st.d_out, n_threads)

    def bn_dx(self, Py_ssize_t s, Py_ssize_t n_global, *, int n_threads):
        """Second half: dX of the share from the global sums now in ``partial[0]``
        (nothing when the stage needs no input gradient)."""
        cdef Stage* st = &self.stages[s]
        if not st.need_dx:
            return
        with nogil:
            if self.is_double:
                _bn_dx(<const double*>st.f[F_X], <const double*>st.f[F_W],
                       <const double*>st.f[F_INVSTD], <const double*>st.f[F_PARTIAL],
                       <double*>st.f[F_COEF], <double*>st.f[F_DX], self.N, st.d_out,
                       n_global, n_threads)
            else:
                _bn_dx(<const float*>st.f[F_X], <const float*>st.f[F_W],
                       <const double*>st.f[F_INVSTD], <const double*>st.f[F_PARTIAL],
                       <float*>st.f[F_COEF], <float*>st.f[F_DX], self.N, st.d_out,
                       n_global, n_threads)

    def restore_state(self):
        """Put back the batch-norm running statistics saved by the last training forward
        (a refused, non-finite step)."""
        cdef Py_ssize_t s
        cdef Stage* st
        for s in range(self.n_stages):
            st = &self.stages[s]
            if st.kind == ST_BATCHNORM and self.training:
                memcpy(<void*>st.f[F_RUNNING_MEAN], <void*>st.f[F_BACKUP_MEAN],
                       st.d_out * (8 if self.is_double else 4))
                memcpy(<void*>st.f[F_RUNNING_VAR], <void*>st.f[F_BACKUP_VAR],
                       st.d_out * (8 if self.is_double else 4))


cdef uintptr_t _address(object array):
    return <uintptr_t>0 if array is None else <uintptr_t>array.__array_interface__["data"][0]
