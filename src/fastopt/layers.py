"""Layers: shapes, workspaces and kernel calls. The maths lives in fastopt._kernels.

Every layer follows one protocol, which the model, the trainer and later layers use:

``build(input_dim, dtype, arena) -> output_dim``
    reserve the layer's parameters in the arena (nothing is allocated yet);
``bind(arena)``
    after the arena is allocated: ``params`` / ``grads`` become named views into it;
``initialize(rng)``
    draw the initial parameters;
``forward(x, training) -> y`` and ``backward(dy, need_input_grad=True) -> dx``
    on C-contiguous arrays of the model's dtype (``need_input_grad=False`` lets the first
    layer skip its input gradient; it then may return None). ``y`` and ``dx`` are the layer's own
    workspace buffers: valid until the layer's next call, overwritten after it.

Workspaces (``fastopt.buffers.RowBuffers``) are sized for the largest batch seen and
served as row views for smaller ones, cached per batch size.
"""

import math
import numbers

import numpy as np

from ._kernels import dense as _dense
from ._kernels import dropout as _dropout
from ._kernels import norm as _norm
from .buffers import RowBuffers
from .threads import get_num_threads

__all__ = ["Layer", "Dense", "Activation", "BatchNorm", "Dropout", "Standardize", "ACTIVATIONS",
           "mlp_layers"]

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


def _check_alpha(name, alpha):
    if alpha is None:
        return float(_DEFAULT_ALPHA.get(name, 0.0))
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) \
            or alpha < 0:
        # The backward pass tells the branch by the output's sign: that needs alpha >= 0.
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    return float(alpha)


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
        self.params = {}
        self.grads = {}
        self._slots = {}
        self.input_dim = None
        self.output_dim = None
        self.dtype = None

    @property
    def buffers(self):
        """Non-trainable state saved and restored with the model (name -> array)."""
        return {}

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

    def stage(self, training):
        """This layer's stage in the compiled step (fastopt.plan): a dict with its "kind",
        "d_in", "d_out", whether it has trainable "params", its hyperparameters and its
        parameters' views; None when the layer is the identity in this mode."""
        return None

    def _stage(self, kind, params, **fields):
        """A stage dict: its kind, this layer's widths, whether it trains, and ``fields``."""
        return {"kind": kind, "d_in": self.input_dim, "d_out": self.output_dim,
                "params": params, **fields}

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
        self.alpha = _check_alpha(self.activation, alpha)
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
        self._ws = RowBuffers(lambda rows, key: self._make_buffers(rows))
        return self.output_dim

    def bind(self, arena):
        super().bind(arena)
        # A one-element placeholder when there is no bias; the kernel never reads it.
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

    def stage(self, training):
        return self._stage("dense", True, act=self._act, alpha=self.alpha,
                           has_bias=self.use_bias, keep_z=self._keep_z, w=self.params["W"],
                           b=self.params.get("b"), dw=self.grads["W"], db=self.grads.get("b"))

    def forward(self, x, training=False):
        ws = self._ws.get(x.shape[0])
        _dense.forward(x, self.params["W"], self._b, ws["Z"], ws["A"], self._act,
                       self.alpha, self.use_bias, n_threads=get_num_threads())
        self._x = x
        self._out = ws
        return ws["A"]

    def backward(self, dy, need_input_grad=True):
        ws = self._out
        _dense.backward(dy, self._x, self.params["W"], ws["A"], ws["Z"], ws["dZ"],
                        self.grads["W"], self._db, ws["dX"], self._act, self.alpha,
                        self.use_bias, need_input_grad, n_threads=get_num_threads())
        return ws["dX"] if need_input_grad else None


