r"""Optimizers: hyperparameters and state; each update is one kernel pass over a flat array.

Two ways to drive an optimizer:

1. through ``fastopt.Trainer``, on the model's parameter arena;
2. directly on flat arrays: ``opt.step(params, grads)`` updates a 1-D C-contiguous
   float32/float64 ``params`` in place, allocating state on the first call and counting
   steps itself.

Every optimizer conditions the gradient the same way, inside its single pass and in
this order (torch.optim's, ``maximize`` and weight decay included):

.. code-block:: text

    g ← grad_scale · g                 clipping by global norm (the scale comes from
                                       global_norm / clip_scale, computed before the step)
    g ← clamp(g, −clip_value, clip_value)     if clip_value is set
    g ← −g                             if maximize
    g ← g + weight_decay·p + l1·sign(p)       on decayed elements only (sign(0) = 0)

then its own update. ``clip_value`` is a constructor argument (it is a property of the
recipe, like the learning rate); ``grad_scale`` is a ``step`` argument (it changes
every step).

Parameter groups: ``step(params, grads, segments)`` takes contiguous runs
``(start, stop, decay)`` covering the whole array (``ParamArena.segments()``); weight
decay, L1 and AdamW's decoupled decay apply only where ``decay`` is true. Without
segments every element is decayed.
"""

import math
import numbers

import numpy as np

from ._kernels import optim as _optim
from .params import aligned_zeros
from .threads import get_num_threads
from .validation import check_number as _check_number, lookup

__all__ = [
    "Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW",
    "OPTIMIZERS", "get_optimizer", "global_norm", "clip_scale",
]

_INF = float("inf")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _aligned_zeros(n, dtype, fill=0.0):
    out = aligned_zeros(n, dtype)
    if fill:
        out.fill(fill)
    return out


# ---- gradient clipping by global norm ----

def global_norm(grads):
    """‖g‖₂ over a 1-D float32/float64 array, as a Python float.

    Squares are summed in double over fixed blocks of 4096 elements, the block sums
    merged in block order: the result is bitwise identical for any thread count.
    Non-finite gradients give a non-finite norm (inf or nan); check before using it.
    """
    if not isinstance(grads, np.ndarray) or grads.ndim != 1:
        raise ValueError("grads must be a 1-D numpy array")
    if grads.dtype not in _FLOATS:
        raise TypeError(f"grads must be float32 or float64, got {grads.dtype}")
    if not grads.flags.c_contiguous:
        raise ValueError("grads must be C-contiguous")
    partials = np.empty(_optim.norm_blocks(grads.shape[0]), dtype=np.float64)
    return math.sqrt(_optim.sum_squares(grads, partials, n_threads=get_num_threads()))


def clip_scale(norm, max_norm):
    """The factor that clips a gradient of norm ``norm`` to ``max_norm``.

    ``s = min(1, max_norm / (norm + 1e-6))``, as torch.nn.utils.clip_grad_norm_.
    A non-finite ``norm`` raises FloatingPointError: a scale made from it would
    corrupt every parameter, so the caller decides (raise or skip the step).
    """
    norm = float(norm)
    max_norm = float(max_norm)
    if not math.isfinite(max_norm) or max_norm <= 0:
        raise ValueError(f"max_norm must be a finite number > 0, got {max_norm}")
    if not math.isfinite(norm):
        raise FloatingPointError(f"the gradient norm is {norm}; the step must not use it")
    if norm < 0:
        raise ValueError(f"a norm is >= 0, got {norm}")
    return min(1.0, max_norm / (norm + 1e-6))


# ---- argument checks ----

def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _segment_table(segments, n):
    """Segments as the kernels' (k, 3) intp table, checked to tile [0, n) in order."""
    try:
        table = np.array(segments, dtype=np.intp)
    except (TypeError, ValueError) as exc:
        raise ValueError("segments must be a sequence of (start, stop, decay) triples") from exc
    if table.ndim != 2 or table.shape[1] != 3 or table.shape[0] == 0:
        raise ValueError("segments must be a non-empty sequence of (start, stop, decay) "
                         f"triples, got an array of shape {table.shape}")
    starts, stops = table[:, 0], table[:, 1]
    if (starts[0] != 0 or stops[-1] != n or np.any(stops < starts)
            or np.any(starts[1:] != stops[:-1])):
        raise ValueError(f"segments must be contiguous runs (start, stop, decay) covering "
                         f"[0, {n}) in order, got {table.tolist()}")
    table[:, 2] = table[:, 2] != 0
    return np.ascontiguousarray(table)


