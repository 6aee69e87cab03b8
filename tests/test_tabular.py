"""Tables: reading CSV/Parquet, one-hot encoding, imputation, the JSON encoding, and the
CLI's train / predict / export on a CSV with string columns and missing values."""

import io
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastopt as fo
from fastopt.cli import main
from fastopt.datasets.tabular import (MissingValuesError, Table, TabularEncoder,
                                      UnseenCategoryWarning, read_csv, read_table)

CSV = """id,age,city,member,y
a,30,paris,yes,1
b,,london,no,0
c,50,paris,NA,1
d,40,berlin,yes,0
e,20,london,yes,1
"""


def table(text=CSV):
    return read_csv(io.StringIO(text), name="t.csv")


def test_read_csv_strips_and_names_lines():
    t = table("a , b\n 1 , x \n2,y\n")
    assert t.names == ["a", "b"] and len(t) == 2
    assert t.column("b").tolist() == ["x", "y"]
    assert t.locations([0, 1]) == "lines 2, 3"
    with pytest.raises(ValueError, match="line 3: 1 fields"):
        table("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match="two columns"):
        table("a,a\n1,2\n")
    headerless = table("1,2\n3,4\n")
    assert headerless.names == ["0", "1"] and headerless.locations([1]) == "line 2"


def test_kinds_one_hot_and_json_round_trip():
    t = table()
    enc = TabularEncoder(impute="median").fit(t, ["age", "city", "member"])
    kinds = {c["name"]: c["kind"] for c in enc.columns}
    assert kinds == {"age": "numeric", "city": "categorical", "member": "categorical"}
    assert enc.feature_names() == ["age", "city=berlin", "city=london", "city=paris",
                                   "member=no", "member=yes"]
    X = enc.transform(t)
    np.testing.assert_array_equal(X[:, 0], [30, 35, 50, 40, 20])      # median of 30,50,40,20
    np.testing.assert_array_equal(X[:, 1:4].sum(axis=1), 1)
    assert X[2, 5] == 1                     # member NA -> most frequent "yes"
    config = json.loads(json.dumps(enc.to_config()))                  # plain JSON
    again = TabularEncoder.from_config(config)
    np.testing.assert_array_equal(again.transform(t), X)
    mean, scale = enc.scaling(X)
    assert (mean[1:] == 0).all() and (scale[1:] == 1).all() and scale[0] > 0


@pytest.mark.parametrize("strategy,expected", [("mean", 35.0), ("median", 35.0),
                                               ("most_frequent", 20.0)])
def test_impute_strategies(strategy, expected):
    enc = TabularEncoder(impute=strategy).fit(table(), ["age"])
    assert enc.columns[0]["fill"] == expected


def test_missing_values_refused_with_rows_and_columns():
    with pytest.raises(MissingValuesError) as err:
        TabularEncoder().fit(table(), ["age", "city", "member"])
    message = str(err.value)
    assert "column 'age' at line 3" in message and "column 'member' at line 4" in message
    assert "--impute" in message and "2 row(s)" in message


def test_unseen_categories_warn_or_raise():
    enc = TabularEncoder(impute="mean").fit(table(), ["age", "city"])
    new = table("age,city\n10,rome\n20,paris\n")
    with pytest.warns(UnseenCategoryWarning, match="'rome'.*line 2"):
        X = enc.transform(new)
    assert X[0, 1:].sum() == 0 and X[1, 1:].sum() == 1
    with pytest.raises(ValueError, match="not seen in training"):
        enc.transform(new, unseen="error")
    with pytest.raises(ValueError, match="lacks the column"):
        enc.transform(table("age\n1\n"))
    with pytest.raises(ValueError, match="numeric in the model but has text"):
        enc.transform(table("age,city\nold,paris\n"))


def test_forced_categorical_and_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    enc = TabularEncoder(categorical=["age"], impute="most_frequent").fit(table(), ["age"])
    assert enc.columns[0]["kind"] == "categorical"
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1.5, None, 3.0], "c": ["u", None, "v"], "n": [1, 2, 3]}), path)
    t = read_table(str(path))
    assert t.names == ["x", "c", "n"] and np.isnan(t.column("x")[1]) and t.column("c")[1] == ""
    X = TabularEncoder(impute="mean").fit_transform(t, ["x", "c", "n"])
    np.testing.assert_allclose(X[:, 0], [1.5, 2.25, 3.0])
    assert t.locations([1]) == "row 2"


# ---- the command line, end to end ----

def write_messy_csv(path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["customer,age,plan,region,income,churn"]
    for i in range(n):
        age = rng.normal(40, 10)
        plan = rng.choice(["basic", "pro", "team"])
        region = rng.choice(["north", "south"])
        income = rng.lognormal(10, 0.4)
        churn = "yes" if (age - 40) / 10 + (plan == "basic") * 1.5 > 0.5 else "no"
        age_cell = "" if i % 13 == 0 else f"{age:.1f}"
        plan_cell = "NA" if i % 29 == 0 else plan
        lines.append(f"c{i},{age_cell},{plan_cell},{region},{income:.0f},{churn}")
    path.write_text("\n".join(lines) + "\n")


def run_cli(args, stdin=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "fastopt", *args], capture_output=True,
                          text=True, timeout=300, input=stdin, cwd=cwd)


