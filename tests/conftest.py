import numpy as np
import pytest

import fastopt


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = fastopt.get_num_threads()
    yield
    fastopt.set_num_threads(n)


def tol(dtype):
    """Comparison tolerance against a float64 reference."""
    return dict(rtol=2e-5, atol=2e-6) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-13)
