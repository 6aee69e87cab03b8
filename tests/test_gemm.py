"""The GEMM layer (fastopt._kernels._gemm, fastopt.config) against float64 references."""

import itertools
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastopt
from fastopt import config
from fastopt._kernels import _gemm
from fastopt._kernels import _testing
from fastopt.threads import blas_single_thread
from fastopt.threads import get_num_threads

DIMS = [1, 7, 17, 33, 64, 65, 257]
TRANS = list(itertools.product([False, True], [False, True]))
DTYPES = [np.float32, np.float64]
ISAS = [isa for isa in _gemm.ISAS
        if _gemm.ISAS.index(isa) <= _gemm.ISAS.index(_gemm.best_micro_isa())]

# PyTorch exports the symbols of its own MKL: importing it before MKL is loaded here keeps
# the later torch tests of this session on torch's MKL (fastopt.config._EMBEDS_MKL).
try:
    import torch  # noqa: F401
except ImportError:
    pass
mkl_available = config._mkl.load()
needs_mkl = pytest.mark.skipif(not mkl_available, reason=f"MKL not available: {config._mkl.error}")
BACKENDS = ["openblas", pytest.param("mkl", marks=needs_mkl)]


@pytest.fixture(autouse=True)
def restore_gemm_state():
    # One BLAS thread throughout: the direct entry point is a single call, and an idle
    # second OpenBLAS thread on a shared machine only makes the tests slow.
    backend, isa, limit = config._requested, _gemm.micro_isa(), _gemm.get_micro_limit()
    with blas_single_thread:
        yield
    config.set_gemm_backend(backend)
    _gemm.set_micro_isa(isa)
    _gemm.set_micro_limit(limit)


def operands(rng, m, n, k, trans_a, trans_b, dtype):
    A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return A, B


def reference(A, B, trans_a, trans_b):
    a = A.astype(np.float64)
    b = B.astype(np.float64)
    return (a.T if trans_a else a) @ (b.T if trans_b else b)


def assert_close(C, ref, k, dtype):
    # Rounding grows like sqrt(k) for random data; the bound is relative to the scale of
    # the terms, so exact cancellation in one element cannot fail it.
    eps = np.finfo(dtype).eps
    scale = np.sqrt(max(k, 1)) * (np.abs(ref).max() + 1.0)
    np.testing.assert_array_less(np.abs(C.astype(np.float64) - ref), 8 * eps * scale + 1e-300)


def check_all_shapes(path, dtype, trans_a, trans_b, dims=DIMS, alpha=1.0, beta=0.0):
    rng = np.random.default_rng(12)
    for m, n, k in itertools.product(dims, dims, dims):
        A, B = operands(rng, m, n, k, trans_a, trans_b, dtype)
        C0 = rng.standard_normal((m, n)).astype(dtype)
        C = C0.copy() if beta != 0 else np.full((m, n), np.nan, dtype)
        _gemm.gemm(A, B, C, trans_a, trans_b, alpha, beta, path)
        ref = alpha * reference(A, B, trans_a, trans_b) + beta * C0.astype(np.float64)
        assert_close(C, ref, k, dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANS)
def test_micro_kernel_matches_reference_on_awkward_shapes(isa, dtype, trans_a, trans_b):
    assert _gemm.set_micro_isa(isa) == isa
    check_all_shapes("micro", dtype, trans_a, trans_b)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_micro_kernel_alpha_beta_and_long_k(isa, dtype):
    # k past one chunk (KC terms) exercises the chunked accumulation into C.
    _gemm.set_micro_isa(isa)
    for trans_a, trans_b in TRANS:
        check_all_shapes("micro", dtype, trans_a, trans_b, dims=[1, 17, _gemm.KC + 3],
                         alpha=-1.5, beta=0.5)


