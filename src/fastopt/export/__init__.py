"""Export a trained fastopt model to ONNX (``pip install "fastopt[onnx]"``).

``export_onnx(model, path)`` writes every layer fastopt has in its evaluation form
(Dense with each activation, BatchNorm folded into a scale and shift, Dropout as the
identity, Activation, Standardize), in the model's float32 or float64, with a dynamic
batch dimension, and any tabular encoding the model stores (the CLI's one-hot encoding
and imputation, ``model.metadata["tabular"]``).

Inputs: ``input`` [N, input_dim] of the model's dtype; or, for a model trained on a table
by ``fastopt train``, one input per original column, named after it, shape [N, 1]:
the model's float type for numeric columns (NaN = missing), string for categorical ones.

Outputs: ``logits`` [N, outputs] (what ``model.predict`` returns); for classifiers also
``probabilities`` (``model.predict_proba``: softmax, or the sigmoid of a single output)
and, where the model knows its classes (``metadata["classes"]`` or ``classes=``),
``label`` [N] (int64 for integral classes, double for other numbers, string otherwise);
for a CLI regression model, ``prediction`` in the target's units.

The scikit-learn estimators convert through skl2onnx once registered:
``fastopt.export.register_skl2onnx()`` (see ``skl2onnx_converter``).

``import fastopt`` never imports onnx: this package imports it when used.
"""

import os

import numpy as np

__all__ = ["export_onnx", "register_skl2onnx", "ExportError"]


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'fastopt[onnx]' "
                          "(or pip install onnx)") from None


def __getattr__(name):
    if name == "ExportError":
        _require_onnx()
        from ._graph import ExportError
        return ExportError
    raise AttributeError(name)


