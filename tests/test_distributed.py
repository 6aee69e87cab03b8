"""Data-parallel training (fastopt.distributed) on 2 and 3 MPI ranks on loopback.

The tests start their ranks themselves (``mpiexec -n N python script``, scripts in
tests/mpi_scripts/) and compare with the same script run as one plain process; they are
skipped when mpi4py or mpiexec is missing (``pip install "fastopt[mpi]"``). Run plainly,
``pytest tests/test_distributed.py``, or under ``mpiexec -n 2 python -m pytest
tests/test_distributed.py``: then rank 0 of that outer launch runs them (its children get
an environment without the outer launch's PMI variables) and the other ranks skip them.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "mpi_scripts")


def _mpiexec():
    # the mpich wheel installs mpiexec next to the interpreter (a venv's bin/)
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.access(local, os.X_OK) else shutil.which("mpiexec")


def _outer_rank():
    return int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))


needs_mpi = [
    pytest.mark.skipif(_outer_rank() != 0, reason="under mpiexec: rank 0 of the outer "
                                                  "launch runs these tests"),
    pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (pip install 'fastopt[mpi]')"),
]


def _env():
    # not the outer launch's process-manager variables (pytest itself under mpiexec)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL"))}
    # one thread per rank (the machine may have 2 cores); hydra starts local ranks by fork
    env.update(OMP_NUM_THREADS="1", HYDRA_LAUNCHER="fork")
    return env


def _run(n, script, *args, timeout=60):
    """``mpiexec -n n python script args`` (n = 0: plain python, the reference)."""
    cmd = [sys.executable, os.path.join(SCRIPTS, script), *map(str, args)]
    if n:
        cmd = [_mpiexec(), "-n", str(n)] + cmd
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def _ok(proc):
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"


# ---- no MPI needed ----

def test_shares_cover_the_batch_and_differ_by_at_most_one():
    from fastopt.distributed import shares

    for rows in range(0, 40):
        for size in range(1, 6):
            parts = shares(rows, size)
            assert parts[0][0] == 0 and parts[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1


def test_world_without_mpi4py_names_the_extra(monkeypatch):
    import fastopt.distributed as dist

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r'pip install "fastopt\[mpi\]"'):
        dist.world()


def test_single_process_path_untouched():
    """A Trainer without comm never builds a distributed plan (one-call step)."""
    import fastopt as fo

    model = fo.Sequential([fo.Dense(4), fo.BatchNorm(), fo.Dense(2)], input_dim=3, seed=0)
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.SGD(lr=0.1))
    assert trainer.comm is None and trainer._dist is None


# ---- equivalence with one process ----

def _params(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("n", [2, 3])
def test_equivalence_bn_dropout_adam(tmp_path, dtype, tol, n):
    """20+ steps of the BN + Dropout + Adam model: N ranks with global batch B give one
    process's parameters with batch B (103 rows, batch 20: uneven shares, a last batch
    of 3 rows); the script asserts after every step that all ranks are bitwise equal."""
    ref, dist = tmp_path / "ref.npz", tmp_path / "dist.npz"
    _ok(_run(0, "equivalence.py", ref, dtype, 103, 20, 20)[0])
    proc, _ = _run(n, "equivalence.py", dist, dtype, 103, 20, 20, "distributed")
    _ok(proc)
    a, b = _params(ref), _params(dist)
    assert int(a["steps"]) == int(b["steps"]) == 24
    for key in ("params", "running"):
        rel = np.abs(a[key] - b[key]).max() / np.abs(a[key]).max()
        assert rel < tol, (key, rel)
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=100 * tol)
    np.testing.assert_allclose(b["acc"], a["acc"], rtol=0, atol=1e-12)


def test_equivalence_mnist_workload_float64(tmp_path):
    """The bar as filed: the mnist-style BN + Dropout + Adam model (784-256-128-10),
    20 steps, float64, 2 ranks against one process: within 1e-12 relative."""
    ref, dist = tmp_path / "ref.npz", tmp_path / "dist.npz"
    _ok(_run(0, "mnist_workload.py", ref, "float64")[0])
    _ok(_run(2, "mnist_workload.py", dist, "float64", "distributed")[0])
    a, b = _params(ref), _params(dist)
    assert int(a["steps"]) == int(b["steps"]) == 20
    rel = np.abs(a["params"] - b["params"]).max() / np.abs(a["params"]).max()
    assert rel < 1e-12, rel


def test_empty_share_and_weights(tmp_path):
    """3 ranks, 102 rows in batches of 20: the last batch has 2 rows and rank 2 none;
    sample weights (the loss scale is the global batch's 1/Σw)."""
    ref, dist = tmp_path / "ref.npz", tmp_path / "dist.npz"
    _ok(_run(0, "equivalence.py", ref, "float64", 102, 20, 20, "x", "weighted")[0])
    _ok(_run(3, "equivalence.py", dist, "float64", 102, 20, 20, "distributed",
             "weighted")[0])
    a, b = _params(ref), _params(dist)
    rel = np.abs(a["params"] - b["params"]).max() / np.abs(a["params"]).max()
    assert rel < 1e-12


def test_equivalence_without_batch_norm(tmp_path):
    """Dropout alone (the one-call step, masks at the share's global row offset)."""
    ref, dist = tmp_path / "ref.npz", tmp_path / "dist.npz"
    _ok(_run(0, "equivalence.py", ref, "float64", 103, 20, 20, "x", "nobn")[0])
    _ok(_run(3, "equivalence.py", dist, "float64", 103, 20, 20, "distributed", "nobn")[0])
    a, b = _params(ref), _params(dist)
    rel = np.abs(a["params"] - b["params"]).max() / np.abs(a["params"]).max()
    assert rel < 1e-12


def test_early_stopping_and_checkpoint_agree(tmp_path):
    ref, dist = tmp_path / "ref", tmp_path / "dist"
    ref.mkdir()
    dist.mkdir()
    _ok(_run(0, "scenarios.py", "early", ref)[0])
    _ok(_run(2, "scenarios.py", "early", dist, "distributed")[0])
    a = json.loads((ref / "early.json").read_text())
    b = json.loads((dist / "early.json").read_text())
    assert b["identical"]
    assert b["epochs"] == a["epochs"] and len(a["epochs"]) < 40    # stopped early, together
    assert b["restored"] == a["restored"]
    np.testing.assert_allclose(b["history"]["val_loss"], a["history"]["val_loss"], rtol=1e-10)
    assert b["history"]["lr"] == a["history"]["lr"]                # plateau decisions agree
    assert b["saved"][0] == a["saved"][0] > 0 and b["saved"][1:] == [0]   # rank 0 writes
    assert (dist / "best.npz").exists()
    pa, pb = _params(ref / "early.npz")["params"], _params(dist / "early.npz")["params"]
    assert np.abs(pa - pb).max() / np.abs(pa).max() < 1e-12


def test_checkpoint_resume_under_mpi(tmp_path):
    ref, dist = tmp_path / "ref", tmp_path / "dist"
    ref.mkdir()
    dist.mkdir()
    _ok(_run(0, "scenarios.py", "resume", ref)[0])
    _ok(_run(3, "scenarios.py", "resume", dist, "distributed")[0])
    a = json.loads((ref / "resume.json").read_text())
    b = json.loads((dist / "resume.json").read_text())
    assert b["identical"] and b["epochs"] == a["epochs"] == [3, 4]
    assert b["step_count"] == a["step_count"]
    pa, pb = _params(ref / "resume.npz")["params"], _params(dist / "resume.npz")["params"]
    assert np.abs(pa - pb).max() / np.abs(pa).max() < 1e-12


def test_failure_on_one_rank_ends_all(tmp_path):
    proc, elapsed = _run(2, "scenarios.py", "fail", tmp_path, "distributed", timeout=30)
    why = f"rc={proc.returncode} after {elapsed:.1f} s\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode != 0, why
    assert elapsed < 20, why
    assert "rank 1 of 2 failed: RuntimeError: deliberate failure on rank 1" in proc.stderr, why
    assert "finished" not in proc.stdout, why


def test_ctrl_c_stops_every_rank_at_the_same_step(tmp_path):
    cmd = [_mpiexec(), "-n", "2", sys.executable, os.path.join(SCRIPTS, "scenarios.py"),
           "interrupt", str(tmp_path), "distributed"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        deadline = time.time() + 30
        while time.time() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if "training" in line or not line:
                break
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + out
    assert proc.returncode == 0, out
    results = [json.loads((tmp_path / f"interrupt-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["interrupted"] for r in results), out
    steps = results[0]["steps"]
    assert steps[0] == steps[1] and results[1]["steps"] == steps    # the same agreed step


def test_threads_default_to_the_host_cores_shared_by_its_ranks(tmp_path):
    from fastopt.threads import _physical_cores_available

    env = _env()
    env.pop("OMP_NUM_THREADS")
    cmd = [_mpiexec(), "-n", "2", sys.executable, os.path.join(SCRIPTS, "scenarios.py"),
           "threads", str(tmp_path), "distributed"]
    _ok(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60))
    expected = max(1, _physical_cores_available() // 2)
    for r in (0, 1):
        assert json.loads((tmp_path / f"threads-{r}.json").read_text())["threads"] == expected


def test_sklearn_estimator_on_rank_local_shards(tmp_path):
    pytest.importorskip("sklearn")
    ref, dist = tmp_path / "ref.npz", tmp_path / "dist.npz"
    _ok(_run(0, "estimator.py", ref)[0])
    _ok(_run(2, "estimator.py", dist, "distributed")[0])
    a, b = _params(ref), _params(dist)
    assert int(a["n_iter"]) == int(b["n_iter"]) and list(a["classes"]) == list(b["classes"])
    np.testing.assert_allclose(b["curve"], a["curve"], rtol=1e-12)
    np.testing.assert_allclose(b["proba"], a["proba"], rtol=0, atol=1e-9)


def test_cli_distributed(tmp_path):
    model = tmp_path / "m.npz"
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "fastopt", "train", "--distributed",
           "--epochs", "2", "--batch-norm", "--dropout", "0.1", "--save", str(model)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=60)
    _ok(proc)
    assert proc.stdout.count("held-out accuracy") == 1      # rank 0 prints
    assert proc.stdout.count("saved the model") == 1 and model.exists()
    single = subprocess.run([sys.executable, "-m", "fastopt", "train", "--epochs", "2",
                             "--batch-norm", "--dropout", "0.1", "--quiet"], env=_env(),
                            capture_output=True, text=True, timeout=60)
    _ok(single)
    acc = [line.split()[2] for text in (proc.stdout, single.stdout)
           for line in text.splitlines() if line.startswith("held-out accuracy")]
    assert acc[0] == acc[1], acc


def test_cli_error_on_one_rank_ends_all(tmp_path):
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "fastopt", "train", "--distributed",
           "--data", str(tmp_path / "missing.csv"), "--target", "y"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and time.perf_counter() - t0 < 20
    assert "no such file" in proc.stderr


for _name, _obj in list(globals().items()):
    if _name.startswith("test_") and _name not in (
            "test_shares_cover_the_batch_and_differ_by_at_most_one",
            "test_world_without_mpi4py_names_the_extra", "test_single_process_path_untouched"):
        for _mark in needs_mpi:
            _obj = _mark(_obj)
        globals()[_name] = _obj