class Activation(Layer):
    """A standalone elementwise activation (Dense fuses its own; use this after BatchNorm)."""

    def __init__(self, activation, alpha=None):
        super().__init__()
        self.activation, self._act = _activation_code(activation)
        self.alpha = _check_alpha(self.activation, alpha)
        self._ws = None

    def get_config(self):
        return {"activation": self.activation, "alpha": self.alpha}

    def build(self, input_dim, dtype, arena):
        out = super().build(input_dim, dtype, arena)
        self._ws = RowBuffers.named(("A", "dZ"), out, self.dtype)
        return out

    def stage(self, training):
        return self._stage("activation", False, act=self._act, alpha=self.alpha)

    def forward(self, x, training=False):
        ws = self._ws.get(x.shape[0])
        _dense.activation_forward(x, ws["A"], self._act, self.alpha, n_threads=get_num_threads())
        self._x = x
        self._out = ws
        return ws["A"]

    def backward(self, dy, need_input_grad=True):
        ws = self._out
        _dense.activation_backward(dy, ws["A"], self._x, ws["dZ"], self._act, self.alpha,
                                   n_threads=get_num_threads())
        return ws["dZ"]


# Philox block indices are 32-bit: a layer's output may hold at most 2^34 elements.
_MAX_DROPOUT_ELEMENTS = 1 << 34
_U64 = (1 << 64) - 1


class Dropout(Layer):
    """Inverted dropout: in training each unit is kept with probability ``1 − rate`` and
    kept units are scaled by ``1/(1 − rate)``; in evaluation it is the identity.

    Masks come from Philox4x32-10 keyed by (model seed, training step, layer index,
    element index): element e is kept when its 32-bit draw u satisfies
    ``u < floor((1 − rate)·2^32)``. The same seed gives the same masks for any thread
    count; backward applies exactly the forward's mask.

    Parameters
    ----------
    rate : float in [0, 1)
        Probability of dropping a unit; 0 makes the layer a no-op.
    """

    stochastic = True

    def __init__(self, rate):
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"Dropout rate must be a number in [0, 1), got {rate!r}")
        rate = float(rate)
        if not (0.0 <= rate < 1.0):
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        keep = 1.0 - rate
        self.threshold = math.floor(keep * 4294967296.0)  # exact: keep·2^32 in float64
        self.scale = 1.0 / keep
        # keep == 1 (rate 0, or so small that 1 − rate rounds to 1) keeps every unit.
        self.active = self.threshold < 4294967296
        self._ws = None
        self._identity = True

    def get_config(self):
        return {"rate": self.rate}

    def build(self, input_dim, dtype, arena):
        out = super().build(input_dim, dtype, arena)
        self._ws = RowBuffers(lambda rows, key: self._make_buffers(rows))
        return out

    def _make_buffers(self, rows):
        return {"Y": np.empty((rows, self.output_dim), self.dtype),
                "dX": np.empty((rows, self.output_dim), self.dtype),
                "bits": mask_bits_buffer(rows, self.output_dim)}

    def key(self):
        """(seed, step, layer) as the kernels take them."""
        return int(self.seed) & _U64, int(self.rng_step) & _U64, int(self.index)

    def stage(self, training):
        if not (training and self.active):
            return None
        return self._stage("dropout", False, threshold=self.threshold, scale=self.scale)

    def forward(self, x, training=False):
        self._identity = not (training and self.active)
        if self._identity:
            return x
        check_dropout_size(x.shape)
        ws = self._ws.get(x.shape[0])
        seed, step, layer = self.key()
        _dropout.forward(x, ws["Y"], ws["bits"], seed, step, layer, self.threshold,
                         self.scale, n_threads=get_num_threads())
        self._out = ws
        return ws["Y"]

    def backward(self, dy, need_input_grad=True):
        if self._identity:
            return dy
        ws = self._out
        _dropout.backward(dy, ws["bits"], ws["dX"], self.scale, n_threads=get_num_threads())
        return ws["dX"]


