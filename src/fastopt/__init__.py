"""fastopt: a standalone CPU training engine for dense neural networks.

Fused Cython kernels (BLAS GEMMs, OpenMP loops) under a thin Python API.
"""

from . import callbacks, datasets, distill, losses, metrics, optim, schedules
from .callbacks import Checkpoint, EarlyStopping, ReduceLROnPlateau
from .config import get_gemm_backend, set_gemm_backend, show_config
from .io import load, save
from .layers import Activation, BatchNorm, Dense, Dropout, Layer, Standardize
from .model import Sequential
from .threads import get_num_threads, set_num_threads, threads
from .train import History, Trainer

__version__ = "0.1.0"


def export_onnx(model, path=None, opset=None, **kwargs):
    """Export ``model`` to ONNX; see ``fastopt.export.export_onnx`` (imports onnx only here)."""
    from .export import export_onnx as _export_onnx
    return _export_onnx(model, path, opset, **kwargs)


__all__ = [
    "Sequential", "Dense", "Activation", "Layer", "BatchNorm", "Dropout", "Standardize",
    "Trainer", "History",
    "EarlyStopping", "ReduceLROnPlateau", "Checkpoint",
    "save", "load", "export_onnx",
    "optim", "schedules", "losses", "metrics", "callbacks", "datasets", "distill",
    "threads", "set_num_threads", "get_num_threads",
    "set_gemm_backend", "get_gemm_backend", "show_config",
]
