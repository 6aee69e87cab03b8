"""Real data sets that ship with fastopt and load offline."""

import gzip
from importlib import resources

import numpy as np

__all__ = ["load_digits", "train_test_split"]


def load_digits():
    """The UCI optical-recognition handwritten digits (1797 images of 8×8, 10 classes).

    Returns ``X`` (1797, 64) float64 with pixel counts 0..16, and ``y`` (1797,) int64.
    Source: E. Alpaydin, C. Kaynak, UCI Machine Learning Repository (CC BY 4.0);
    see ``fastopt/datasets/data/README.md``.
    """
    path = resources.files(__name__).joinpath("data", "digits.csv.gz")
    with path.open("rb") as raw, gzip.open(raw, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1], data[:, -1].astype(np.int64)


def train_test_split(X, y, test_fraction=0.2, seed=0, stratify=True):
    """Split rows into train and test; stratified by label by default (for class labels)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    X = np.asarray(X)
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    rng = np.random.default_rng(seed)
    if stratify and y.ndim == 1 and y.dtype.kind in "iub":
        test = []
        for label in np.unique(y):
            rows = np.flatnonzero(y == label)
            rng.shuffle(rows)
            test.append(rows[:int(round(len(rows) * test_fraction))])
        test = np.sort(np.concatenate(test))
    else:
        test = np.sort(rng.permutation(len(X))[:int(round(len(X) * test_fraction))])
    mask = np.ones(len(X), bool)
    mask[test] = False
    if mask.all() or not mask.any():
        raise ValueError("the split left train or test empty; use more data or another test_fraction")
    return X[mask], X[~mask], y[mask], y[~mask]