def mask_bits_buffer(rows, cols):
    """Dropout mask bits of a (rows, cols) activation: 32 columns per uint32 word."""
    return np.zeros((rows, max(1, (cols + 31) // 32)), np.uint32)


def check_dropout_size(shape):
    if shape[0] * shape[1] >= _MAX_DROPOUT_ELEMENTS:
        raise ValueError(f"dropout supports at most 2^34 elements per batch, got "
                         f"{shape[0]}x{shape[1]}; use smaller batches")


class BatchNorm(Layer):
    """Batch normalization over the batch axis, per feature (PyTorch's BatchNorm1d).

    Training: ``y = γ·(x − μ_B)/√(σ²_B + eps) + β`` with the batch mean and the biased
    batch variance; the running statistics move by ``momentum`` towards the batch mean
    and the UNBIASED batch variance. Evaluation normalizes with the running statistics.
    A batch of one row cannot be normalized in training (its variance is undefined).

    In a model's compiled training step (fastopt.plan), BatchNorm runs fused with an
    ``Activation`` after it (identity, relu, leaky_relu, elu) and a ``Dropout`` after
    that, so the block Dense → BatchNorm → Activation → Dropout costs one pass over the
    activations forward and one backward. Called by itself it normalizes only.

    Parameters
    ----------
    momentum : float in [0, 1]
    eps : float > 0
    affine : bool
        Learn the scale γ (init 1) and shift β (init 0); otherwise γ = 1, β = 0.
    decay : dict or None
        ``{"gamma": True}`` etc. to apply weight decay / L1 (default: neither).

    ``running_mean`` and ``running_var`` (model dtype) are state, not parameters;
    ``buffers`` names them for saving.
    """

    def __init__(self, momentum=0.1, eps=1e-5, affine=True, decay=None):
        super().__init__(decay)
        for name, value in (("momentum", momentum), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value):
                raise TypeError(f"BatchNorm {name} must be a finite number, got {value!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm momentum must be in [0, 1], got {momentum}")
        if eps <= 0:
            raise ValueError(f"BatchNorm eps must be > 0, got {eps}")
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.affine = bool(affine)
        self._ws = None
        self.running_mean = None
        self.running_var = None

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps, "affine": self.affine,
                "decay": self.decay or None}

    @property
    def buffers(self):
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def build(self, input_dim, dtype, arena):
        super().build(input_dim, dtype, arena)
        d = self.output_dim
        self._slots = {}
        if self.affine:
            self._reserve(arena, "gamma", (d,), default_decay=False)
            self._reserve(arena, "beta", (d,), default_decay=False)
        self.running_mean = np.zeros(d, self.dtype)
        self.running_var = np.ones(d, self.dtype)
        self._mean = np.zeros(d, np.float64)
        self._invstd = np.ones(d, np.float64)
        self._coef = np.empty((6, d), self.dtype)          # per-feature kernel scratch
        self._partial = np.empty((0, 4, d), np.float64)    # per-row-block partials, scratch
        self._ws = RowBuffers(lambda rows, key: self._make_buffers(rows))
        return d

    def bind(self, arena):
        super().bind(arena)
        d = self.output_dim
        if self.affine:
            self._gamma, self._beta = self.params["gamma"], self.params["beta"]
            self._dgamma, self._dbeta = self.grads["gamma"], self.grads["beta"]
        else:
            self._gamma, self._beta = np.ones(d, self.dtype), np.zeros(d, self.dtype)
            self._dgamma, self._dbeta = np.empty(d, self.dtype), np.empty(d, self.dtype)

    def initialize(self, rng):
        if self.affine:
            self.params["gamma"][...] = 1
            self.params["beta"][...] = 0
        self.running_mean[...] = 0
        self.running_var[...] = 1

    def stage(self, training):
        return self._stage("batchnorm", self.affine, momentum=self.momentum, eps=self.eps,
                           w=self._gamma, b=self._beta, dw=self._dgamma, db=self._dbeta,
                           running_mean=self.running_mean, running_var=self.running_var)

    def _make_buffers(self, rows):
        d = self.output_dim
        return {"Y": np.empty((rows, d), self.dtype),
                "dX": np.empty((rows, d), self.dtype),
                "bits": mask_bits_buffer(rows, d)}

    def forward(self, x, training=False):
        ws = self._ws.get(x.shape[0])
        self._x = x
        self._out = ws
        self._training = training
        if not training:
            _norm.forward_eval(x, self._gamma, self._beta, self.running_mean,
                               self.running_var, self._coef, ws["Y"], self.eps, 0, 0.0,
                               n_threads=get_num_threads())
            return ws["Y"]
        if x.shape[0] < 2:
            raise ValueError("BatchNorm needs more than 1 sample per batch in training "
                             f"(got input of shape {x.shape}): the batch variance is "
                             "undefined; use a larger batch or drop the last partial one")
        blocks = _norm.n_row_blocks(x.shape[0])
        if blocks > self._partial.shape[0]:
            self._partial = np.empty((blocks, 4, self.output_dim), np.float64)
        _norm.forward_train(x, self._gamma, self._beta, ws["Y"], self._mean, self._invstd,
                            self.running_mean, self.running_var, self._partial,
                            self._coef, self.momentum, self.eps, 0, 0.0,
                            ws["bits"], 0, 0, 0, 0, 1.0, False, n_threads=get_num_threads())
        return ws["Y"]

    def backward(self, dy, need_input_grad=True):
        if not self._training:
            raise RuntimeError("BatchNorm.backward needs a training forward first")
        ws = self._out
        _norm.backward(self._x, dy, self._gamma, self._mean, self._invstd, self._partial,
                       self._coef, ws["dX"], self._dgamma, self._dbeta, 0, 0.0,
                       ws["bits"], 1.0, False, need_input_grad, n_threads=get_num_threads())
        return ws["dX"] if need_input_grad else None


class Standardize(Layer):
    """Fixed input scaling ``y = (x − mean) / scale``, saved with the model.

    Lets a saved model take raw features (the CLI puts the training split's statistics
    here). No trainable parameters; ``mean`` and ``scale`` are buffers.
    """

    def __init__(self, mean, scale):
        super().__init__()
        self.mean = np.asarray(mean, dtype=np.float64).ravel()
        scale = np.asarray(scale, dtype=np.float64).ravel()
        if self.mean.shape != scale.shape:
            raise ValueError(f"mean {self.mean.shape} and scale {scale.shape} must have one "
                             "value per feature")
        if not (np.isfinite(self.mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("Standardize needs finite means and finite, positive scales")
        self.scale = scale
        self._ws = None

    def get_config(self):
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    def build(self, input_dim, dtype, arena):
        out = super().build(input_dim, dtype, arena)
        if self.mean.shape[0] != out:
            raise ValueError(f"Standardize has {self.mean.shape[0]} features, its input {out}")
        self._mean = self.mean.astype(self.dtype)
        self._inv = (1.0 / self.scale).astype(self.dtype)
        self._ws = RowBuffers.named(("Y", "dX"), out, self.dtype)
        return out

    def stage(self, training):
        return self._stage("affine", False, w=self._mean, b=self._inv)

    def forward(self, x, training=False):
        ws = self._ws.get(x.shape[0])
        np.subtract(x, self._mean, out=ws["Y"])
        np.multiply(ws["Y"], self._inv, out=ws["Y"])
        self._out = ws
        return ws["Y"]

    def backward(self, dy, need_input_grad=True):
        if not need_input_grad:
            return None
        ws = self._out
        np.multiply(dy, self._inv, out=ws["dX"])
        return ws["dX"]


def mlp_layers(hidden, n_outputs, activation="relu", batch_norm=False, dropout=0.0, init=None):
    """The multi-layer perceptron's layers, as the CLI and the estimators build it.

    Each hidden width h gives ``Dense(h, activation)``, or ``Dense(h) → BatchNorm →
    Activation`` with ``batch_norm``, then ``Dropout(dropout)`` when dropout > 0; a linear
    ``Dense(n_outputs)`` ends the stack. ``init`` (None: each Dense's default) applies to
    every Dense.
    """
    layers = []
    for width in hidden:
        if batch_norm:
            layers += [Dense(width, init=init), BatchNorm(), Activation(activation)]
        else:
            layers.append(Dense(width, activation=activation, init=init))
        if dropout > 0:
            layers.append(Dropout(dropout))
    layers.append(Dense(n_outputs, init=init))
    return layers