# ---- the optimizers ----

class Optimizer:
    """Base class: learning rate, step counter, gradient conditioning, state handling.

    Subclasses name their state buffers in ``_state_names`` (allocated on the first
    step with the size and dtype of ``params``), list their hyperparameters in
    ``_hyper`` and implement ``_update``.
    """

    name = None
    _state_names = ()

    def __init__(self, lr, *, weight_decay=0.0, l1=0.0, maximize=False, clip_value=None):
        self.lr = lr
        self.t = 0
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0)
        self.l1 = _check_number(l1, "l1", low=0)
        self.maximize = _check_bool(maximize, "maximize")
        if clip_value is not None:
            clip_value = _check_number(clip_value, "clip_value", low=0, low_open=True)
        self.clip_value = clip_value
        self._state = None          # {name: array}, allocated by the first step
        self._n = -1
        self._dtype = None
        self._full = None           # segments table for "everything decayed"
        self._seg_copy = None       # the last segments given, and their table
        self._seg_table = None

    # -- learning rate --
    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"learning rate must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"learning rate must be a finite number >= 0, got {value}")
        self._lr = value

    # -- hyperparameters, for repr and state_dict --
    def _hyper(self):
        return {"weight_decay": self.weight_decay, "l1": self.l1,
                "maximize": self.maximize, "clip_value": self.clip_value}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in {"lr": self.lr, **self._hyper()}.items())
        return f"{type(self).__name__}({args})"

    # -- checks --
    @staticmethod
    def _check_flat(params, grads):
        for name, arr in (("params", params), ("grads", grads)):
            if not isinstance(arr, np.ndarray) or arr.ndim != 1:
                raise ValueError(f"{name} must be a 1-D numpy array")
            if arr.dtype not in _FLOATS:
                raise TypeError(f"{name} must be float32 or float64, got {arr.dtype}")
            if not arr.flags.c_contiguous:
                raise ValueError(f"{name} must be C-contiguous")
        if not params.flags.writeable:
            raise ValueError("params must be writeable: the update is in place")
        if params.shape != grads.shape or params.dtype != grads.dtype:
            raise ValueError(f"params {params.shape} {params.dtype} and grads "
                             f"{grads.shape} {grads.dtype} must match in shape and dtype")

    # -- stepping --
    def step(self, params, grads, segments=None, grad_scale=1.0):
        """Update ``params`` in place from ``grads`` (1-D, C-contiguous, same dtype).

        segments: None (every element decayed) or contiguous runs ``(start, stop,
        decay)`` covering the array. grad_scale: the global-norm clipping factor
        (``clip_scale(global_norm(grads), max_norm)``), finite and >= 0.
        """
        # The common case in one expression (~1 µs); the detailed checks name the fault.
        if not (type(params) is np.ndarray and type(grads) is np.ndarray
                and params.ndim == 1 and params.shape == grads.shape
                and params.dtype is grads.dtype and params.dtype in _FLOATS
                and params.flags.c_contiguous and grads.flags.c_contiguous
                and params.flags.writeable):
            self._check_flat(params, grads)
        if np.may_share_memory(params, grads):
            raise ValueError("params and grads must not overlap in memory")
        if not (type(grad_scale) is float and 0.0 <= grad_scale < _INF):
            grad_scale = _check_number(grad_scale, "grad_scale", low=0)
        if self._state is not None and (params.shape[0] != self._n
                                        or params.dtype != self._dtype):
            self._mismatch(params)
        if segments is not None:
            self._segments(segments, params.shape[0])
        self._apply(params, grads, segments, grad_scale)

    def _apply(self, params, grads, segments=None, grad_scale=1.0, clip_value=None):
        """The Trainer's path: the arena is known valid, nothing is re-checked.
        ``clip_value`` (the Trainer's) is used instead of the optimizer's own for this step."""
        bound = self._prepare(params, grads, segments, clip_value)
        self.t += 1
        bound.run(grad_scale, n_threads=get_num_threads())

    def _prepare(self, params, grads, segments=None, clip_value=None):
        """The next step (t + 1) bound to its arrays and scalars, not taken: the compiled
        training step runs it (``BoundUpdate``) and then calls ``_commit``."""
        if clip_value is None:
            clip_value = self.clip_value
        clamp = _INF if clip_value is None else clip_value
        if params.shape[0] != self._n or params.dtype != self._dtype:
            self._allocate(params)
        table = self._full if segments is None else self._segments(segments, self._n)
        kind, mode, states, scalars, wd = self._step_args(self.t + 1)
        bound_to = self._bound_to
        if (bound_to is not None and bound_to[0] is params and bound_to[1] is grads
                and bound_to[2] is table and bound_to[3:] == (clamp, wd, self.l1, self.maximize)):
            self._bound.scalars(scalars)   # the steady state: nothing allocated
        else:
            self._bound.set(kind, mode, params, grads, states, table, scalars, self.maximize,
                            clamp, wd, self.l1, getattr(self, "amsgrad", False))
            self._bound_to = (params, grads, table, clamp, wd, self.l1, self.maximize)
        return self._bound

    def _commit(self):
        """The prepared step was taken."""
        self.t += 1

    def _step_args(self, t):
        """(kernel kind, mode, state arrays, per-step scalars, coupled weight decay) of step t."""
        raise NotImplementedError

    def _segments(self, segments, n):
        if self._seg_copy is not None and not isinstance(segments, np.ndarray):
            # Equal tuples compare by identity first: ~0.1 µs for an arena's segments.
            if segments == self._seg_copy:
                return self._seg_table
        table = _segment_table(segments, n)
        if not isinstance(segments, np.ndarray):
            self._seg_copy = list(segments)
            self._seg_table = table
        return table

    # -- state --
    def _mismatch(self, params):
        raise ValueError(
            f"this optimizer's state was made for {self._n} {self._dtype} parameters, "
            f"got {params.shape[0]} {params.dtype}; use one optimizer per parameter array")

    def _allocate(self, params):
        if self._state is not None:
            self._mismatch(params)
        n, dtype = params.shape[0], params.dtype
        self._state = {name: _aligned_zeros(n, dtype, self._state_fill(name))
                       for name in self._state_names}
        self._bind(n, dtype)

    def _state_fill(self, name):
        return 0.0

    def _bind(self, n, dtype):
        self._n, self._dtype = n, np.dtype(dtype)
        self._bound = _optim.BoundUpdate()
        self._bound_to = None     # the arrays and conditioning it holds
        self._full = np.array([[0, n, 1]], dtype=np.intp)
        self._seg_copy = self._seg_table = None
        self._bind_state()

    def _bind_state(self):
        """Cache the state arrays (and placeholders for unused ones) as attributes."""

    @property
    def state(self):
        """The state buffers by name (empty before the first step)."""
        return dict(self._state or {})

    def state_dict(self):
        """Hyperparameters, lr, t and copies of the state buffers: numbers, bools,
        None and numpy arrays only. ``load_state_dict`` of it resumes bit-exactly."""
        return {
            "optimizer": self.name,
            "lr": self.lr,
            "t": self.t,
            "hyperparameters": self._hyper(),
            "state": {k: v.copy() for k, v in (self._state or {}).items()},
        }

    def load_state_dict(self, state):
        """Restore what ``state_dict`` returned (hyperparameters included)."""
        if state.get("optimizer", self.name) != self.name:
            raise ValueError(f"a state_dict of {state['optimizer']!r} cannot be loaded "
                             f"into {type(self).__name__}")
        hyper = state.get("hyperparameters", {})
        unknown = set(hyper) - set(self._hyper())
        if unknown:
            raise ValueError(f"unknown hyperparameters for {type(self).__name__}: "
                             f"{sorted(unknown)}")
        fresh = type(self)(lr=state["lr"], **{**self._hyper(), **hyper})
        arrays = state.get("state", {})
        t = int(state["t"])
        if t < 0:
            raise ValueError(f"t must be >= 0, got {t}")
        if arrays:
            missing = set(fresh._state_names) - set(arrays)
            if missing:
                raise ValueError(f"state_dict lacks state buffers {sorted(missing)}")
            first = np.asarray(arrays[fresh._state_names[0]])
            n, dtype = first.shape[0], first.dtype
            if dtype not in _FLOATS:
                raise TypeError(f"state buffers must be float32 or float64, got {dtype}")
            restored = {}
            for key in fresh._state_names:
                arr = np.asarray(arrays[key])
                if arr.shape != (n,) or arr.dtype != dtype:
                    raise ValueError(f"state buffer {key!r} has shape {arr.shape} and "
                                     f"dtype {arr.dtype}; expected ({n},) {dtype}")
                restored[key] = _aligned_zeros(n, dtype)
                restored[key][:] = arr
        self.__dict__.update(fresh.__dict__)
        self.t = t
        if arrays:
            self._state = restored
            self._bind(n, dtype)


