"""Input checks at the Python boundary: clear errors before any work starts.

Arrays of any numeric dtype and layout are accepted and converted ONCE to a
C-contiguous array of the model's dtype (a copy only when needed); the caller's
array is never modified.
"""

import math
import numbers

import numpy as np


def as_matrix(X, dtype, name="X", n_features=None):
    """X as a C-contiguous 2-D array of ``dtype``, checked to be finite."""
    if X is None:
        raise ValueError(f"{name} is None; expected a 2-D numeric array")
    if hasattr(X, "to_numpy") and not isinstance(X, np.ndarray):  # pandas
        X = X.to_numpy()
    arr = np.asarray(X)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}"
                         + ("; reshape a single sample with X.reshape(1, -1)" if arr.ndim == 1 else ""))
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, but the model expects {n_features}")
    out = np.ascontiguousarray(arr, dtype=dtype)
    if out.dtype.kind == "f":
        # By blocks of rows: one whole-array isfinite would allocate a boolean copy of X
        # (47 MB for MNIST) on every fit.
        step = max(1, (1 << 20) // max(1, out.shape[1]))
        for start in range(0, out.shape[0], step):
            block = out[start:start + step]
            if not np.isfinite(block).all():
                bad = np.argwhere(~np.isfinite(block))[0]
                raise ValueError(f"{name} contains NaN or infinity (first at row "
                                 f"{start + bad[0]}, column {bad[1]})")
    return out


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_same_length(X, y, x_name="X", y_name="y"):
    if len(X) != len(y):
        raise ValueError(f"{x_name} has {len(X)} samples but {y_name} has {len(y)}")


def check_number(value, name, low=None, high=None, low_open=False, high_open=False):
    """A finite real number within the given bounds, as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_seed(seed):
    """A non-negative integer seed."""
    if isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def lookup(registry, name, what):
    """``registry[name]`` by a case-insensitive name, or a ValueError naming the choices."""
    try:
        return registry[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(registry)}") from None
