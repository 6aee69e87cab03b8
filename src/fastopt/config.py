"""The GEMM backend and the build: ``set_gemm_backend``, ``get_gemm_backend``, ``show_config``.

Every GEMM of fastopt's kernels goes through one entry point (``fastopt._kernels._gemm``)
that sends small products to fastopt's own register-blocked micro-kernel and the others
to a backend:

* ``"openblas"``: scipy's OpenBLAS through ``scipy.linalg.cython_blas``; always present.
* ``"mkl"``: Intel's MKL runtime (``libmkl_rt``), loaded at run time when the ``mkl``
  wheel is installed (``pip install "fastopt[mkl]"``); ``cblas_sgemm``/``cblas_dgemm``
  are called through function pointers, with MKL set to its sequential threading layer
  (fastopt runs one single-threaded call per tile on its own OpenMP threads, so MKL never
  starts threads of its own and Intel's OpenMP runtime is never loaded).
* ``"auto"`` (the default): MKL when it is installed, loads, and the CPU is Intel's (on
  AMD, MKL measured slower than OpenBLAS), unless PyTorch is installed but not imported
  yet (MKL loaded first would take over torch's own MKL: import torch first); else
  OpenBLAS.

Products of at most ``micro_kernel_limit`` multiply-adds (m·n·k of one tile) go to the
micro-kernel whatever the backend; the limit depends on the instruction sets (see
``_LIMIT_SAME_WIDTH``) and can be overridden with ``FASTOPT_GEMM_MICRO_LIMIT``
(0: never).

The choice is read from ``FASTOPT_GEMM_BACKEND`` when fastopt is imported, and can be
changed with :func:`set_gemm_backend` between (not during) kernel calls. Results are
bitwise identical for any thread count with every backend: each tile of the fixed tile
grid is one single-threaded call. They are not bitwise identical ACROSS backends (each
sums in its own order), so a resumed run that must match bit for bit needs the same
backend. ``FASTOPT_MKL_LIB`` may name the libmkl_rt file to load.
"""

import ctypes
import glob
import os
import platform
import sys
import warnings

from ._kernels import _gemm

BACKENDS = ("openblas", "mkl", "auto")

_MKL_INSTALL_HINT = 'pip install "fastopt[mkl]" (or: pip install mkl)'

# MKL's named constants (mkl_service.h).
_MKL_THREADING_SEQUENTIAL = 1
_MKL_INTERFACE_LP64 = 0


class _MKL:
    """The loaded libmkl_rt, or why it could not be loaded."""

    def __init__(self):
        self.lib = None
        self.path = None
        self.error = None
        self.version = None
        self.threading = None
        self._tried = False

    def load(self):
        if self._tried:
            return self.lib is not None
        self._tried = True
        try:
            self._load()
        except (OSError, AttributeError) as exc:  # no library, or not an MKL one
            _gemm.set_mkl_pointers(0, 0)
            self.lib, self.error = None, f"{self.path or 'libmkl_rt'}: {exc}"
        return self.lib is not None

    def _load(self):
        candidates = _mkl_candidates()
        if not candidates:
            self.error = f"the mkl package is not installed ({_MKL_INSTALL_HINT})"
            return
        self.path = candidates[0]
        lib = ctypes.CDLL(self.path, mode=getattr(os, "RTLD_LOCAL", 0))
        # Before any other MKL call: the LP64 interface (32-bit ints, as declared in
        # _gemm.pyx) and the sequential layer, so that each call stays on the calling
        # thread and no second OpenMP runtime (libiomp5) enters the process.
        lib.MKL_Set_Interface_Layer.argtypes = [ctypes.c_int]
        lib.MKL_Set_Interface_Layer.restype = ctypes.c_int
        lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        lib.MKL_Set_Threading_Layer.restype = ctypes.c_int
        lib.MKL_Set_Interface_Layer(_MKL_INTERFACE_LP64)
        layer = lib.MKL_Set_Threading_Layer(_MKL_THREADING_SEQUENTIAL)
        if layer != _MKL_THREADING_SEQUENTIAL:
            # The layer was fixed earlier in this process: hold MKL to one thread.
            lib.MKL_Set_Num_Threads(1)
            self.threading = f"layer {layer}, 1 thread"
        else:
            self.threading = "sequential"
        buf = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(buf, len(buf))
        self.version = buf.value.decode(errors="replace").strip()
        sgemm = ctypes.cast(lib.cblas_sgemm, ctypes.c_void_p).value
        dgemm = ctypes.cast(lib.cblas_dgemm, ctypes.c_void_p).value
        _gemm.set_mkl_pointers(sgemm, dgemm)
        # One call of each here, on the importing thread: libmkl_rt loads its core and
        # CPU-specific libraries on the first call, which should not happen first
        # inside an OpenMP region of tiles.
        import numpy as np
        for dtype, path in ((np.float32, "mkl"), (np.float64, "mkl")):
            one = np.ones((1, 1), dtype)
            _gemm.gemm(one, one, np.empty((1, 1), dtype), path=path)
        self.lib = lib


