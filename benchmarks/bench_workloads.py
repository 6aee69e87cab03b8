"""The comparison issue's workloads as asv benchmarks (fastopt only, float32), so that a
regression shows in ``asv compare``; benchmarks/compare.py runs them against peers.

    tiny / mnist / wide training steps (benchmarks/workloads.py) at 1 and 2 threads, and one
    epoch of the mnist model over 6,000 rows (a tenth of the issue's epoch).
"""

import fastopt as fo
from fastopt.threads import blas_single_thread

from .workloads import WORKLOADS, data, fastopt_step, fastopt_targets, fastopt_trainer


class _Threads:
    """Holds fastopt.threads(n) and scipy's BLAS on one thread from setup to teardown."""

    def _enter(self, threads):
        self._threads = fo.threads(threads)
        self._threads.__enter__()
        blas_single_thread.__enter__()

    def teardown(self, *args):
        blas_single_thread.__exit__(None, None, None)
        self._threads.__exit__(None, None, None)


class WorkloadStep(_Threads):
    """One training step (forward, loss, backward, norm, update) on a prepared batch."""

    params = [["tiny", "mnist", "wide"], [1, 2]]
    param_names = ["workload", "threads"]

    def setup(self, workload, threads):
        self.trainer = fastopt_trainer(WORKLOADS[workload])
        self.X, y = data(WORKLOADS[workload])
        self.T = fastopt_targets(self.trainer, y)
        self._enter(threads)
        fastopt_step(self.trainer, self.X, self.T)  # workspaces and optimizer state

    def time_step(self, workload, threads):
        fastopt_step(self.trainer, self.X, self.T)


class WorkloadEpoch(_Threads):
    """Trainer.fit for one epoch of the mnist model: shuffle, gather batches, steps."""

    params = [[1, 2]]
    param_names = ["threads"]
    rows = 6000

    def setup(self, threads):
        w = WORKLOADS["mnist"]
        self.batch = w.batch
        self.trainer = fastopt_trainer(w)
        self.X, self.y = data(w, rows=self.rows, seed=1)
        self._enter(threads)
        self.trainer.fit(self.X[:1280], self.y[:1280], epochs=1, batch_size=self.batch,
                         verbose=0)

    def time_epoch(self, threads):
        self.trainer.fit(self.X, self.y, epochs=1, batch_size=self.batch, verbose=0)
