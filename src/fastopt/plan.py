"""The step plan: a model's layers compiled once per (batch size, mode) into one table of
fused stages that ``fastopt._kernels.step`` runs in a single call without the GIL.

Each layer declares its stage (``Layer.stage(training)``: a kind, its shapes, hyperparameters
and its parameters' views); this module is the one place that decides how stages fuse
and that allocates the buffers between them:

- batch norm absorbs an ``Activation`` the norm kernel applies (identity, relu,
  leaky_relu, elu) and, in training, the ``Dropout`` after it: one pass over the
  activations forward and one backward, with the same arithmetic as the three layers run
  one by one (ELU's derivative is taken from its recomputed output, a + α, as the
  standalone layer takes it from the stored one);
- layers that are the identity in this mode (dropout in evaluation) have no stage;
- the backward pass stops at the first stage with parameters: nothing before it needs an
  input gradient.

The layer objects are not changed: ``Sequential.forward``/``backward`` still run every
layer by itself (the public, testable per-layer API), and the tests hold the plan to
the same bits.
"""

import numpy as np

from ._kernels import step as _step
from ._kernels.norm import n_row_blocks
from ._kernels.optim import norm_blocks
from .layers import mask_bits_buffer
from .threads import get_num_threads

__all__ = ["StepPlan", "compile_plan"]

# Activation codes batch norm applies in its own pass.
_BN_FUSED = {0, 1, 2, 3}   # identity, relu, leaky_relu, elu


def _fuse(specs, training):
    stages, i = [], 0
    while i < len(specs):
        spec = dict(specs[i])
        i += 1
        if spec["kind"] == "batchnorm":
            spec.setdefault("act", 0)
            if (i < len(specs) and specs[i]["kind"] == "activation"
                    and specs[i]["act"] in _BN_FUSED):
                spec["act"], spec["alpha"] = specs[i]["act"], specs[i]["alpha"]
                spec["fused"] = spec.get("fused", ()) + (specs[i]["layer"],)
                i += 1
            if training and i < len(specs) and specs[i]["kind"] == "dropout":
                drop = specs[i]
                spec.update(dropout=True, threshold=drop["threshold"], scale=drop["scale"],
                            layer=drop["layer"])
                spec["fused"] = spec.get("fused", ()) + (drop["layer"],)
                i += 1
        stages.append(spec)
    return stages