class SGD(Optimizer):
    r"""Stochastic gradient descent, with optional momentum and Nesterov momentum.

    .. code-block:: text

        g ← conditioned gradient (grad_scale, clip_value, maximize, weight_decay, l1)
        if momentum ≠ 0:
            b ← g                                   at t = 1
            b ← momentum·b + (1 − dampening)·g      at t > 1
            g ← g + momentum·b   if nesterov  else  g ← b
        p ← p − lr·g

    Full-batch gradient descent, mini-batch SGD and pure stochastic SGD are this
    one optimizer; only the batch the gradient is averaged over changes::

        trainer = fastopt.Trainer(model, "mse", fastopt.optim.SGD(lr=0.1, momentum=0.9))
        trainer.fit(X, y, epochs=50, batch_size=None)  # full-batch gradient descent
        trainer.fit(X, y, epochs=50, batch_size=32)    # mini-batch SGD
        trainer.fit(X, y, epochs=50, batch_size=1)     # pure stochastic (one sample a step)

    Defaults: lr=0.01, momentum=0, dampening=0, nesterov=False, weight_decay=0, l1=0,
    maximize=False, clip_value=None.
    """

    name = "sgd"
    _state_names = ("momentum_buffer",)

    def __init__(self, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, l1=0.0, maximize=False, clip_value=None):
        super().__init__(lr, weight_decay=weight_decay, l1=l1, maximize=maximize,
                         clip_value=clip_value)
        self.momentum = _check_number(momentum, "momentum", low=0)
        self.dampening = _check_number(dampening, "dampening")
        self.nesterov = _check_bool(nesterov, "nesterov")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")
        if self.momentum == 0:
            self._state_names = ()

    def _hyper(self):
        return {"momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov, **super()._hyper()}

    def _bind_state(self):
        self._b = self._state.get("momentum_buffer", self._state_dummy())

    def _state_dummy(self):
        return np.zeros(0, self._dtype)

    def _step_args(self, t):
        first = t == 1
        mode = 0 if self.momentum == 0 else (2 if self.nesterov else 1)
        return (_optim.UPDATE_KINDS["sgd"], mode, (self._b,) if mode else (),
                (self._lr, self.momentum, 0.0 if first else self.momentum,
                 1.0 if first else 1.0 - self.dampening), self.weight_decay)


class Adagrad(Optimizer):
    r"""Adagrad.

    .. code-block:: text

        g ← conditioned gradient (grad_scale, clip_value, maximize, weight_decay, l1)
        clr ← lr / (1 + (t − 1)·lr_decay)
        s ← s + g²                      (s starts at initial_accumulator_value)
        p ← p − clr · g / (√s + eps)

    Defaults: lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
    eps=1e-10, l1=0, maximize=False, clip_value=None.
    """

    name = "adagrad"
    _state_names = ("sum",)

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, l1=0.0, maximize=False, clip_value=None):
        super().__init__(lr, weight_decay=weight_decay, l1=l1, maximize=maximize,
                         clip_value=clip_value)
        self.lr_decay = _check_number(lr_decay, "lr_decay", low=0)
        self.initial_accumulator_value = _check_number(
            initial_accumulator_value, "initial_accumulator_value", low=0)
        self.eps = _check_number(eps, "eps", low=0, low_open=True)

    def _hyper(self):
        return {"lr_decay": self.lr_decay,
                "initial_accumulator_value": self.initial_accumulator_value,
                "eps": self.eps, **super()._hyper()}

    def _state_fill(self, name):
        return self.initial_accumulator_value

    def _bind_state(self):
        self._s = self._state["sum"]

    def _step_args(self, t):
        clr = self._lr / (1.0 + (t - 1) * self.lr_decay)
        return (_optim.UPDATE_KINDS["adagrad"], 0, (self._s,), (clr, self.eps),
                self.weight_decay)


