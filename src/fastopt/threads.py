"""One knob for fastopt's threads: OpenMP in the kernels, BLAS kept out of their way.

fastopt parallelises its GEMMs itself (fixed tiles, one single-threaded BLAS call
each), so results do not depend on the thread count. While its kernels run, scipy's
BLAS is therefore held to one thread; otherwise OpenMP threads × BLAS threads would
oversubscribe the cores. numpy's own BLAS (a separate library) is never touched.

Default thread count: ``OMP_NUM_THREADS`` when set, else the physical cores this
process may run on.
"""

import os
from contextlib import contextmanager

__all__ = ["set_num_threads", "get_num_threads", "threads", "default_num_threads"]


def _physical_cores_available():
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "physical_package_id") as f:
                package = f.read().strip()
            with open(base + "core_id") as f:
                core = f.read().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def default_num_threads():
    """``OMP_NUM_THREADS`` (its first value) if set and valid, else the physical cores."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return _physical_cores_available()


def _check_count(n):
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"number of threads must be an integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    return n


# The thread budget every kernel call is given (the kernels keep no global of their own).
_num_threads = 1


def set_num_threads(n):
    """Use at most ``n`` threads in fastopt's kernels (small loops use fewer)."""
    global _num_threads
    _num_threads = _check_count(n)


def get_num_threads():
    """The upper bound on threads that fastopt's kernels use."""
    return _num_threads


@contextmanager
def threads(n):
    """``with fastopt.threads(n): ...`` runs the block with ``n`` kernel threads."""
    global _num_threads
    n = _check_count(n)
    previous = _num_threads
    _num_threads = n
    try:
        yield
    finally:
        _num_threads = previous


class _BlasSingleThread:
    """Re-entrant guard: scipy's BLAS on one thread while fastopt kernels run.

    The libraries are found once (threadpoolctl scans the process); entering and
    leaving afterwards is one ctypes call per library.
    """

    def __init__(self):
        self._libraries = None
        self._saved = []
        self._depth = 0

    def _find(self):
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library we call)
        from threadpoolctl import ThreadpoolController

        scipy_dir = os.path.dirname(scipy.__file__)
        roots = (scipy_dir, scipy_dir + ".libs", os.path.join(scipy_dir, ".dylibs"))
        blas = [lib for lib in ThreadpoolController().lib_controllers
                if lib.user_api == "blas"]
        own = [lib for lib in blas if lib.filepath.startswith(roots)]
        # A scipy linked against a system BLAS: hold every BLAS library instead.
        return own or blas

    def __enter__(self):
        if self._depth == 0:
            if self._libraries is None:
                self._libraries = self._find()
            self._saved = [lib.get_num_threads() for lib in self._libraries]
            for lib, n in zip(self._libraries, self._saved):
                if n != 1:
                    lib.set_num_threads(1)
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            for lib, n in zip(self._libraries, self._saved):
                if n != 1:
                    lib.set_num_threads(n)
        return False


blas_single_thread = _BlasSingleThread()

_num_threads = default_num_threads()
