"""ONNX nodes for fastopt's layers and its tabular encoding, written against a small
graph interface so that the standalone exporter and the skl2onnx converter share them.

Everything here imports ``onnx`` (the caller has checked it is installed).

The interface (``_Graph`` below, and ``_SklGraph`` in ``skl2onnx_converter``):

``g.const(array, hint) -> name``   an initializer
``g.op(op_type, inputs, hint=..., domain="", out=None, **attrs) -> name``
                                   one node with one output (``out``: its name, else a fresh one)
``g.dtype``                         the model's numpy dtype (float32 or float64)
``g.reserve(name)``                 claim a graph input's name
"""

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3           # ai.onnx.ml: LabelEncoder-2 (string -> string), OneHotEncoder-1
MIN_OPSET = 13         # Softmax over one axis, Squeeze/Unsqueeze axes as inputs
DEFAULT_OPSET = 17     # what most deployed runtimes read

ONNX_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}

# Cells read as missing in a categorical column (kept in step with
# fastopt.datasets.tabular.NA_VALUES by the model's stored "na_values").
_UNSEEN = "\x00fastopt-unseen\x00"


class ExportError(ValueError):
    """The model holds something the ONNX exporter cannot write (the message names it)."""


class _Graph:
    """Collects the nodes and initializers of a standalone graph."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.nodes = []
        self.initializers = []
        self._used = set()

    def fresh(self, hint):
        name, k = hint, 0
        while name in self._used:
            k += 1
            name = f"{hint}_{k}"
        self._used.add(name)
        return name

    def reserve(self, name):
        if name in self._used:
            raise ExportError(f"two graph inputs would be named {name!r}")
        self._used.add(name)

    def const(self, array, hint="c"):
        name = self.fresh(hint)
        array = np.asarray(array)
        if array.dtype.kind in "OUS":
            tensor = helper.make_tensor(name, TensorProto.STRING, array.shape,
                                        [str(v).encode("utf-8") for v in array.ravel()])
        else:
            tensor = numpy_helper.from_array(array, name)
        self.initializers.append(tensor)
        return name

    def op(self, op_type, inputs, hint=None, domain="", out=None, **attrs):
        out = out if out is not None else self.fresh(hint or op_type.lower())
        self._used.add(out)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           name=self.fresh(f"{op_type}_node"),
                                           domain=domain or None, **attrs))
        return out


def _scalar(g, value, hint="s"):
    return g.const(np.array(value, dtype=g.dtype), hint)


# ---- activations ----

def _erf64(g, u):
    """erf(u) in float64 from elementary ops (onnxruntime has no float64 Erf):
    erf(u) = sign(u)·2/√π·e^{−u²}·|u|·S, S = Σ_n (2u²)^n / (2n+1)!!, |u| clamped to 6
    (erf(6) = 1 − 2e−17). S is a positive series (no cancellation), summed nested,
    S = 1 + y/3·(1 + y/5·(1 + …)), y = 2u², over 100 terms: |error| < 3e−15 on [0, 6].
    (Dividing by the exact integers 2n+1 rather than multiplying by the coefficients
    keeps every constant an ordinary number: onnxruntime's constant sharing merges
    scalar initializers that are equal in float32, which tiny float64 coefficients are.)"""
    N = 100
    a = g.op("Min", [g.op("Abs", [u]), _scalar(g, 6.0)], "erf_abs")
    a2 = g.op("Mul", [a, a], "erf_a2")
    y = g.op("Add", [a2, a2], "erf_y")
    one = _scalar(g, 1.0)
    s = one
    for n in range(N, 0, -1):
        s = g.op("Add", [one, g.op("Div", [g.op("Mul", [s, y], "erf_t"),
                                           _scalar(g, 2.0 * n + 1.0)], "erf_t")], "erf_s")
    e = g.op("Exp", [g.op("Neg", [a2])], "erf_e")
    r = g.op("Mul", [g.op("Mul", [e, a]), g.op("Mul", [s, _scalar(g, 2.0 / math.sqrt(math.pi))])],
             "erf_abs_value")
    return g.op("Mul", [r, g.op("Sign", [u])], "erf")


def _erf(g, u):
    return g.op("Erf", [u]) if g.dtype == np.float32 else _erf64(g, u)


def activation(g, x, name, alpha):
    """act(x) as fastopt's kernels define it (``fastopt.layers.ACTIVATIONS``).

    float32 uses ONNX's own ops; in float64, onnxruntime lacks Elu, Softplus and Erf, and
    LeakyRelu's alpha is a float32 attribute, so those are written from elementary ops."""
    f64 = g.dtype == np.float64
    if name == "identity":
        return x
    if name == "relu":
        return g.op("Relu", [x])
    if name == "leaky_relu":
        if not f64:
            return g.op("LeakyRelu", [x], alpha=float(alpha))
        # LeakyRelu's alpha attribute is a float32: 0.01 would lose digits in float64.
        return g.op("Where", [g.op("Less", [x, _scalar(g, 0.0)]),
                              g.op("Mul", [x, _scalar(g, alpha)]), x], "leaky_relu")
    if name == "elu":
        if not f64:
            return g.op("Elu", [x], alpha=float(alpha))
        neg = g.op("Mul", [_scalar(g, alpha), g.op("Sub", [
            g.op("Exp", [g.op("Min", [x, _scalar(g, 0.0)])]), _scalar(g, 1.0)])])
        return g.op("Where", [g.op("Greater", [x, _scalar(g, 0.0)]), x, neg], "elu")
    if name == "sigmoid":
        return g.op("Sigmoid", [x])
    if name == "tanh":
        return g.op("Tanh", [x])
    if name == "softplus":
        if not f64:
            return g.op("Softplus", [x])
        # max(x, 0) + log(1 + e^{−|x|}): never overflows.
        tail = g.op("Log", [g.op("Add", [_scalar(g, 1.0), g.op(
            "Exp", [g.op("Neg", [g.op("Abs", [x])])])])])
        return g.op("Add", [g.op("Relu", [x]), tail], "softplus")
    if name in ("gelu", "gelu_tanh"):
        if name == "gelu":   # 0.5·x·(1 + erf(x/√2))
            inner = _erf(g, g.op("Mul", [x, _scalar(g, 1.0 / math.sqrt(2.0))]))
        else:                # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            x3 = g.op("Mul", [g.op("Mul", [x, x]), x])
            arg = g.op("Mul", [_scalar(g, 0.7978845608028654),
                               g.op("Add", [x, g.op("Mul", [_scalar(g, 0.044715), x3])])])
            inner = g.op("Tanh", [arg])
        half_x = g.op("Mul", [x, _scalar(g, 0.5)])
        return g.op("Mul", [half_x, g.op("Add", [_scalar(g, 1.0), inner])], name)
    raise ExportError(f"activation {name!r} has no ONNX export")


