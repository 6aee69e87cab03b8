"""The data-parallel step and the agreement between ranks (see ``fastopt.distributed``).

One step on rank r of N, for the global batch of B rows (rows ``order[start:start+B]``):

1. the share: rows ``start + r0 .. start + r1`` with ``r0, r1 = share_of(B, N, r)``
   (contiguous; sizes differ by at most one; a share may be empty);
2. the compiled plan of the share's row count, told its global offset ``r0`` (dropout
   masks of global rows) and the GLOBAL loss scale (1/B, or 1/Σw over the global batch in
   row order in float64, as the single process sums it), so that the sum over the ranks
   of the shares' gradients is the global batch's gradient;
3. forward and backward; a plan with batch norm runs stage by stage, and at each batch
   norm the ranks' (count, mean, M2) per feature are gathered and merged in rank order
   (forward) and their Σg, Σg·x̂ summed in rank order (backward): synchronized batch norm,
   the same on every rank by construction;
4. ``Allreduce`` (sum) of the gradient arena, and with it a tiny one of (loss, interrupt,
   stop) so that every rank takes the same decisions;
5. the gradient norm, clipping and the optimizer's fused pass on the reduced (identical)
   gradient: every rank's parameters stay bitwise equal.
"""

import math
import sys
import traceback

import numpy as np

from ..threads import get_num_threads

__all__ = ["DataParallel", "share_of", "shares"]


def share_of(rows, size, rank):
    """(first, stop) of rank ``rank``'s contiguous share of ``rows`` rows over ``size``
    ranks: the first ``rows % size`` ranks take one row more."""
    base, extra = divmod(rows, size)
    first = rank * base + min(rank, extra)
    return first, first + base + (1 if rank < extra else 0)


def shares(rows, size):
    """Every rank's share, in rank order."""
    return [share_of(rows, size, r) for r in range(size)]


