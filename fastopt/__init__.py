"""fastopt: a standalone CPU training engine for dense neural networks.

Fused Cython kernels (BLAS GEMMs, OpenMP loops) under a thin Python API.
"""

from . import datasets, losses, optim, schedules
from .layers import Activation, Dense, Layer
from .layers import BatchNorm, Dropout
from .model import Sequential
from .threads import get_num_threads, set_num_threads, threads
from .train import History, Trainer

__version__ = "0.1.0"

__all__ = [
    "Sequential", "Dense", "Activation", "Layer", "BatchNorm", "Dropout",
    "Trainer", "History",
    "optim", "schedules", "losses", "datasets",
    "threads", "set_num_threads", "get_num_threads",
]