# ---- layers ----

def layers(g, x, model):
    """The model's layers in evaluation mode, on ``x`` of the model's dtype."""
    from ..layers import Activation, BatchNorm, Dense, Dropout, Standardize

    dt = g.dtype
    for i, layer in enumerate(model.layers):
        kind = type(layer)
        if kind is Dense:
            W = np.ascontiguousarray(layer.params["W"], dtype=dt)
            ins = [x, g.const(W, f"layer{i}_W")]
            if layer.use_bias:
                ins.append(g.const(np.asarray(layer.params["b"], dtype=dt), f"layer{i}_b"))
            x = g.op("Gemm", ins, f"layer{i}_dense", transB=1)
            x = activation(g, x, layer.activation, layer.alpha)
        elif kind is BatchNorm:
            # Evaluation form, folded as the kernel folds it (in float64, then rounded):
            # y = x·a + c, a = γ/√(running_var + eps), c = β − running_mean·a.
            var = np.asarray(layer.running_var, np.float64)
            mean = np.asarray(layer.running_mean, np.float64)
            if layer.affine:
                gamma = np.asarray(layer.params["gamma"], np.float64)
                beta = np.asarray(layer.params["beta"], np.float64)
            else:
                gamma, beta = np.ones_like(var), np.zeros_like(var)
            a = gamma * (1.0 / np.sqrt(var + layer.eps))
            c = beta - mean * a
            x = g.op("Mul", [x, g.const(a.astype(dt), f"layer{i}_bn_scale")], f"layer{i}_bn_mul")
            x = g.op("Add", [x, g.const(c.astype(dt), f"layer{i}_bn_shift")], f"layer{i}_bn")
        elif kind is Dropout:
            continue        # the identity in evaluation
        elif kind is Activation:
            x = activation(g, x, layer.activation, layer.alpha)
        elif kind is Standardize:
            # As the layer computes it: (x − mean)·(1/scale), both rounded to the dtype.
            x = g.op("Sub", [x, g.const(layer.mean.astype(dt), f"layer{i}_mean")],
                     f"layer{i}_centered")
            x = g.op("Mul", [x, g.const((1.0 / layer.scale).astype(dt), f"layer{i}_inv_scale")],
                     f"layer{i}_standardized")
        else:
            raise ExportError(
                f"cannot export layer {i} ({kind.__name__}) to ONNX: the exporter knows "
                "Dense, BatchNorm, Dropout, Activation and Standardize (subclasses "
                "included only when they are those classes exactly)")
    return x


