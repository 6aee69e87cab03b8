"""Sequential: builds the parameter arena, chains forward and backward, predicts in batches."""

import numpy as np

from .layers import Layer
from .params import ParamArena
from .threads import blas_single_thread
from .validation import as_matrix, check_positive_int, check_seed

__all__ = ["Sequential", "class_probabilities"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def class_probabilities(logits, independent=False):
    """A classifier's probabilities from its logits: the softmax of each row, or the
    sigmoid of each output when there is one output or the outputs are ``independent``
    (binary cross-entropy, one probability per label)."""
    from scipy.special import expit, softmax

    if independent or logits.shape[1] == 1:
        return expit(logits)
    return softmax(logits, axis=1)


class Sequential:
    """A stack of layers trained as one.

    Parameters
    ----------
    layers : list of Layer
    input_dim : int
        Number of input features.
    dtype : "float32" or "float64"
        Precision of parameters, activations and gradients.
    metadata : dict or None
        JSON-able information saved with the model (e.g. class names).
    seed : int
        Seeds the initial weights and, for layers that draw at train time (dropout),
        their masks, which are keyed by (seed, ``train_step``, layer index).

    ``parameters`` and ``gradients`` are the two flat arena buffers; each layer's
    ``params[name]`` / ``grads[name]`` are views into them.
    """

    def __init__(self, layers, input_dim, dtype="float32", seed=0, metadata=None):
        # JSON-able facts saved with the model (class names, feature names, ...).
        self.metadata = dict(metadata or {})
        self.dtype = np.dtype(dtype)
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.seed = check_seed(seed)
        layers = list(layers)
        if not layers:
            raise ValueError("a Sequential model needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is {layer!r}, not a fastopt layer")
            if layer.input_dim is not None or any(layer is other for other in layers[:i]):
                raise ValueError(f"layer {i} ({type(layer).__name__}) already belongs to a model: "
                                 "a layer holds views into its model's parameters, so make a new one")
        self.layers = layers
        self.arena = ParamArena(self.dtype)
        dim = self.input_dim
        for i, layer in enumerate(layers):
            layer.index = i
            layer.seed = self.seed
            dim = layer.build(dim, self.dtype, self.arena)
        self.output_dim = dim
        self.arena.allocate()
        for layer in layers:
            layer.bind(self.arena)
        self._plans = {}
        self._stochastic = [layer for layer in layers if layer.stochastic]
        self.train_step = 0
        self.reset_parameters()

    def step_plan(self, rows, training, loss=None, target=None, weighted=False):
        """The compiled step (fastopt.plan) for batches of ``rows``: training plans run
        forward, the loss (``target``: a prepared target array of the kind the batches
        will have), backward and the gradient norm; evaluation plans run forward. Cached:
        compiled once per (rows, mode, target kind), a few batch sizes kept."""
        from .plan import StepPlan

        key = (rows, bool(training), None if target is None else
               (target.ndim, target.dtype.str, target.shape[1:]), bool(weighted),
               None if loss is None else (type(loss), getattr(loss, "label_smoothing", 0.0)))
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 16:   # a stream of ever-new batch sizes: stay bounded
                self._plans.clear()
            plan = self._plans[key] = StepPlan(self, rows, training, loss, target, weighted)
        return plan

    def reset_parameters(self):
        """Draw every layer's initial parameters again from ``seed``."""
        rng = np.random.default_rng(self.seed)
        for layer in self.layers:
            layer.initialize(rng)

    @property
    def parameters(self):
        """The flat parameter buffer (a view: writing to it changes the model)."""
        return self.arena.data

    @property
    def gradients(self):
        """The flat gradient buffer, same layout as ``parameters``."""
        return self.arena.grad

    @property
    def n_params(self):
        return self.arena.n_params

    def _forward(self, x, training):
        if training:
            # Stochastic layers (dropout) key their masks on this counter.
            self.train_step += 1
            for layer in self._stochastic:
                layer.rng_step = self.train_step
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def _backward(self, dy, need_input_grad):
        layers = self.layers
        for i in range(len(layers) - 1, -1, -1):
            dy = layers[i].backward(dy, need_input_grad or i > 0)
        return dy

    def forward(self, X, training=False):
        """Run every layer on X; returns the model's output buffer (reused by the next call)."""
        X = as_matrix(X, self.dtype, n_features=self.input_dim)
        with blas_single_thread:
            return self._forward(X, training)

    def backward(self, dy, need_input_grad=True):
        """Backpropagate ``dy`` (d loss / d output) through the last ``forward``.

        Fills ``gradients`` (overwriting, not accumulating) and returns d loss / d input.
        """
        dy = as_matrix(dy, self.dtype, name="dy", n_features=self.output_dim)
        with blas_single_thread:
            return self._backward(dy, need_input_grad)

    def predict(self, X, batch_size=1024):
        """Outputs (logits for classifiers) for every row of X, in evaluation mode."""
        X = as_matrix(X, self.dtype, n_features=self.input_dim)
        batch_size = check_positive_int(batch_size, "batch_size")
        n = X.shape[0]
        out = np.empty((n, self.output_dim), self.dtype)
        with blas_single_thread:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                plan = self.step_plan(stop - start, training=False)
                plan.bind(X)
                out[start:stop] = plan.forward(0, None, start)
        return out

    def predict_proba(self, X, batch_size=1024):
        """Class probabilities for a classifier's logits: softmax over the outputs, or the
        sigmoid of a single output (binary cross-entropy models)."""
        return class_probabilities(self.predict(X, batch_size=batch_size))

    def get_state(self):
        """A copy of everything training changes in the model: the parameters, each
        layer's non-trainable buffers (batch-norm running statistics) and ``train_step``."""
        buffers = {f"{i}.{name}": buf.copy() for i, layer in enumerate(self.layers)
                   for name, buf in layer.buffers.items()}
        return {"parameters": self.arena.data.copy(), "buffers": buffers,
                "train_step": self.train_step}

    def set_state(self, state):
        """Restore what ``get_state`` returned (checked first: nothing changes on error)."""
        params = np.asarray(state["parameters"])
        if params.shape != self.arena.data.shape:
            raise ValueError(f"parameters of shape {params.shape} do not fit this model's "
                             f"arena of shape {self.arena.data.shape}")
        expected = {f"{i}.{name}": buf for i, layer in enumerate(self.layers)
                    for name, buf in layer.buffers.items()}
        given = state.get("buffers", {})
        if set(given) != set(expected):
            raise ValueError(f"layer buffers {sorted(given)} do not match this model's "
                             f"{sorted(expected)}")
        for key, buf in expected.items():
            if np.shape(given[key]) != buf.shape:
                raise ValueError(f"buffer {key} has shape {np.shape(given[key])}, expected {buf.shape}")
        self.arena.data[...] = params
        for key, buf in expected.items():
            buf[...] = given[key]
        self.train_step = int(state.get("train_step", self.train_step))

    @classmethod
    def from_config(cls, config):
        """The model ``get_config`` described (fresh parameters: ``set_state`` restores
        them). Only fastopt's own layer classes are built."""
        from . import layers as layer_module

        registry = {name: getattr(layer_module, name) for name in layer_module.__all__
                    if isinstance(getattr(layer_module, name), type)
                    and issubclass(getattr(layer_module, name), Layer)}
        built = []
        for i, spec in enumerate(config["layers"]):
            layer_cls = registry.get(spec["class"]) if isinstance(spec["class"], str) else None
            if layer_cls is None:
                raise ValueError(f"layer {i} has unknown class {spec['class']!r}; fastopt "
                                 f"builds only its own layers: {sorted(registry)}")
            built.append(layer_cls(**spec["config"]))
        return cls(built, input_dim=config["input_dim"], dtype=config["dtype"],
                   seed=config["seed"], metadata=config.get("metadata"))

    def get_config(self):
        return {
            "input_dim": self.input_dim,
            "dtype": self.dtype.name,
            "seed": self.seed,
            "metadata": self.metadata,
            "layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                       for layer in self.layers],
        }

    def __repr__(self):
        inner = ",\n    ".join(repr(layer) for layer in self.layers)
        return (f"Sequential([\n    {inner},\n], input_dim={self.input_dim}, "
                f"dtype={self.dtype.name!r}, seed={self.seed})")