def export_onnx(model, path=None, opset=None, *, task=None, classes=None, unseen=None,
                graph_name="fastopt"):
    """Convert a ``fastopt.Sequential`` to an ONNX model; write it to ``path`` if given.

    Parameters
    ----------
    model : fastopt.Sequential
    path : str or path-like or None
        Where to write the ``.onnx`` file (atomically); None: only return the model.
    opset : int or None
        The ai.onnx opset, 13 or newer (default 17). ai.onnx.ml opset 3 is used for the
        tabular encoding.
    task : "classification", "regression" or None
        None: the model's ``metadata["task"]`` (a model with ``metadata["classes"]`` is a
        classifier); otherwise regression (only ``logits``).
    classes : sequence or None
        Class labels in output order (default: ``metadata["classes"]``); gives ``label``.
    unseen : "warn", "error" or None
        For tabular models: an unseen category becomes an all-zero row ("warn"; a graph
        cannot warn) or fails the run ("error"). Default: the model's stored choice.

    Returns the ``onnx.ModelProto`` (checked with ``onnx.checker.check_model``).
    Raises ``ExportError`` (a ValueError) naming any layer the exporter does not know.
    """
    _require_onnx()
    import onnx
    from onnx import TensorProto, helper

    from .. import __version__
    from ..model import Sequential
    from . import _graph

    if not isinstance(model, Sequential):
        raise TypeError(f"export_onnx takes a fastopt.Sequential, got {type(model).__name__}")
    opset = _graph.check_opset(opset)
    meta = model.metadata or {}
    if task is None:
        task = meta.get("task") or ("classification" if meta.get("classes") is not None
                                    else "regression")
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if classes is None and task == "classification":
        classes = meta.get("classes")
    if classes is not None:
        classes = _graph.classes_tensor(classes)
        n_expected = 2 if model.output_dim == 1 else model.output_dim
        if len(classes) != n_expected:
            raise ValueError(f"{len(classes)} classes for a model with {model.output_dim} "
                             f"output(s); expected {n_expected}")

    g = _graph._Graph(model.dtype)
    ftype = _graph.ONNX_TYPE[model.dtype]
    out_names = ["logits"]
    if task == "classification":
        out_names.append("probabilities")
        if classes is not None:
            out_names.append("label")
    scaled = task == "regression" and ("target_mean" in meta or "target_scale" in meta)
    if scaled:
        out_names.append("prediction")
    for name in out_names:
        g.reserve(name)

    batch = "N"
    if "tabular" in meta:
        columns, x = _graph.tabular_inputs(g, meta["tabular"], unseen=unseen)
        inputs = [helper.make_tensor_value_info(name, t, [batch, 1]) for name, t in columns]
    else:
        g.reserve("input")
        inputs = [helper.make_tensor_value_info("input", ftype, [batch, model.input_dim])]
        x = "input"

    logits = _graph.layers(g, x, model)
    k = model.output_dim
    g.op("Identity", [logits], out="logits")
    outputs = [helper.make_tensor_value_info("logits", ftype, [batch, k])]
    if task == "classification":
        if k == 1:
            g.op("Sigmoid", ["logits"], out="probabilities")
        else:
            g.op("Softmax", ["logits"], out="probabilities", axis=1)
        outputs.append(helper.make_tensor_value_info("probabilities", ftype, [batch, k]))
        if classes is not None:
            if k == 1:
                idx = g.op("Cast", [g.op("Greater", ["logits", _graph._scalar(g, 0.0)])],
                           "positive", to=TensorProto.INT64)
                idx = g.op("Reshape", [idx, g.const(np.array([-1], np.int64), "flat")], "index")
            else:
                idx = g.op("ArgMax", ["logits"], "index", axis=1, keepdims=0)
            g.op("Gather", [g.const(classes, "classes"), idx], out="label", axis=0)
            label_type = {"i": TensorProto.INT64, "f": TensorProto.DOUBLE}.get(
                classes.dtype.kind, TensorProto.STRING)
            outputs.append(helper.make_tensor_value_info("label", label_type, [batch]))
    if scaled:
        scale = np.asarray(meta.get("target_scale", 1.0), model.dtype)
        shift = np.asarray(meta.get("target_mean", 0.0), model.dtype)
        y = g.op("Mul", ["logits", g.const(scale, "target_scale")], "prediction_scaled")
        g.op("Add", [y, g.const(shift, "target_mean")], out="prediction")
        outputs.append(helper.make_tensor_value_info("prediction", ftype, [batch, k]))

    graph = helper.make_graph(g.nodes, graph_name, inputs, outputs, g.initializers)
    imports = [helper.make_opsetid("", opset)]
    if any(n.domain == _graph.ML_DOMAIN for n in g.nodes):
        imports.append(helper.make_opsetid(_graph.ML_DOMAIN, _graph.ML_OPSET))
    proto = helper.make_model(graph, opset_imports=imports, producer_name="fastopt",
                              producer_version=__version__)
    # ONNX IR version the opset needs, not the newest this onnx package writes (older
    # runtimes refuse newer IR versions).
    proto.ir_version = min(proto.ir_version, _ir_version_for(opset))
    props = {"task": task, "dtype": model.dtype.name}
    if classes is not None:
        props["classes"] = ",".join(str(c) for c in classes.tolist())
    for key in ("target", "features"):
        if key in meta:
            props[key] = str(meta[key])
    helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        _write(proto, os.fspath(path))
    return proto


def _ir_version_for(opset):
    from onnx import helper
    for entry in helper.OP_SET_ID_VERSION_MAP.items():
        (domain, version), ir = entry
        if domain in ("", "ai.onnx") and version == opset:
            return ir
    return 8


def _write(proto, path):
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastopt-", suffix=".onnx.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def register_skl2onnx():
    """Register the converters for ``fastopt.sklearn.MLPClassifier`` / ``MLPRegressor``
    with skl2onnx (idempotent); then ``skl2onnx.to_onnx(pipeline, X)`` converts
    pipelines that contain them."""
    from .skl2onnx_converter import register
    register()