def _mkl_candidates():
    """Paths of libmkl_rt to try, best first."""
    explicit = os.environ.get("FASTOPT_MKL_LIB")
    if explicit:
        return [explicit]
    names = ("libmkl_rt.so*", "libmkl_rt*.dylib", "mkl_rt*.dll")
    found = []
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        try:
            dist = distribution("mkl")
            for f in dist.files or ():
                base = os.path.basename(str(f))
                if base.startswith(("libmkl_rt.so", "mkl_rt")) or (
                        base.startswith("libmkl_rt") and base.endswith(".dylib")):
                    found.append(str(dist.locate_file(f)))
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover
        pass
    for root in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for sub in ("lib", "Library/bin"):
            for pattern in names:
                found.extend(sorted(glob.glob(os.path.join(root, sub, pattern))))
    found = [os.path.abspath(p) for p in found if os.path.isfile(p)]
    return list(dict.fromkeys(found))


_mkl = _MKL()
_requested = "auto"
_auto_note = None

# Micro-kernel limits (multiply-adds m·n·k per call), measured with benchmarks/bench_gemm.py
# on an AMD EPYC Zen 5 (2026-12-02), single-threaded calls:
# - like for like (fastopt's AVX2 kernel against OpenBLAS's Haswell kernel) the micro-kernel
#   was 1.3-2.0x faster at 32³-64³, 1.1-1.4x at 96³-128³, 1.0-1.1x at 192³-256³: it wins
#   below 2^21 whatever the backend's kernel;
# - where the micro-kernel has AVX-512 and the backend does not (OpenBLAS's Haswell/Zen
#   kernels, MKL on non-Intel CPUs) it ran 1.7-2.1x faster at every tile shape of the
#   workloads up to 512×512×512 and 512×256×2048, so it takes every product;
# - the portable variant (SSE4.2 in a portable wheel, 16-byte vectors) against OpenBLAS's
#   AVX2 kernel: even at 16³, 0.5x at 32³ and beyond: it keeps only products whose BLAS
#   call overhead dominates.
_LIMIT_PORTABLE = 1 << 12
_LIMIT_SAME_WIDTH = 1 << 21
_LIMIT_WIDER = 1 << 40
# OpenBLAS core names whose sgemm kernels have no AVX-512.
_OPENBLAS_NARROW = frozenset({
    "haswell", "zen", "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator",
    "nehalem", "core2", "penryn", "dunnington", "atom", "prescott", "barcelona", "opteron",
})


def _cpuinfo():
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("vendor_id", "model name", "flags") and key not in info:
                    info[key] = value.strip()
                if len(info) == 3:
                    break
    except OSError:
        pass
    return info


_openblas_arch = None


def _backend_has_avx512(backend):
    if backend == "mkl":
        # MKL runs its AVX-512 kernels on Intel CPUs only (AVX2 ones on AMD: ~90 GFLOP/s
        # on the Zen 5 above, where fastopt's AVX-512 kernel reached 190+).
        info = _cpuinfo()
        return info.get("vendor_id") == "GenuineIntel" and "avx512f" in info.get("flags", "")
    global _openblas_arch
    if _openblas_arch is None:
        _openblas_arch = (_openblas_info().get("architecture") or "").lower()
    return _openblas_arch not in _OPENBLAS_NARROW


def _micro_limit(backend):
    env = os.environ.get("FASTOPT_GEMM_MICRO_LIMIT", "").strip()
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            warnings.warn(f"FASTOPT_GEMM_MICRO_LIMIT={env!r} is not an integer; ignored",
                          RuntimeWarning, stacklevel=3)
    isa = _gemm.micro_isa()
    if isa == "portable":
        return _LIMIT_PORTABLE
    if isa == "avx512" and not _backend_has_avx512(backend):
        return _LIMIT_WIDER
    return _LIMIT_SAME_WIDTH


def _auto_prefers_mkl():
    # On AMD, MKL's sgemm measured slower than OpenBLAS's (86-93 against 95-104 GFLOP/s
    # on 256-512 tiles, 19-28 against 41-60 on thin ones; Zen 5, 2026-12-02).
    return _cpuinfo().get("vendor_id") == "GenuineIntel"


# Libraries that export the symbols of an MKL linked into them: a libmkl_rt loaded before
# them puts its libmkl_core & co. in the global symbol scope, which then takes over their
# own MKL calls (PyTorch's libtorch_cpu exports ~23,000 MKL symbols; with the mkl wheel
# loaded first, its batch-norm gradients changed by 1e-4 here). Loading MKL in its own
# link-map namespace (dlmopen) avoids that in principle, but libmkl_rt crashed there.
_EMBEDS_MKL = ("torch",)