@pytest.mark.parametrize("path", ["micro"] + BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_beta_zero_never_reads_c(path, dtype):
    rng = np.random.default_rng(3)
    for trans_a, trans_b in TRANS:
        A, B = operands(rng, 33, 65, 17, trans_a, trans_b, dtype)
        C = np.full((33, 65), np.nan, dtype)
        _gemm.gemm(A, B, C, trans_a, trans_b, 1.0, 0.0, path)
        assert np.isfinite(C).all()


@pytest.mark.parametrize("path", ["micro"] + BACKENDS)
def test_leading_dimensions_and_empty_k(path):
    rng = np.random.default_rng(4)
    big_a = rng.standard_normal((40, 50))
    big_b = rng.standard_normal((60, 70))
    big_c = np.full((45, 80), 7.0)
    A, B, C = big_a[:33, :17], big_b[:17, :65], big_c[:33, :65]
    _gemm.gemm(A, B, C, False, False, 1.0, 0.0, path)
    np.testing.assert_allclose(C, A @ B, rtol=1e-12, atol=1e-12)
    assert (big_c[33:] == 7.0).all() and (big_c[:, 65:] == 7.0).all()
    # k = 0: C = beta·C.
    C = np.full((5, 6), 2.0)
    _gemm.gemm(np.empty((5, 0)), np.empty((0, 6)), C, False, False, 1.0, 0.5, path)
    np.testing.assert_array_equal(C, 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANS)
def test_backend_matches_reference_on_awkward_shapes(backend, dtype, trans_a, trans_b):
    check_all_shapes(backend, dtype, trans_a, trans_b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("limit", ["none", "all"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiled_gemm_is_bitwise_thread_count_invariant(backend, limit, dtype):
    # Shapes cut into several tiles (_testing.tile_grid), with ragged edges.
    config.set_gemm_backend(backend)
    _gemm.set_micro_limit(0 if limit == "none" else 1 << 40)
    rng = np.random.default_rng(5)
    for (m, n, k), (trans_a, trans_b) in itertools.product(
            [(128, 784, 256), (257, 65, 1100), (513, 300, 33)], TRANS):
        assert np.prod(_testing.tile_grid(m, n, k)[2:]) > 1
        A, B = operands(rng, m, n, k, trans_a, trans_b, dtype)
        out = []
        for threads in (1, 2, 3):
            C = np.empty((m, n), dtype)
            with fastopt.threads(threads):
                _testing.gemm_rowmajor(A, B, C, trans_a, trans_b, n_threads=get_num_threads())
            out.append(C)
        for C in out[1:]:
            np.testing.assert_array_equal(C, out[0])
        assert_close(out[0], reference(A, B, trans_a, trans_b), k, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dispatch_sends_small_products_to_the_micro_kernel(backend):
    config.set_gemm_backend(backend)
    rng = np.random.default_rng(6)
    A, B = operands(rng, 64, 64, 32, False, True, np.float32)
    via = {}
    for path in ("micro", backend):
        via[path] = np.empty((64, 64), np.float32)
        _gemm.gemm(A, B, via[path], False, True, path=path)
    for limit, expected in ((64 * 64 * 32, "micro"), (64 * 64 * 32 - 1, backend)):
        _gemm.set_micro_limit(limit)
        C = np.empty((64, 64), np.float32)
        _testing.gemm_rowmajor(A, B, C, False, True, n_threads=get_num_threads())
        np.testing.assert_array_equal(C, via[expected])


def test_set_gemm_backend_switches_and_reports():
    assert config.set_gemm_backend("openblas") == "openblas"
    assert fastopt.get_gemm_backend() == "openblas"
    assert _gemm.get_backend() == "openblas"
    with pytest.raises(ValueError, match="unknown GEMM backend"):
        fastopt.set_gemm_backend("cublas")
    assert fastopt.set_gemm_backend("auto") in ("openblas", "mkl")


@needs_mkl
def test_mkl_backend_is_selected_when_installed():
    assert fastopt.set_gemm_backend("mkl") == "mkl"
    info = fastopt.show_config(mode="dicts")["gemm"]
    assert info["backend"] == "mkl"
    assert "Math Kernel Library" in info["mkl"]["version"]
    assert info["mkl"]["threading"] == "sequential"


def run_python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FASTOPT_")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True, timeout=120)


def test_missing_mkl_gives_a_clear_message_and_falls_back():
    code = ("import warnings; warnings.simplefilter('error')\n"
            "import fastopt\n"
            "try:\n"
            "    fastopt.set_gemm_backend('mkl')\n"
            "except RuntimeWarning as w:\n"
            "    print('WARNED', w)\n"
            "print('BACKEND', fastopt.get_gemm_backend())\n")
    res = run_python(code, FASTOPT_MKL_LIB="/nonexistent/libmkl_rt.so.3")
    assert res.returncode == 0, res.stderr
    assert "WARNED GEMM backend 'mkl' is not available" in res.stdout
    assert "BACKEND openblas" in res.stdout


def test_environment_variable_selects_the_backend():
    code = "import fastopt; print('BACKEND', fastopt.get_gemm_backend())"
    res = run_python(code, FASTOPT_GEMM_BACKEND="openblas")
    assert res.returncode == 0, res.stderr
    assert "BACKEND openblas" in res.stdout
    res = run_python(code, FASTOPT_GEMM_BACKEND="mkl", FASTOPT_MKL_LIB="/nonexistent/lib.so")
    assert res.returncode == 0, res.stderr
    assert "BACKEND openblas" in res.stdout and "not available" in res.stderr
    res = run_python(code, FASTOPT_GEMM_BACKEND="bogus")
    assert res.returncode == 0, res.stderr
    assert "is not one of" in res.stderr


def test_micro_limit_environment_override():
    code = ("import fastopt\nfrom fastopt._kernels import _gemm\n"
            "print('LIMIT', _gemm.get_micro_limit())")
    res = run_python(code, FASTOPT_GEMM_MICRO_LIMIT="0")
    assert res.returncode == 0, res.stderr
    assert "LIMIT 0" in res.stdout


def test_show_config_reports_versions_backend_isa_threads(capsys):
    fastopt.show_config()
    out = capsys.readouterr().out
    for word in ("fastopt:", "numpy:", "scipy:", "cpu_baseline:", "micro_kernel_isa:",
                 "backend:", "openblas:", "threads:"):
        assert word in out
    cfg = fastopt.show_config(mode="dicts")
    assert cfg["cpu"]["micro_kernel_isa"] in _gemm.ISAS
    assert cfg["gemm"]["backend"] == fastopt.get_gemm_backend()
    assert cfg["threads"]["fastopt"] == fastopt.get_num_threads()
    with pytest.raises(ValueError):
        fastopt.show_config(mode="yaml")


def test_micro_isa_is_capped_at_what_the_cpu_runs():
    best = _gemm.best_micro_isa()
    assert _gemm.set_micro_isa("avx512") == best
    assert _gemm.set_micro_isa("portable") == "portable"
    with pytest.raises(ValueError):
        _gemm.set_micro_isa("sve")


def test_direct_entry_point_checks_shapes():
    with pytest.raises(ValueError, match="shapes"):
        _gemm.gemm(np.ones((3, 4)), np.ones((5, 6)), np.ones((3, 6)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not mkl_available:
            with pytest.raises(RuntimeError, match="MKL"):
                _gemm.gemm(np.ones((3, 4)), np.ones((4, 6)), np.ones((3, 6)), path="mkl")


def test_bench_gemm_runs_as_plain_python(capsys):
    import pathlib
    root = str(pathlib.Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import bench_gemm

    bench = bench_gemm.MicroKernel()
    bench.setup("tiny 64x64x32", "fwd (B^T)", "micro")
    try:
        bench.time_gemm("tiny 64x64x32", "fwd (B^T)", "micro")
    finally:
        bench.teardown("tiny 64x64x32", "fwd (B^T)", "micro")
    share = bench_gemm.StepGemmShare()
    share.setup("tiny", 1)
    try:
        share.time_step("tiny", 1)
        share.time_gemms_alone("tiny", 1)
    finally:
        share.teardown("tiny", 1)
    bench_gemm.main(["share", "--threads", "1", "--workloads", "tiny", "--rounds", "1",
                     "--backends", "openblas:0", "openblas"])
    out = capsys.readouterr().out
    assert "CPU:" in out and "| tiny | 1 | openblas:0 | 0 |" in out


def test_auto_keeps_openblas_when_mkl_would_take_over_a_later_import(monkeypatch):
    # A library that embeds MKL, installed but not imported (stood in for by one that is
    # surely not imported), on an Intel CPU, with MKL not loaded yet.
    monkeypatch.setattr(config, "_EMBEDS_MKL", ("antigravity",))
    monkeypatch.setattr(config, "_auto_prefers_mkl", lambda: True)
    monkeypatch.setattr(config, "_mkl", config._MKL())
    assert config._mkl_would_capture() == ["antigravity"]
    assert fastopt.set_gemm_backend("auto") == "openblas"
    note = fastopt.show_config(mode="dicts")["gemm"]["auto"]
    assert "antigravity is installed but not imported" in note
    assert not config._mkl._tried