# ---- the tabular encoding stored in model.metadata["tabular"] ----

def tabular_inputs(g, encoding, unseen=None):
    """One graph input per original column ([N, 1]: the model's float type for numeric
    columns, string for categorical ones) -> (list of (name, onnx type), encoded matrix).

    Numeric: a stored fill value replaces NaN. Categorical: missing markers map to the
    stored fill (ai.onnx.ml LabelEncoder), then ai.onnx.ml OneHotEncoder over the
    training categories; an unseen category is an all-zero row (``unseen="warn"``, the
    default) or a runtime error (``"error"``, OneHotEncoder's zeros=0)."""
    if not isinstance(encoding, dict) or encoding.get("version") != 1:
        raise ExportError(f"the model's tabular encoding has an unknown format: "
                          f"{str(encoding)[:80]}")
    unseen = unseen or encoding.get("unseen", "warn")
    if unseen not in ("warn", "error"):
        raise ExportError(f"unseen must be 'warn' or 'error', got {unseen!r}")
    na_values = [str(v) for v in encoding.get("na_values", [""])]
    inputs, parts = [], []
    for k, col in enumerate(encoding["columns"]):
        name = col["name"]
        g.reserve(name)
        if col["kind"] == "numeric":
            inputs.append((name, ONNX_TYPE[g.dtype]))
            x = name
            if col.get("fill") is not None:
                x = g.op("Where", [g.op("IsNaN", [name], f"col{k}_isnan"),
                                   _scalar(g, col["fill"], f"col{k}_fill"), name], f"col{k}_imputed")
            parts.append(x)
        elif col["kind"] == "categorical":
            inputs.append((name, TensorProto.STRING))
            cats = [str(c) for c in col["categories"]]
            x = name
            if col.get("fill") is not None:
                keys = cats + [v for v in na_values if v not in cats]
                values = cats + [str(col["fill"])] * (len(keys) - len(cats))
                x = g.op("LabelEncoder", [name], f"col{k}_imputed", domain=ML_DOMAIN,
                         keys_strings=keys, values_strings=values, default_string=_UNSEEN)
            onehot = g.op("OneHotEncoder", [x], f"col{k}_onehot3d", domain=ML_DOMAIN,
                          cats_strings=cats, zeros=1 if unseen == "warn" else 0)
            onehot = g.op("Reshape", [onehot, g.const(np.array([-1, len(cats)], np.int64),
                                                      f"col{k}_shape")], f"col{k}_onehot_f")
            if g.dtype != np.float32:
                onehot = g.op("Cast", [onehot], f"col{k}_onehot", to=ONNX_TYPE[g.dtype])
            parts.append(onehot)
        else:
            raise ExportError(f"column {name!r} has an unknown kind {col['kind']!r} in the "
                              "model's tabular encoding")
    x = parts[0] if len(parts) == 1 else g.op("Concat", parts, "encoded", axis=1)
    return inputs, x


def classes_tensor(classes):
    """Class labels as a numpy array of the ONNX label type: int64 for integral numbers,
    float64 for other numbers, strings otherwise."""
    values = list(classes)
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
           for v in values):
        arr = np.asarray(values, dtype=np.float64)
        if np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        return arr
    return np.asarray([str(v) for v in values], dtype=object)


def check_opset(opset):
    latest = onnx.defs.onnx_opset_version()
    if opset is None:
        return min(DEFAULT_OPSET, latest)
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) \
            or not MIN_OPSET <= opset <= latest:
        raise ValueError(f"opset must be an integer in [{MIN_OPSET}, {latest}] "
                         f"(this onnx package's newest), got {opset!r}")
    return int(opset)
