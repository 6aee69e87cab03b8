import os

import numpy as np
import pytest

import fastopt

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - hypothesis is in the test extras
    settings = None

if settings is not None:
    # Property tests (tests/test_properties.py). "ci", the default: a bounded, reproducible
    # number of examples so the suite stays within CI's time. "long": a deep local run,
    # HYPOTHESIS_PROFILE=long pytest tests/test_properties.py (about 10-20 min on 2 cores).
    _common = dict(deadline=None, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    settings.register_profile("ci", max_examples=50, derandomize=True, database=None, **_common)
    settings.register_profile("dev", max_examples=200, **_common)
    settings.register_profile("long", max_examples=5000, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
