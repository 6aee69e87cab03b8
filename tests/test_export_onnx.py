"""ONNX export: onnxruntime's outputs against fastopt's own predictions, for every layer,
activation and dtype; the graph checker; the tabular encoding inside the graph; the
skl2onnx converter for pipelines; clear errors for what cannot be exported."""

import warnings

import numpy as np
import pytest

import fastopt as fo
from fastopt.layers import ACTIVATIONS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fastopt.export import ExportError, export_onnx  # noqa: E402

TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-10)}


def session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def randomize_batchnorm(model, rng):
    for layer in model.layers:
        if isinstance(layer, fo.BatchNorm):
            d = layer.output_dim
            layer.running_mean[...] = rng.standard_normal(d)
            layer.running_var[...] = rng.uniform(0.3, 3.0, d)
            if layer.affine:
                layer.params["gamma"][...] = rng.uniform(0.5, 2.0, d)
                layer.params["beta"][...] = rng.standard_normal(d)
        if isinstance(layer, fo.Dense) and layer.use_bias:
            layer.params["b"][...] = 0.1 * rng.standard_normal(layer.units)


def block_model(act, dtype, alpha=None, affine=True, use_bias=True, classes=None):
    meta = {} if classes is None else {"task": "classification", "classes": classes}
    return fo.Sequential([
        fo.Standardize(np.linspace(-1, 1, 6), np.linspace(0.5, 2, 6)),
        fo.Dense(24, activation=act, alpha=alpha, use_bias=use_bias),
        fo.BatchNorm(affine=affine), fo.Activation(act, alpha=alpha), fo.Dropout(0.3),
        fo.Dense(12, activation=act, alpha=alpha),
        fo.Dense(3),
    ], input_dim=6, dtype=dtype, seed=3, metadata=meta)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_every_activation_matches_predict(act, dtype, rng):
    alpha = 0.2 if act in ("leaky_relu", "elu") else None
    model = block_model(act, dtype, alpha=alpha, classes=["a", "b", "c"])
    randomize_batchnorm(model, rng)
    proto = export_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    sess = session(proto)
    assert [o.name for o in sess.get_outputs()] == ["logits", "probabilities", "label"]
    for n in (1, 1000):
        X = 3 * rng.standard_normal((n, 6))
        logits, proba, label = sess.run(None, {"input": X.astype(dtype)})
        assert logits.dtype == np.dtype(dtype) and logits.shape == (n, 3)
        np.testing.assert_allclose(logits, model.predict(X), **TOL[dtype])
        np.testing.assert_allclose(proba, model.predict_proba(X), **TOL[dtype])
        expected = np.array(["a", "b", "c"])[model.predict(X).argmax(axis=1)]
        assert (label == expected).mean() > 0.99    # ties at 1e-7 may flip a row


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_variants_and_regression_outputs(dtype, rng):
    # No bias, BatchNorm without affine, a lone Activation, a regression head.
    model = fo.Sequential([fo.Dense(8, use_bias=False), fo.BatchNorm(affine=False),
                           fo.Activation("elu"), fo.Dense(2, activation="softplus")],
                          input_dim=4, dtype=dtype, seed=0)
    randomize_batchnorm(model, rng)
    sess = session(export_onnx(model))
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    X = rng.standard_normal((50, 4))
    np.testing.assert_allclose(sess.run(None, {"input": X.astype(dtype)})[0], model.predict(X),
                               **TOL[dtype])


def test_trained_bn_dropout_mlp_served(rng, tmp_path):
    X, y = fo.datasets.load_digits()
    X = X / 16.0
    model = fo.Sequential([fo.Dense(64), fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2),
                           fo.Dense(32, activation="gelu"), fo.Dropout(0.1), fo.Dense(10)],
                          input_dim=64, dtype="float32", seed=0,
                          metadata={"classes": list(range(10))})
    fo.Trainer(model, loss="softmax_cross_entropy", optimizer=fo.optim.Adam(lr=1e-2)).fit(
        X, y, epochs=3, batch_size=64, seed=0, verbose=0)
    path = tmp_path / "digits.onnx"
    fo.export_onnx(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, proba, label = sess.run(None, {"input": X.astype(np.float32)})
    assert np.abs(proba - model.predict_proba(X)).max() < 1e-5
    assert np.abs(logits - model.predict(X)).max() < 1e-5
    assert label.dtype == np.int64
    assert (label == model.predict(X).argmax(axis=1)).mean() > 0.999


def test_binary_single_output_uses_the_sigmoid(rng):
    model = fo.Sequential([fo.Dense(5, activation="tanh"), fo.Dense(1)], input_dim=3, seed=1)
    sess = session(export_onnx(model, task="classification", classes=[0, 1]))
    X = rng.standard_normal((30, 3))
    logits, proba, label = sess.run(None, {"input": X.astype(np.float32)})
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(label, (model.predict(X)[:, 0] > 0).astype(np.int64))


def test_opset_and_dynamic_batch(rng):
    model = block_model("relu", "float32")
    for opset in (13, 17, onnx.defs.onnx_opset_version()):
        proto = export_onnx(model, opset=opset)
        assert proto.opset_import[0].version == opset
        dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
        assert dim.dim_param and not dim.dim_value
        onnx.checker.check_model(proto, full_check=True)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, opset=9)


def test_unsupported_layer_is_named():
    class Scale(fo.Layer):
        def forward(self, x, training=False):
            return 2 * x

    model = fo.Sequential([fo.Dense(4), Scale(), fo.Dense(2)], input_dim=3)
    with pytest.raises(ExportError, match=r"layer 1 \(Scale\)"):
        export_onnx(model)
    with pytest.raises(TypeError, match="Sequential"):
        export_onnx("not a model")