class RMSprop(Optimizer):
    r"""RMSprop, optionally centered and with momentum.

    .. code-block:: text

        g ← conditioned gradient (grad_scale, clip_value, maximize, weight_decay, l1)
        v ← alpha·v + (1 − alpha)·g²
        if centered: a ← alpha·a + (1 − alpha)·g ;  ṽ ← v − a²     else ṽ ← v
        d ← √ṽ + eps
        if momentum > 0: b ← momentum·b + g/d ;  p ← p − lr·b
        else:            p ← p − lr·g/d

    v, a and b start at zero. Defaults: lr=1e-2, alpha=0.99, eps=1e-8,
    weight_decay=0, momentum=0, centered=False, l1=0, maximize=False, clip_value=None.
    """

    name = "rmsprop"

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, l1=0.0, maximize=False, clip_value=None):
        super().__init__(lr, weight_decay=weight_decay, l1=l1, maximize=maximize,
                         clip_value=clip_value)
        self.alpha = _check_number(alpha, "alpha", low=0, high=1)
        self.eps = _check_number(eps, "eps", low=0, low_open=True)
        self.momentum = _check_number(momentum, "momentum", low=0)
        self.centered = _check_bool(centered, "centered")
        self._state_names = (("square_avg",) + (("grad_avg",) if self.centered else ())
                             + (("momentum_buffer",) if self.momentum > 0 else ()))

    def _hyper(self):
        return {"alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "centered": self.centered, **super()._hyper()}

    def _bind_state(self):
        empty = np.zeros(0, self._dtype)
        self._v = self._state["square_avg"]
        self._a = self._state.get("grad_avg", empty)
        self._b = self._state.get("momentum_buffer", empty)

    def _step_args(self, t):
        return (_optim.UPDATE_KINDS["rmsprop"], int(self.centered), (self._v, self._a, self._b),
                (self._lr, self.alpha, self.eps, self.momentum), self.weight_decay)


class Adam(Optimizer):
    r"""Adam, optionally AMSGrad.

    .. code-block:: text

        g ← conditioned gradient (grad_scale, clip_value, maximize, weight_decay, l1)
        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        bc1 ← 1 − β1^t ;  bc2 ← 1 − β2^t
        if amsgrad: v̂ ← max(v̂, v) ;  d ← √v̂/√bc2 + eps     else d ← √v/√bc2 + eps
        p ← p − (lr/bc1) · m / d

    m, v, v̂ start at zero; ``weight_decay`` is coupled L2 (added to g), as in
    torch.optim.Adam. Defaults: lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, amsgrad=False, l1=0, maximize=False, clip_value=None.
    """

    name = "adam"
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, l1=0.0, maximize=False, clip_value=None):
        super().__init__(lr, weight_decay=weight_decay, l1=l1, maximize=maximize,
                         clip_value=clip_value)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (_check_number(beta1, "beta1", low=0, high=1, high_open=True),
                      _check_number(beta2, "beta2", low=0, high=1, high_open=True))
        self.eps = _check_number(eps, "eps", low=0, low_open=True)
        self.amsgrad = _check_bool(amsgrad, "amsgrad")
        self._state_names = ("exp_avg", "exp_avg_sq") + (
            ("max_exp_avg_sq",) if self.amsgrad else ())

    def _hyper(self):
        return {"betas": self.betas, "eps": self.eps, "amsgrad": self.amsgrad,
                **super()._hyper()}

    def _bind_state(self):
        self._m = self._state["exp_avg"]
        self._v = self._state["exp_avg_sq"]
        self._w = self._state.get("max_exp_avg_sq", np.zeros(0, self._dtype))

    def _step_args(self, t):
        beta1, beta2 = self.betas
        lr = self._lr
        # Bias corrections once per step, in double.
        step_size = lr / (1.0 - beta1 ** t)
        inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2 ** t)
        if self._decoupled:
            shrink, wd = 1.0 - lr * self.weight_decay, 0.0
        else:
            shrink, wd = 1.0, self.weight_decay
        return (_optim.UPDATE_KINDS["adam"], 0,
                (self._m, self._v, self._w if self.amsgrad else self._v),
                (beta1, beta2, step_size, inv_sqrt_bc2, self.eps, shrink), wd)


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay.

    .. code-block:: text

        g ← conditioned gradient (grad_scale, clip_value, maximize, l1)
        p ← p·(1 − lr·weight_decay)          on decayed elements only
        then the Adam update of p (see Adam), with no coupled weight decay

    Defaults: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
    amsgrad=False, l1=0, maximize=False, clip_value=None.
    """

    name = "adamw"
    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, l1=0.0, maximize=False, clip_value=None):
        super().__init__(lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, l1=l1, maximize=maximize, clip_value=clip_value)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "adagrad": Adagrad,
              "rmsprop": RMSprop}


def get_optimizer(name, **kwargs):
    """An optimizer by name (``OPTIMIZERS``' keys, any case), made with ``kwargs``."""
    if isinstance(name, Optimizer):
        if kwargs:
            raise TypeError("keyword arguments are not accepted with an optimizer instance")
        return name
    return lookup(OPTIMIZERS, name, "optimizer")(**kwargs)
