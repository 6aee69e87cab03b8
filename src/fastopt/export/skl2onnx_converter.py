"""skl2onnx converters for ``fastopt.sklearn.MLPClassifier`` and ``MLPRegressor``.

Registered the documented way (``skl2onnx.update_registered_converter`` with
skl2onnx's own shape calculators), so ``skl2onnx.to_onnx(pipeline, X)`` converts a
pipeline that holds a fastopt estimator whole::

    import fastopt.export
    fastopt.export.register_skl2onnx()
    onx = skl2onnx.to_onnx(make_pipeline(StandardScaler(), MLPClassifier()).fit(X, y),
                           X[:1].astype(np.float32))

The classifier's outputs are those of scikit-learn's own classifier converters:
``label`` [N] (int64 or string, the values of ``classes_``) and ``probabilities`` [N, C]
(a ZipMap sequence of dicts by default; ``options={MLPClassifier: {"zipmap": False}}``
gives the plain tensor), with the options ``zipmap`` and ``nocl``. The regressor's output
is ``variable`` [N, n_outputs] in the target's units. The network runs in the estimator's
dtype; inputs of the other float type are cast on the way in and out.

skl2onnx is imported only when ``register`` runs.
"""

import numpy as np

__all__ = ["register"]

_REGISTERED = False


class _SklGraph:
    """The ``_graph`` interface over skl2onnx's scope and container."""

    def __init__(self, scope, container, dtype):
        self.scope = scope
        self.container = container
        self.dtype = np.dtype(dtype)

    def fresh(self, hint):
        return self.scope.get_unique_variable_name(hint)

    def reserve(self, name):
        pass

    def const(self, array, hint="c"):
        from onnx import TensorProto
        from onnx.helper import np_dtype_to_tensor_dtype

        array = np.asarray(array)
        name = self.fresh(hint)
        if array.dtype.kind in "OUS":
            self.container.add_initializer(name, TensorProto.STRING, list(array.shape),
                                           [str(v).encode("utf-8") for v in array.ravel()])
        else:
            self.container.add_initializer(name, np_dtype_to_tensor_dtype(array.dtype),
                                           list(array.shape), array.ravel().tolist())
        return name

    def op(self, op_type, inputs, hint=None, domain="", out=None, **attrs):
        out = out if out is not None else self.fresh(hint or op_type.lower())
        self.container.add_node(op_type, list(inputs), [out], op_domain=domain,
                                name=self.scope.get_unique_operator_name(op_type), **attrs)
        return out


def _input_cast(g, variable):
    """The input as the model's dtype, and the input's ONNX float type."""
    from onnx import TensorProto

    from ._graph import ONNX_TYPE

    in_type = variable.type.to_onnx_type().tensor_type.elem_type
    x = variable.full_name
    if in_type != ONNX_TYPE[g.dtype]:
        x = g.op("Cast", [x], "fastopt_input", to=ONNX_TYPE[g.dtype])
    out_type = in_type if in_type in (TensorProto.FLOAT, TensorProto.DOUBLE) else TensorProto.FLOAT
    return x, out_type


def _convert_classifier(scope, operator, container):
    from . import _graph

    est = operator.raw_operator
    model = est.model_
    g = _SklGraph(scope, container, model.dtype)
    options = container.get_options(est, dict(nocl=False))
    x, out_type = _input_cast(g, operator.inputs[0])
    logits = _graph.layers(g, x, model)
    label_var, proba_var = operator.outputs[0], operator.outputs[1]
    proba = g.op("Softmax", [logits], "fastopt_proba", axis=1)
    if out_type != _graph.ONNX_TYPE[g.dtype]:
        proba = g.op("Cast", [proba], "fastopt_proba_cast", to=out_type)
    g.op("Identity", [proba], out=proba_var.full_name)
    index = g.op("ArgMax", [logits], "fastopt_index", axis=1, keepdims=0)
    if options["nocl"]:
        g.op("Identity", [index], out=label_var.full_name)
        return
    classes = np.asarray(est.classes_)
    if classes.dtype.kind in "iub":
        table = classes.astype(np.int64)
    elif classes.dtype.kind == "f" and np.all(classes == np.round(classes)):
        table = classes.astype(np.int64)
    elif classes.dtype.kind in "OUS":
        table = np.asarray([str(c) for c in classes], dtype=object)
    else:
        raise _graph.ExportError(f"class labels of dtype {classes.dtype} have no ONNX label "
                                 "type (use integers or strings)")
    if table.dtype == np.int64 and np.array_equal(table, np.arange(len(table))):
        g.op("Identity", [index], out=label_var.full_name)
    else:
        g.op("Gather", [g.const(table, "fastopt_classes"), index], out=label_var.full_name,
             axis=0)


def _convert_regressor(scope, operator, container):
    from . import _graph

    est = operator.raw_operator
    model = est.model_
    g = _SklGraph(scope, container, model.dtype)
    x, out_type = _input_cast(g, operator.inputs[0])
    out = _graph.layers(g, x, model)
    out = g.op("Mul", [out, g.const(np.asarray(est.y_scale_, model.dtype), "fastopt_y_scale")],
               "fastopt_scaled")
    out = g.op("Add", [out, g.const(np.asarray(est.y_mean_, model.dtype), "fastopt_y_mean")],
               "fastopt_prediction")
    if out_type != _graph.ONNX_TYPE[g.dtype]:
        out = g.op("Cast", [out], "fastopt_prediction_cast", to=out_type)
    g.op("Identity", [out], out=operator.outputs[0].full_name)


def _regressor_shapes(operator):
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes

    calculate_linear_regressor_output_shapes(operator)
    est = operator.raw_operator
    n_out = int(getattr(est, "n_outputs_", 1))
    in_type = operator.inputs[0].type
    cls = DoubleTensorType if isinstance(in_type, DoubleTensorType) else FloatTensorType
    batch = in_type.shape[0] if in_type.shape else None
    operator.outputs[0].type = cls([batch, n_out])


def register():
    """Register both converters with skl2onnx (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    try:
        from skl2onnx import update_registered_converter
        from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
    except ImportError:
        raise ImportError("the scikit-learn pipeline export needs skl2onnx: "
                          "pip install skl2onnx") from None
    from ..sklearn import MLPClassifier, MLPRegressor

    update_registered_converter(
        MLPClassifier, "FastoptMLPClassifier", calculate_linear_classifier_output_shapes,
        _convert_classifier, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    update_registered_converter(
        MLPRegressor, "FastoptMLPRegressor", _regressor_shapes, _convert_regressor)
    _REGISTERED = True
