"""The command line: the main job on the bundled digits, user data, and one-line errors."""

import subprocess
import sys

import numpy as np
import pytest

from fastopt.cli import main


def test_main_job_trains_on_the_bundled_digits(capsys):
    assert main(["train"]) == 0
    out = capsys.readouterr().out
    assert "UCI handwritten digits" in out
    assert "epoch  30  loss" in out
    accuracy = float(out.split("held-out accuracy:")[1].split()[0])
    assert accuracy >= 0.95, out


def test_python_dash_m_runs_the_same_command(tmp_path):
    # cwd elsewhere: from the repository root, -m would import the uncompiled source tree.
    proc = subprocess.run([sys.executable, "-m", "fastopt", "train", "--epochs", "2", "--quiet"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "held-out accuracy" in proc.stdout


def test_trains_on_a_user_csv_with_a_named_target(tmp_path, capsys, rng):
    X = rng.standard_normal((300, 3))
    label = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    path = tmp_path / "data.csv"
    with open(path, "w") as f:
        f.write("a,b,answer,c\n")
        for row, lab in zip(X, label):
            f.write(f"{row[0]},{row[1]},{lab},{row[2]}\n")
    assert main(["train", "--data", str(path), "--target", "answer", "--epochs", "30", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 classes" in out
    assert float(out.split("held-out accuracy:")[1].split()[0]) > 0.9


def test_regression_on_a_user_npz(tmp_path, capsys, rng):
    X = rng.standard_normal((400, 4))
    y = X @ np.array([1.0, -1.0, 2.0, 0.5]) + 0.01 * rng.standard_normal(400)
    path = tmp_path / "data.npz"
    np.savez(path, X=X, y=y)
    assert main(["train", "--data", str(path), "--epochs", "100", "--quiet", "--lr", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "regression" in out
    assert float(out.split("held-out R^2:")[1].split(",")[0]) > 0.95


@pytest.mark.parametrize("args,message", [
    (["--data", "/nonexistent.csv"], "no such file"),
    (["--data", "{csv}", "--target", "nope"], "is not a column"),
    (["--test-fraction", "1.5"], "--test-fraction"),
])
def test_user_mistakes_print_one_line_and_exit_2(tmp_path, args, message):
    csv = tmp_path / "d.csv"
    csv.write_text("x,y\n1,0\n2,1\n3,0\n4,1\n")
    args = [a.replace("{csv}", str(csv)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "fastopt", "train", *args], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_train_save_predict_info_round_trip(tmp_path, capsys):
    model_path = tmp_path / "digits.npz"
    assert main(["train", "--hidden", "64,32", "--batch-norm", "--dropout", "0.1", "--validation-split",
                 "0.1", "--early-stopping", "3", "--schedule", "cosine", "--epochs", "15", "--quiet",
                 "--save", str(model_path)]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("held-out accuracy:")[1].split()[0])
    assert accuracy > 0.93
    X, y = __import__("fastopt").datasets.load_digits()
    data = tmp_path / "raw.csv"
    np.savetxt(data, X[:50], delimiter=",", header=",".join(f"pixel_{i}" for i in range(64)), comments="")
    preds = tmp_path / "pred.csv"
    assert main(["predict", str(model_path), "--data", str(data), "--out", str(preds)]) == 0
    lines = preds.read_text().split()
    assert lines[0] == "digit" and len(lines) == 51
    assert np.mean(np.array(lines[1:], dtype=int) == y[:50]) > 0.9
    assert main(["predict", str(model_path), "--data", str(data), "--out", str(preds), "--proba"]) == 0
    P = np.loadtxt(preds, delimiter=",", skiprows=1)
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-5)
    capsys.readouterr()
    assert main(["info", str(model_path)]) == 0
    info = capsys.readouterr().out
    assert "classification" in info and "BatchNorm" in info


@pytest.mark.parametrize("args,message", [
    (["train", "--early-stopping", "3"], "needs --validation-split"),
    (["train", "--dropout", "1.0"], "--dropout"),
    (["info", "/nonexistent.npz"], "no such file"),
    (["predict", "{csv}", "--data", "{csv}", "--out", "x.csv"], "not a readable fastopt file"),
])
def test_more_user_mistakes_are_one_line_errors(tmp_path, args, message):
    csv = tmp_path / "d.csv"
    csv.write_text("x,y\n1,0\n2,1\n")
    args = [a.replace("{csv}", str(csv)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "fastopt", *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