def test_import_fastopt_does_not_import_onnx():
    import subprocess
    import sys
    code = ("import sys, fastopt; assert 'onnx' not in sys.modules; "
            "assert callable(fastopt.export_onnx); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd="/")
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ---- tabular models: the encoding inside the graph ----

def tabular_model(tmp_path, impute="mean", unseen="warn", dtype="float32"):
    from fastopt.cli import main

    rng = np.random.default_rng(0)
    n = 300
    lines = ["id,size,color,shape,label"]
    for i in range(n):
        size = rng.normal()
        color = rng.choice(["red", "green", "blue"])
        shape = rng.choice(["o", "x"])
        label = "big" if size + (color == "red") > 0.5 else "small"
        size_cell = "" if i % 17 == 0 else f"{size:.4f}"
        color_cell = "NA" if i % 23 == 0 else color
        lines.append(f"r{i},{size_cell},{color_cell},{shape},{label}")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    model_path = tmp_path / "m.npz"
    args = ["train", "--data", str(csv_path), "--target", "label", "--id", "id", "--epochs", "5",
            "--quiet", "--save", str(model_path), "--dtype", dtype, "--unseen", unseen,
            "--hidden", "8"]
    if impute:
        args += ["--impute", impute]
    assert main(args) == 0
    return fo.load(model_path), model_path


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tabular_encoding_is_in_the_graph(tmp_path, dtype, capsys):
    from fastopt.datasets.tabular import Table, TabularEncoder

    model, _ = tabular_model(tmp_path, dtype=dtype)
    capsys.readouterr()
    sess = session(export_onnx(model))
    names = [i.name for i in sess.get_inputs()]
    assert names == ["size", "color", "shape"]
    size = np.array([0.3, np.nan, -1.0, 2.0], dtype)
    color = np.array(["red", "blue", "NA", "purple"], dtype=object)
    shape = np.array(["o", "x", "", "o"], dtype=object)
    table = Table(["size", "color", "shape"], {"size": np.array(["0.3", "", "-1.0", "2.0"]),
                                              "color": color.astype(str),
                                              "shape": shape.astype(str)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X = TabularEncoder.from_config(model.metadata["tabular"]).transform(table)
    assert X[3, 1:4].sum() == 0            # 'purple': an all-zero one-hot block
    logits, proba, label = sess.run(None, {"size": size[:, None], "color": color[:, None],
                                           "shape": shape[:, None]})
    np.testing.assert_allclose(proba, model.predict_proba(X), **TOL[dtype])
    np.testing.assert_array_equal(label, np.array(model.metadata["classes"])[
        model.predict(X).argmax(axis=1)])


def test_tabular_unseen_error_fails_at_run_time(tmp_path, capsys):
    model, _ = tabular_model(tmp_path, unseen="error")
    sess = session(export_onnx(model))
    feeds = {"size": np.array([[0.1]], np.float32), "color": np.array([["purple"]], object),
             "shape": np.array([["o"]], object)}
    with pytest.raises(Exception):
        sess.run(None, feeds)
    feeds["color"] = np.array([["red"]], object)
    assert sess.run(None, feeds)[2].shape == (1,)
    # The stored choice can be overridden at export.
    relaxed = session(export_onnx(model, unseen="warn"))
    feeds["color"] = np.array([["purple"]], object)
    assert relaxed.run(None, feeds)[1].shape == (1, 2)


# ---- skl2onnx: a whole pipeline ----

skl2onnx = None


@pytest.fixture(scope="module")
def converters():
    pytest.importorskip("sklearn")
    global skl2onnx
    skl2onnx = pytest.importorskip("skl2onnx")
    from fastopt.export import register_skl2onnx
    register_skl2onnx()
    register_skl2onnx()          # idempotent
    return skl2onnx


@pytest.mark.parametrize("string_labels", [False, True])
def test_pipeline_classifier_exports_whole(converters, string_labels):
    from sklearn.datasets import load_iris
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fastopt.sklearn import MLPClassifier

    X, y = load_iris(return_X_y=True)
    if string_labels:
        y = np.array(["setosa", "versicolor", "virginica"])[y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(16, 8), batch_norm=True, dropout=0.1, activation="tanh",
            max_iter=40, random_state=0)).fit(X, y)
    X32 = X.astype(np.float32)
    onx = converters.to_onnx(pipe, X32[:1], options={MLPClassifier: {"zipmap": False}})
    onnx.checker.check_model(onx)
    sess = session(onx)
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]
    label, proba = sess.run(None, {sess.get_inputs()[0].name: X32})
    np.testing.assert_allclose(proba, pipe.predict_proba(X32), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(label, pipe.predict(X32))
    # Default options: scikit-learn's converters' output_label / output_probability (ZipMap).
    sess = session(converters.to_onnx(pipe, X32[:1]))
    assert [o.name for o in sess.get_outputs()] == ["output_label", "output_probability"]
    label, maps = sess.run(None, {sess.get_inputs()[0].name: X32[:3]})
    assert set(maps[0]) == set(pipe.classes_.tolist())


def test_pipeline_regressor_exports_whole(converters):
    from sklearn.datasets import load_diabetes
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fastopt.sklearn import MLPRegressor

    X, y = load_diabetes(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,),
                                                            max_iter=20, random_state=0,
                                                            dtype="float64")).fit(X, y)
    onx = converters.to_onnx(pipe, X[:1])          # float64 end to end
    sess = session(onx)
    out = sess.run(None, {sess.get_inputs()[0].name: X})[0]
    assert out.shape == (len(X), 1)
    np.testing.assert_allclose(out[:, 0], pipe.predict(X), rtol=1e-9, atol=1e-9)
