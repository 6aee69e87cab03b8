"""The thread knob: validation, the context manager, the OMP_NUM_THREADS default."""

import os
import subprocess
import sys

import pytest

import fastopt as fo
from fastopt._kernels import _parallel


def test_set_and_context_manager_restore():
    fo.set_num_threads(1)
    assert fo.get_num_threads() == 1
    with fo.threads(3):
        assert fo.get_num_threads() == 3
    assert fo.get_num_threads() == 1


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_bad_thread_counts_are_rejected(bad, error):
    with pytest.raises(error):
        fo.set_num_threads(bad)


def test_omp_num_threads_is_the_default(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", "import fastopt; print(fastopt.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == "3"


def test_kernels_are_built_with_openmp():
    assert _parallel.openmp_enabled()


def test_blas_is_single_threaded_inside_fastopt_and_restored_after():
    from threadpoolctl import threadpool_info

    from fastopt.threads import blas_single_thread

    def scipy_blas_threads():
        return [i["num_threads"] for i in threadpool_info() if "scipy" in i["filepath"]
                and "numpy" not in i["filepath"]]

    before = scipy_blas_threads()
    with blas_single_thread:
        with blas_single_thread:
            assert all(n == 1 for n in scipy_blas_threads())
        assert all(n == 1 for n in scipy_blas_threads())
    assert scipy_blas_threads() == before