class StepPlan:
    """One compiled step for ``rows`` rows (see the module docstring).

    ``output`` is the model's output buffer; ``dout`` receives d loss / d output (written
    by the fused loss, or copied in by a Python loss before ``backward``). ``fused_loss``
    tells whether ``run`` computes the loss itself.
    """

    def __init__(self, model, rows, training, loss=None, target=None, weighted=False,
                 input_grad=False, distributed=False):
        dtype = model.dtype
        self.rows, self.training, self.dtype = rows, training, dtype
        specs = []
        for layer in model.layers:
            spec = layer.stage(training)
            if spec is not None:
                spec.setdefault("layer", layer.index)
                specs.append(spec)
        stages = _fuse(specs, training)
        if not stages:
            stages = [{"kind": "copy", "d_in": model.input_dim, "d_out": model.input_dim,
                       "params": False}]
        # (distributed: one rank's share of a global batch, which may hold 0 or 1 rows;
        # batch norm's statistics are those of the global batch, fastopt.distributed)
        if (training and rows < 2 and not distributed
                and any(s["kind"] == "batchnorm" for s in stages)):
            raise ValueError("BatchNorm needs more than 1 sample per batch in training "
                             f"(got a batch of {rows})")
        self.stages = stages
        prev = None
        seen_params = bool(input_grad)   # input_grad: the first stage's dX too
        for spec in stages:
            d_in, d_out = spec["d_in"], spec["d_out"]
            spec["need_dx"] = training and seen_params
            spec["backprop"] = training and (seen_params or spec["params"])
            seen_params = seen_params or spec["params"]
            spec["y"] = np.empty((rows, d_out), dtype)
            if prev is not None:
                spec["x"] = prev["y"]
            kind = spec["kind"]
            if kind == "dense":
                spec["z"] = np.empty_like(spec["y"]) if spec.pop("keep_z") else spec["y"]
                if spec["backprop"]:
                    spec["dz"] = np.empty_like(spec["y"])
            elif kind == "batchnorm":
                spec["coef"] = np.empty((6, d_out), dtype)
                if training:
                    spec["mean"] = np.zeros(d_out, np.float64)
                    spec["invstd"] = np.ones(d_out, np.float64)
                    spec["partial"] = np.empty((n_row_blocks(rows), 4, d_out), np.float64)
                    spec["backup_mean"] = np.empty(d_out, dtype)
                    spec["backup_var"] = np.empty(d_out, dtype)
            if spec.get("dropout") or kind == "dropout":
                spec["dropout"] = True
                spec["bits"] = mask_bits_buffer(rows, d_out)
                spec["wpr"] = spec["bits"].shape[1]
            if spec["need_dx"] or (kind == "batchnorm" and spec["backprop"]):
                # (batch norm's backward keeps g = ∂L/∂z in dX even when dX is not needed)
                spec["dx"] = np.empty((rows, d_in), dtype)
            prev = spec
        for spec, after in zip(stages, stages[1:] + [None]):
            if spec["backprop"]:
                spec["dy"] = after["dx"] if after is not None else None
        self.input_grad = stages[0].get("dx") if input_grad else None
        self.output = stages[-1]["y"]
        self.dout = np.empty_like(self.output)
        if stages[-1]["backprop"]:
            stages[-1]["dy"] = self.dout
        self.row_loss = np.empty(rows, np.float64)
        self._ones = np.ones(rows, dtype)
        self.fused_loss = training and loss is not None and target is not None \
            and loss.fused_kind(target) is not None
        kind = loss.fused_kind(target) if self.fused_loss else 0
        self._x_own = np.empty((rows, model.input_dim), dtype) if training else None
        self._t_own = (np.empty((rows,) + target.shape[1:], target.dtype)
                       if training and target is not None else None)
        self._w_own = np.empty(rows, dtype) if training and weighted else None
        grad = model.arena.grad if training else None
        partials = np.empty(norm_blocks(model.arena.size), np.float64) if training else None
        self._plan = _step.StepPlan(
            stages, rows, dtype == np.float64, training, int(model.seed) & ((1 << 64) - 1),
            self._x_own, self._t_own, self._w_own, self._ones, self.output, self.dout,
            self.row_loss, grad, partials, kind,
            float(getattr(loss, "label_smoothing", 0.0)) if self.fused_loss else 0.0)
        self._data = None
        self._slices = {}

    def bind(self, X, T=None, W=None):
        """The arrays this plan's batches come from (C-contiguous, the model's dtype; T as
        the loss prepared it). Rebinding the same arrays costs nothing."""
        data = self._data
        if data is None or data[0] is not X or data[1] is not T or data[2] is not W:
            self._plan.bind_data(X, T, W)
            self._data = (X, T, W)
            self._slices = {}

    def run(self, step, order=None, start=0):
        """Forward, fused loss and backward on rows ``start..start+rows`` of the bound data
        (or rows ``order[start:start+rows]``); returns the loss."""
        return self._plan.run(step, order, start, n_threads=get_num_threads())

    def run_step(self, step, order, start, update, clip_norm):
        """``run`` and, when finite, the optimizer's prepared update in the same call."""
        return self._plan.run_step(step, order, start, update, clip_norm,
                                   n_threads=get_num_threads())

    @property
    def applied(self):
        return self._plan.applied

    def forward(self, step=0, order=None, start=0):
        self._plan.forward(step, order, start, n_threads=get_num_threads())
        return self.output

    def backward(self):
        self._plan.backward(n_threads=get_num_threads())

    @property
    def grad_sum_squares(self):
        return self._plan.grad_sum_squares

    def restore_state(self):
        self._plan.restore_state()

    @property
    def kernel(self):
        """The compiled table (``fastopt._kernels.step.StepPlan``): fastopt.distributed
        runs it stage by stage between its collectives."""
        return self._plan

    def batch(self, order=None, start=0):
        """(targets, weights) of the batch the last call ran: views of the bound data, or of
        the plan's gather buffers."""
        _, T, W = self._data
        if order is not None:
            return self._t_own, self._w_own
        views = self._slices.get(start)
        if views is None:
            stop = start + self.rows
            views = self._slices[start] = (None if T is None else T[start:stop],
                                           None if W is None else W[start:stop])
        return views

    def inputs(self, order=None, start=0):
        """The batch's input rows as the last call read them."""
        X = self._data[0]
        return self._x_own if order is not None else X[start:start + self.rows]


def compile_plan(model, rows, training, loss=None, target=None, weighted=False,
                 input_grad=False):
    return StepPlan(model, rows, training, loss, target, weighted, input_grad)
