"""Layers: shapes, workspaces and kernel calls. The maths lives in fastopt._kernels.

Every layer follows one protocol, which the model, the trainer and later layers use:

``build(input_dim, dtype, arena) -> output_dim``
    reserve the layer's parameters in the arena (nothing is allocated yet);
``bind(arena)``
    after the arena is allocated: ``params`` / ``grads`` become named views into it;
``initialize(rng)``
    draw the initial parameters;
``forward(x, training) -> y`` and ``backward(dy) -> dx``
    on C-contiguous arrays of the model's dtype. ``y`` and ``dx`` are the layer's own
    workspace buffers: valid until the layer's next call, overwritten after it.

Workspaces are sized for the largest batch seen and served as row-views for smaller
ones, cached per batch size, so a training loop allocates nothing after its first step.
"""

import math

import numpy as np

from ._kernels import dense as _dense

__all__ = ["Layer", "Dense", "Activation", "ACTIVATIONS"]

ACTIVATIONS = ("identity", "relu", "leaky_relu", "elu", "gelu", "gelu_tanh",
               "sigmoid", "tanh", "softplus")
_DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}
_RELU_FAMILY = {"relu", "leaky_relu", "elu", "gelu", "gelu_tanh"}
_INITS = ("he_normal", "he_uniform", "glorot_uniform", "glorot_normal")


def _activation_code(activation):
    name = "identity" if activation in (None, "linear") else activation
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {ACTIVATIONS}")
    return name, _dense.ACTIVATIONS[name]


class _Workspace:
    """Buffers of ``capacity`` rows, with cached row-views per batch size."""

    def __init__(self, make):
        self._make = make          # rows -> dict of arrays
        self._capacity = 0
        self._full = {}
        self._views = {}

    def get(self, rows):
        views = self._views.get(rows)
        if views is None:
            if rows > self._capacity:
                self._capacity = rows
                self._full = self._make(rows)
                self._views.clear()
            if len(self._views) >= 8:  # bounded: a stream of ever-new batch sizes
                self._views.clear()
            views = {name: buf[:rows] for name, buf in self._full.items()}
            self._views[rows] = views
        return views


