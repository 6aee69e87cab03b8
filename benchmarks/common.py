"""Shared set-up for the benchmarks: the reference models of the issues."""

import numpy as np

import fastopt as fo


def mlp(sizes, dtype="float32", activation="relu", seed=0):
    """Dense layers ``sizes[0] → … → sizes[-1]``; hidden ones use ``activation``."""
    layers = [fo.Dense(n, activation=activation) for n in sizes[1:-1]] + [fo.Dense(sizes[-1])]
    return fo.Sequential(layers, input_dim=sizes[0], dtype=dtype, seed=seed)


def classification_batch(n, d, k, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, k, n)