def test_cli_refuses_missing_values_naming_them(tmp_path):
    data = tmp_path / "c.csv"
    write_messy_csv(data)
    proc = run_cli(["train", "--data", str(data), "--target", "churn", "--quiet"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "column 'age' at lines 2," in proc.stderr and "column 'plan'" in proc.stderr
    assert "--impute" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_train_predict_export_end_to_end(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    data = tmp_path / "c.csv"
    write_messy_csv(data)
    model_path = tmp_path / "churn.npz"
    assert main(["train", "--data", str(data), "--target", "churn", "--id", "customer",
                 "--impute", "median", "--hidden", "32,16", "--batch-norm", "--dropout", "0.1",
                 "--epochs", "40", "--quiet", "--save", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert float(out.split("held-out accuracy:")[1].split()[0]) > 0.85
    model = fo.load(model_path)
    assert model.metadata["tabular"]["impute"] == "median" and model.metadata["id"] == "customer"

    new = tmp_path / "new.csv"
    new.write_text("customer,age,plan,region,income\nz1,25,basic,north,20000\n"
                   "z2,,pro,south,30000\nz3,60,gold,north,25000\n")
    preds = tmp_path / "p.csv"
    assert main(["predict", str(model_path), "--data", str(new), "--out", str(preds)]) == 0
    err = capsys.readouterr().err
    assert "'gold'" in err and "all-zero" in err
    rows = [line.split(",") for line in preds.read_text().split()]
    assert rows[0] == ["customer", "churn"] and [r[0] for r in rows[1:]] == ["z1", "z2", "z3"]
    assert all(r[1] in ("yes", "no") for r in rows[1:])
    assert main(["predict", str(model_path), "--data", str(new), "--out", str(preds),
                 "--unseen", "error"]) == 2
    assert "not seen in training" in capsys.readouterr().err

    # stdin in, stdout out, probabilities with the id carried over
    proc = run_cli(["predict", str(model_path), "--data", "-", "--proba"],
                   stdin=new.read_text(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == "customer,p_no,p_yes" and len(lines) == 4
    P = np.array([line.split(",")[1:] for line in lines[1:]], float)
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-6)

    onnx_path = tmp_path / "churn.onnx"
    assert main(["export", str(model_path), "--out", str(onnx_path)]) == 0
    assert "outputs logits, probabilities, label" in capsys.readouterr().out
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"age": np.array([[25], [np.nan], [60]], np.float32),
             "plan": np.array([["basic"], ["pro"], ["gold"]], object),
             "region": np.array([["north"], ["south"], ["north"]], object),
             "income": np.array([[20000], [30000], [25000]], np.float32)}
    _, proba, label = sess.run(None, feeds)
    np.testing.assert_allclose(proba, P, atol=1e-5)
    assert label.tolist() == [r[1] for r in rows[1:]]


def test_cli_stdin_training_no_standardize_and_numeric_regression(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 2))
    y = 3 * X[:, 0] - X[:, 1]
    color = np.where(X[:, 0] > 0, "warm", "cold")
    text = "a,b,color,y\n" + "".join(f"{p:.5f},{q:.5f},{c},{t:.5f}\n"
                                      for (p, q), c, t in zip(X, color, y))
    model_path = tmp_path / "r.npz"
    proc = run_cli(["train", "--data", "-", "--target", "y", "--epochs", "60", "--quiet",
                    "--lr", "0.01", "--no-standardize", "--save", str(model_path)],
                   stdin=text, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.split("held-out R^2:")[1].split(",")[0]) > 0.9
    model = fo.load(model_path)
    assert not any(isinstance(layer, fo.Standardize) for layer in model.layers)
    assert model.metadata["task"] == "regression"


def test_cli_table_mistakes_are_one_line(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("k,x,y\na,1,0\nb,2,1\nc,3,0\nd,4,1\ne,5,0\n")
    for args, message in [
        (["train", "--data", str(data), "--id", "nope"], "is not a column"),
        (["train", "--data", str(data), "--categorical", "zz"], "not feature columns"),
        (["train", "--data", str(tmp_path / "x.xlsx")], "no such file"),
    ]:
        proc = run_cli(args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_table_locations_after_take():
    t = Table(["a"], {"a": np.array(["1", "", "3", ""])}, "s", first_line=2)
    part = t.take([1, 3])
    assert part.locations([0, 1]) == "lines 3, 5"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(MissingValuesError, match="lines 3, 5"):
            TabularEncoder().fit(t, ["a"])