class Layer:
    """Base class: a layer without parameters passes its input through."""

    index = 0            # position in the model, set by Sequential
    stochastic = False   # True for layers that draw at train time (their masks are
    rng_step = 0         # keyed by the model's seed, rng_step and index)
    seed = 0

    def __init__(self, decay=None):
        # decay: {param name: bool} overriding which parameters take weight decay / L1
        # (default: Dense weights yes; biases and batch-norm scale/shift no).
        self.decay = dict(decay or {})
        # Non-trainable state that is saved and restored with the model (name -> array).
        self.buffers = {}
        self.params = {}
        self.grads = {}
        self._slots = {}
        self.input_dim = None
        self.output_dim = None
        self.dtype = None

    def build(self, input_dim, dtype, arena):
        self.input_dim = int(input_dim)
        self.output_dim = int(input_dim)
        self.dtype = np.dtype(dtype)
        return self.output_dim

    def bind(self, arena):
        self.params = {name: arena.param(slot) for name, slot in self._slots.items()}
        self.grads = {name: arena.grad_of(slot) for name, slot in self._slots.items()}

    def initialize(self, rng):
        pass

    def absorb(self, following):
        """How many of the ``following`` layers this one fuses into its own kernels
        (they are then skipped by the model). Default: none."""
        return 0

    def forward(self, x, training=False):
        return x

    def backward(self, dy, need_input_grad=True):
        return dy

    def _reserve(self, arena, name, shape, default_decay):
        self._slots[name] = arena.reserve(self.index, name, shape,
                                          self.decay.get(name, default_decay))

    def get_config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer: ``y = act(x·Wᵀ + b)``, W of shape (units, input_dim).

    Parameters
    ----------
    units : int
        Output width.
    activation : str or None
        One of ``ACTIVATIONS`` (None = identity), applied in the same pass as the bias.
    use_bias : bool
    init : {"he_normal", "he_uniform", "glorot_uniform", "glorot_normal"} or None
        Default: He normal for the ReLU family, Glorot uniform otherwise. Biases start at 0.
    alpha : float or None
        Negative slope of leaky_relu (default 0.01) or scale of elu (default 1.0).
    decay : dict or None
        Which parameters take weight decay / L1, e.g. ``{"b": True}`` to decay the bias
        too. Default: ``W`` yes, ``b`` no.
    """

    def __init__(self, units, activation=None, use_bias=True, init=None, alpha=None,
                 decay=None):
        super().__init__(decay)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"Dense units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.activation, self._act = _activation_code(activation)
        self.use_bias = bool(use_bias)
        if init is not None and init not in _INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {_INITS}")
        self.init = init
        self.alpha = float(_DEFAULT_ALPHA.get(self.activation, 0.0) if alpha is None else alpha)
        self._keep_z = self._act in _dense.NEEDS_PREACTIVATION
        self._x = None
        self._ws = None

    def get_config(self):
        return {"units": self.units, "activation": self.activation,
                "use_bias": self.use_bias, "init": self.init, "alpha": self.alpha,
                "decay": self.decay or None}

    def build(self, input_dim, dtype, arena):
        super().build(input_dim, dtype, arena)
        self.output_dim = self.units
        self._slots = {}
        self._reserve(arena, "W", (self.units, self.input_dim), default_decay=True)
        if self.use_bias:
            self._reserve(arena, "b", (self.units,), default_decay=False)
        self._ws = _Workspace(self._make_buffers)
        return self.output_dim

    def bind(self, arena):
        super().bind(arena)
        # A zero-length placeholder when there is no bias; the kernel never reads it.
        self._b = self.params.get("b", np.zeros(1, self.dtype))
        self._db = self.grads.get("b", np.zeros(1, self.dtype))

    def initialize(self, rng):
        fan_in, fan_out = self.input_dim, self.units
        init = self.init or ("he_normal" if self.activation in _RELU_FAMILY else "glorot_uniform")
        W = self.params["W"]
        if init == "he_normal":
            W[...] = rng.standard_normal(W.shape) * math.sqrt(2.0 / fan_in)
        elif init == "he_uniform":
            limit = math.sqrt(6.0 / fan_in)
            W[...] = rng.uniform(-limit, limit, W.shape)
        elif init == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            W[...] = rng.uniform(-limit, limit, W.shape)
        else:  # glorot_normal
            W[...] = rng.standard_normal(W.shape) * math.sqrt(2.0 / (fan_in + fan_out))
        if self.use_bias:
            self.params["b"][...] = 0

    def _make_buffers(self, rows):
        A = np.empty((rows, self.units), self.dtype)
        return {
            "A": A,
            "Z": np.empty_like(A) if self._keep_z else A,
            "dZ": np.empty_like(A),
            "dX": np.empty((rows, self.input_dim), self.dtype),
        }

    def forward(self, x, training=False):
        ws = self._ws.get(x.shape[0])
        _dense.forward(x, self.params["W"], self._b, ws["Z"], ws["A"], self._act,
                       self.alpha, self.use_bias)
        self._x = x
        self._out = ws
        return ws["A"]

    def backward(self, dy, need_input_grad=True):
        ws = self._out
        _dense.backward(dy, self._x, self.params["W"], ws["A"], ws["Z"], ws["dZ"],
                        self.grads["W"], self._db, ws["dX"], self._act, self.alpha,
                        self.use_bias, need_input_grad)
        return ws["dX"] if need_input_grad else None


class Activation(Layer):
    """A standalone elementwise activation (Dense fuses its own; use this after BatchNorm)."""

    def __init__(self, activation, alpha=None):
        super().__init__()
        self.activation, self._act = _activation_code(activation)
        self.alpha = float(_DEFAULT_ALPHA.get(self.activation, 0.0) if alpha is None else alpha)
        self._ws = None

    def get_config(self):
        return {"activation": self.activation, "alpha": self.alpha}

    def build(self, input_dim, dtype, arena):
        out = super().build(input_dim, dtype, arena)
        self._ws = _Workspace(lambda rows: {"A": np.empty((rows, out), self.dtype),
                                            "dZ": np.empty((rows, out), self.dtype)})
        return out

    def forward(self, x, training=False):
        ws = self._ws.get(x.shape[0])
        _dense.activation_forward(x, ws["A"], self._act, self.alpha)
        self._x = x
        self._out = ws
        return ws["A"]

    def backward(self, dy, need_input_grad=True):
        ws = self._out
        _dense.activation_backward(dy, ws["A"], self._x, ws["dZ"], self._act, self.alpha)
        return ws["dZ"]