def _mkl_would_capture():
    """The installed libraries with their own MKL that are not imported yet."""
    import importlib.util
    out = []
    for name in _EMBEDS_MKL:
        if name not in sys.modules:
            try:
                if importlib.util.find_spec(name) is not None:
                    out.append(name)
            except (ImportError, ValueError):
                pass
    return out


def set_gemm_backend(name):
    """Select the GEMM backend: ``"openblas"``, ``"mkl"`` or ``"auto"``.

    ``"mkl"`` when MKL is not installed (or does not load) warns with the reason and
    falls back to OpenBLAS. Returns the backend now in use. Not to be called while
    another thread is inside a fastopt kernel.
    """
    global _requested, _auto_note
    if name not in BACKENDS:
        raise ValueError(f"unknown GEMM backend {name!r}; expected one of {BACKENDS}")
    _requested = name
    _auto_note = None
    capture = _mkl_would_capture() if not _mkl._tried else []
    if name == "auto" and _auto_prefers_mkl() and capture:
        _auto_note = (f"kept OpenBLAS: {', '.join(capture)} is installed but not imported; "
                      f"MKL loaded first would take over its own MKL (import it first, or "
                      f"set_gemm_backend('mkl'))")
    if name == "openblas" or (name == "auto" and (not _auto_prefers_mkl() or capture)):
        _gemm.set_backend("openblas")
    elif _mkl.load():
        if capture:
            warnings.warn(f"MKL loaded before {', '.join(capture)}: a later import of it will "
                          f"run its MKL calls in this MKL (sequential); import it before "
                          f"selecting the 'mkl' backend", RuntimeWarning, stacklevel=2)
        _gemm.set_backend("mkl")
    else:
        _gemm.set_backend("openblas")
        if name == "mkl":
            warnings.warn(f"GEMM backend 'mkl' is not available: {_mkl.error}; "
                          f"using 'openblas'", RuntimeWarning, stacklevel=2)
    _gemm.set_micro_limit(_micro_limit(_gemm.get_backend()))
    return _gemm.get_backend()


def get_gemm_backend():
    """The GEMM backend in use: ``"openblas"`` or ``"mkl"``."""
    return _gemm.get_backend()


def _from_environment():
    name = os.environ.get("FASTOPT_GEMM_BACKEND", "").strip().lower() or "auto"
    if name not in BACKENDS:
        warnings.warn(f"FASTOPT_GEMM_BACKEND={name!r} is not one of {BACKENDS}; "
                      f"using 'auto'", RuntimeWarning, stacklevel=3)
        name = "auto"
    with warnings.catch_warnings():
        if name == "mkl":
            warnings.simplefilter("always")
        set_gemm_backend(name)


def _cpu_model():
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _openblas_info():
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library fastopt calls)
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return {}
    import scipy
    scipy_dir = os.path.dirname(scipy.__file__)
    for info in threadpool_info():
        if info.get("user_api") == "blas" and info["filepath"].startswith(scipy_dir):
            return {k: info.get(k) for k in
                    ("internal_api", "version", "architecture", "threading_layer",
                     "num_threads", "filepath")}
    return {}


def config():
    """What :func:`show_config` prints, as a dict."""
    import numpy
    import scipy

    from . import __version__
    from ._kernels import _build_info
    from .threads import get_num_threads

    return {
        "fastopt": __version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "build": {
            "cpu_baseline": _build_info.CPU_BASELINE,
            "compiler": _build_info.COMPILER,
            "openmp": _build_info.OPENMP,
        },
        "cpu": {
            "model": _cpu_model(),
            "vendor": _cpuinfo().get("vendor_id"),
            "machine": platform.machine(),
            "micro_kernel_isa": _gemm.micro_isa(),
        },
        "gemm": {
            "requested": _requested,
            **({"auto": _auto_note} if _auto_note else {}),
            "backend": get_gemm_backend(),
            "micro_kernel_limit": _gemm.get_micro_limit(),
            "openblas": _openblas_info(),
            "mkl": ({"version": _mkl.version, "path": _mkl.path, "threading": _mkl.threading}
                    if _mkl.lib is not None else
                    {"available": False, "reason": _mkl.error or "not loaded"}),
            "reproducibility": "fixed tile grid, one single-threaded call per tile: "
                               "bitwise identical for any thread count",
        },
        "threads": {"fastopt": get_num_threads()},
    }


def show_config(mode="stdout"):
    """Print (or, with ``mode="dicts"``, return) versions, GEMM backend, instruction set
    and threads, like ``numpy.show_config()``."""
    cfg = config()
    if mode == "dicts":
        return cfg
    if mode != "stdout":
        raise ValueError("mode must be 'stdout' or 'dicts'")

    def emit(d, indent=0):
        for key, value in d.items():
            if isinstance(value, dict):
                print(" " * indent + f"{key}:")
                emit(value, indent + 2)
            else:
                print(" " * indent + f"{key}: {value}")

    emit(cfg)


_from_environment()