class DataParallel:
    """Data-parallel training of one Trainer on ``comm`` (made by ``Trainer(comm=...)``)."""

    def __init__(self, comm):
        from . import _mpi, default_threads
        from ..threads import default_num_threads, get_num_threads, set_num_threads

        self.MPI = _mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._plans = {}
        self._small = np.zeros(3, np.float64)    # loss, interrupt, stop
        self.interrupted = False                 # agreed by all ranks
        self.stop = False
        # Threads: the host's physical cores shared by its ranks, unless the user chose.
        if get_num_threads() == default_num_threads():
            n = default_threads(comm)
            set_num_threads(n)
            try:
                from threadpoolctl import threadpool_limits
                threadpool_limits(limits=n, user_api="blas")
            except Exception:   # pragma: no cover - threadpoolctl is a dependency
                pass

    # ---- agreement ----

    def share(self, rows):
        """This rank's (first, stop) within a global batch of ``rows`` rows."""
        return share_of(rows, self.size, self.rank)

    @property
    def root(self):
        return self.rank == 0

    def any(self, flag):
        """True on every rank when ``flag`` is true on any."""
        return bool(self.comm.allreduce(1 if flag else 0, op=self.MPI.MAX))

    def bcast(self, value):
        return self.comm.bcast(value, root=0)

    def check_data(self, n, d, validation_rows):
        """Every rank must hold the same data set: compare the shapes."""
        mine = (n, d, validation_rows)
        every = self.comm.allgather(mine)
        if any(other != mine for other in every):
            raise ValueError("data-parallel training needs the same data set on every rank "
                             "(each rank takes its share of every global batch); got "
                             "(rows, features, validation rows) = "
                             + ", ".join(f"rank {r}: {v}" for r, v in enumerate(every)))

    def broadcast_state(self, trainer):
        """Rank 0's parameters (the whole arena), layer buffers (batch-norm running
        statistics), optimizer and schedule state and counters, to every rank."""
        comm, model = self.comm, trainer.model
        comm.Bcast(model.arena.data, root=0)
        for layer in model.layers:
            for buf in layer.buffers.values():
                comm.Bcast(buf, root=0)
        seed = self.bcast(model.seed)      # dropout masks are keyed by the model's seed
        if seed != model.seed:
            model.seed = seed
            for layer in model.layers:
                if hasattr(layer, "seed"):
                    layer.seed = seed
            model._plans.clear()
            self._plans.clear()
        counters = self.bcast((model.train_step, trainer.step_count, trainer.epoch,
                               trainer.batch_in_epoch, trainer.seed, trainer._layout))
        opt = self.bcast(trainer.optimizer.state_dict())
        sched = self.bcast(trainer.schedule.state_dict()
                           if trainer.schedule is not None else None)
        if not self.root:
            (model.train_step, trainer.step_count, trainer.epoch, trainer.batch_in_epoch,
             trainer.seed, trainer._layout) = counters
            trainer.optimizer.load_state_dict(opt)
            if sched is not None:
                trainer.schedule.load_state_dict(sched)

    def reduce_metrics(self, metrics):
        """Merge every rank's training-metric accumulators (rank order): afterwards each
        rank's ``result()`` is that of the whole epoch."""
        for metric in metrics:
            if hasattr(metric, "_m2"):     # R2: Chan's merge of (n, mean, M2), then Σres
                parts = self.comm.allgather((metric._n, metric._mean, metric._m2,
                                             metric._res))
                n = 0.0
                mean = m2 = res = None
                for n_b, mean_b, m2_b, res_b in parts:
                    if not n_b:
                        continue
                    if mean is None:
                        mean, m2, res = mean_b, m2_b, np.array(res_b, np.float64)
                    else:
                        total = n + n_b
                        delta = mean_b - mean
                        mean = mean + delta * (n_b / total)
                        m2 = m2 + m2_b + delta ** 2 * (n * n_b / total)
                        res = res + res_b
                    n += n_b
                metric._n, metric._mean, metric._m2, metric._res = n, mean, m2, res
            parts = self.comm.allgather((metric._sum, metric._weight))
            metric._sum = math.fsum(p[0] for p in parts)
            metric._weight = math.fsum(p[1] for p in parts)

    def run(self, fit, *args, **kwargs):
        """``fit`` on this rank; an exception on any rank ends every rank (``Abort``)
        with a message naming the rank, rather than leaving the others waiting in a
        collective. A non-finite step (FloatingPointError) is decided on reduced numbers,
        the same on every rank, and raised normally."""
        try:
            return fit(*args, **kwargs)
        except FloatingPointError:
            raise
        except BaseException as exc:
            if self.size == 1:
                raise
            what = ("interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt)
                    else f"{type(exc).__name__}: {exc}")
            sys.stderr.write(f"fastopt.distributed: rank {self.rank} of {self.size} "
                             f"failed: {what}\n")
            if not isinstance(exc, KeyboardInterrupt):
                traceback.print_exc(file=sys.stderr)
            sys.stderr.write("fastopt.distributed: ending every rank (MPI Abort)\n")
            sys.stderr.flush()
            self.comm.Abort(1)
            raise

    # ---- the step ----

    def plan_for(self, trainer, rows, T, W):
        key = (rows, T.ndim, T.dtype.str, T.shape[1:], W is not None)
        plan = self._plans.get(key)
        if plan is None:
            from ..plan import StepPlan

            if len(self._plans) >= 16:
                self._plans.clear()
            plan = StepPlan(trainer.model, rows, True, trainer.loss, T, W is not None,
                            distributed=True)
            if not plan.fused_loss:
                raise ValueError(f"data-parallel training needs a loss with a fused kernel "
                                 f"(softmax cross-entropy, binary cross-entropy, MSE); "
                                 f"{trainer.loss.name!r} with these targets has none")
            plan.bn_stages = [s for s, spec in enumerate(plan.stages)
                              if spec["kind"] == "batchnorm"]
            # per batch norm: this rank's and every rank's numbers (made once)
            plan.bn_buffers = {}
            for s in plan.bn_stages:
                d = plan.stages[s]["d_out"]
                plan.bn_buffers[s] = (np.empty(1 + 2 * d), np.empty((self.size, 1 + 2 * d)),
                                      np.empty(2 * d), np.empty((self.size, 2 * d)))
            self._plans[key] = plan
        return plan

    @staticmethod
    def global_scale(rows, W, order, start):
        """The global batch's loss scale: 1/B, or 1/Σw summed in row order in float64."""
        if W is None:
            return 1.0 / rows
        w = W[start:start + rows] if order is None else W[order[start:start + rows]]
        total = float(np.cumsum(w, dtype=np.float64)[-1]) if rows else 0.0
        return 1.0 / total if total > 0 else 0.0

    def _bn_forward(self, plan, s, step, n_global, nt):
        k, spec = plan.kernel, plan.stages[s]
        d = spec["d_out"]
        k.bn_stats(s, n_threads=nt)
        mine, every = plan.bn_buffers[s][:2]
        mine[0] = plan.rows
        mine[1:1 + d] = spec["mean"]
        mine[1 + d:] = spec["invstd"]
        self.comm.Allgather(mine, every)
        mean, m2 = spec["mean"], spec["invstd"]    # the global ones go back here
        n = 0.0
        for r in range(self.size):          # rank order: the same numbers on every rank
            n_b = every[r, 0]
            if n_b == 0:
                continue
            mean_b, m2_b = every[r, 1:1 + d], every[r, 1 + d:]
            if n == 0:
                mean[:] = mean_b
                m2[:] = m2_b
            else:                           # Chan et al., as the kernel merges blocks
                n_ab = n + n_b
                delta = mean_b - mean
                mean += delta * (n_b / n_ab)
                m2 += m2_b + delta * delta * (n * n_b / n_ab)
            n += n_b
        k.bn_output(s, step, n_global, n_threads=nt)

    def _bn_backward(self, plan, s, n_global, nt):
        k, spec = plan.kernel, plan.stages[s]
        d = spec["d_out"]
        k.bn_grad_sums(s, n_threads=nt)
        part = spec["partial"]
        mine, every = plan.bn_buffers[s][2:]
        mine[:d] = part[0, 0]
        mine[d:] = part[0, 1]
        self.comm.Allgather(mine, every)
        total = part[0, :2].reshape(2 * d)
        total[...] = every[0]
        for r in range(1, self.size):     # rank order: the same sums on every rank
            total += every[r]
        k.bn_dx(s, n_global, n_threads=nt)

    def step(self, trainer, plan, order, start, row0, n_global, scale, interrupt):
        """One data-parallel step on this rank's share (rows ``start..`` of the bound
        data, or ``order[start:]``; ``plan.rows`` of them, possibly 0) of a global batch
        of ``n_global`` rows whose first row is row0 rows before the share's. Returns
        the global batch's loss."""
        model, optimizer, comm, MPI = trainer.model, trainer.optimizer, self.comm, self.MPI
        model.train_step += 1
        step = trainer.step_count + 1
        if trainer.schedule is not None and trainer.schedule.interval == "step":
            trainer.schedule.step(optimizer, trainer.step_count)
        k, rows, ts = plan.kernel, plan.rows, model.train_step
        nt = get_num_threads()
        k.set_share(row0, scale)
        grad = model.arena.grad
        if plan.bn_stages or rows == 0:
            if rows:
                k.place(order, start, n_threads=nt)
            else:
                grad[...] = 0
            for s, spec in enumerate(plan.stages):
                if spec["kind"] == "batchnorm":
                    self._bn_forward(plan, s, ts, n_global, nt)
                elif rows:
                    k.forward_stage(s, ts, n_threads=nt)
            value = k.loss_scaled(scale, n_threads=nt) if rows else 0.0
            for s in range(len(plan.stages) - 1, -1, -1):
                spec = plan.stages[s]
                if not spec["backprop"]:
                    break
                if spec["kind"] == "batchnorm":
                    self._bn_backward(plan, s, n_global, nt)
                elif rows:
                    k.backward_stage(s, n_threads=nt)
        else:
            value = k.run(ts, order, start, n_threads=nt)
        small = self._small
        small[0] = value
        small[1] = 1.0 if interrupt.raised else 0.0
        small[2] = 1.0 if trainer.stop_training else 0.0
        request = comm.Iallreduce(MPI.IN_PLACE, small, op=MPI.SUM)
        comm.Allreduce(MPI.IN_PLACE, grad, op=MPI.SUM)
        request.Wait()
        value = float(small[0])
        self.interrupted = self.interrupted or bool(small[1] > 0)
        self.stop = bool(small[2] > 0)
        norm = math.sqrt(k.norm_only(n_threads=nt))
        if not math.isfinite(value):
            return trainer._nonfinite(plan, step, f"the training loss became {value}")
        if not math.isfinite(norm):
            return trainer._nonfinite(plan, step, f"the gradient norm became {norm}")
        gscale = 1.0
        if trainer.clip_norm:
            gscale = min(1.0, trainer.clip_norm / (norm + 1e-6))
        update = optimizer._prepare(model.arena.data, grad, trainer._segments,
                                    trainer.clip_value)
        update.run(gscale, n_threads=nt)
        optimizer._commit()
        trainer.step_count = step
        if trainer.metrics and rows:
            tb, wb = plan.batch(order, start)
            target = trainer._metric_target(tb)
            for metric in trainer.metrics:
                metric.update(plan.output, target, wb)
        return value
