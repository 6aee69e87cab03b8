r"""scikit-learn estimators on fastopt's engine: ``MLPClassifier`` and ``MLPRegressor``.

Drop-in for ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor`` with the stochastic
solvers: the same parameter names and defaults where the concept is the same, the same
fitted attributes (``classes_``, ``n_features_in_``, ``feature_names_in_``, ``loss_curve_``,
``best_loss_``, ``validation_scores_``, ``best_validation_score_``, ``n_iter_``, ``t_``,
``coefs_``, ``intercepts_``), ``partial_fit``, ``warm_start`` and the same stopping rule.
They build a ``fastopt.Sequential`` and train it with ``fastopt.Trainer``.

scikit-learn is an optional dependency (``pip install fastopt[sklearn]``); ``import
fastopt`` never imports this module.

How scikit-learn's parameters map onto fastopt
----------------------------------------------
.. code-block:: text

    hidden_layer_sizes=(h1, h2, …)   Dense(h1) → [BatchNorm] → act → [Dropout] → … → Dense(out),
                                     weights Glorot uniform (as scikit-learn), biases 0
    activation                       "identity", "logistic" (= sigmoid), "tanh", "relu", and
                                     fastopt's "leaky_relu", "elu", "gelu", "gelu_tanh", "softplus"
    solver                           "adam" (β₁=beta_1, β₂=beta_2, eps=epsilon),
                                     "sgd" (momentum, nesterovs_momentum),
                                     fastopt's "adamw", "rmsprop", "adagrad"
    alpha                            L2 penalty ½·alpha·‖W‖²/B on the weights (not the biases):
                                     coupled weight decay λ = alpha / B, B = batch size × mean
                                     sample weight (exactly scikit-learn's alpha·W / Σ_batch w
                                     for full batches and uniform weights). With
                                     solver="adamw", alpha is AdamW's decoupled decay as is:
                                     p ← p·(1 − lr·alpha).
    batch_size                       "auto" = min(200, n_samples); None = full batch
    learning_rate, power_t           solver="sgd" only, as scikit-learn: "constant";
                                     "invscaling" lr = learning_rate_init / (t_ + 1)^power_t
                                     after each epoch (t_ = samples seen); "adaptive": lr ÷ 5
                                     when the stopping rule fires, stop below 1e-6; a new rate
                                     leaves the momentum velocity as it was (scikit-learn's
                                     v ← μ·v − lr·g), so every step equals scikit-learn's
    max_iter                         epochs
    tol, n_iter_no_change            stop after more than n_iter_no_change epochs in which the
                                     training loss (or, with early_stopping, the validation
                                     score) did not improve by tol
    early_stopping,                  hold out a (stratified, for classifiers) validation_fraction;
    validation_fraction              score it each epoch (accuracy / R²) into
                                     validation_scores_; end with the best epoch's weights

fastopt's extras: ``batch_norm`` (BatchNorm before each hidden activation), ``dropout``
(rate after each hidden activation), ``optimizer_params`` (more keyword arguments for the
fastopt optimizer, e.g. ``{"amsgrad": True}``), ``schedule`` (a ``fastopt.schedules``
object, copied at each fit), ``clip_norm``, ``n_threads`` and ``dtype``.

``loss_curve_`` holds, per epoch, the mean training loss (cross-entropy, or the mean
squared error of the standardized targets for the regressor) plus ½·λ·‖W‖² at the
epoch's end.

Sample weights: the loss of a batch is ``Σ wᵢℓᵢ / Σ wᵢ`` and the L2 term uses
B = batch size × mean weight, so with full batches (the default ``batch_size="auto"`` for
up to 200 rows) a weight of k is exactly k repeated rows in exact arithmetic.
scikit-learn's ``check_sample_weight_equivalence_on_dense_data`` passes for both
estimators with ``dtype="float64"``. With float32 (the default) the two fits agree to a
few float32 ulps (8e-7 relative on the check's data), above the check's rtol of 1e-7, which
is below float32's machine epsilon. It cannot hold with mini-batches (the repeated data
has more rows, hence other batches and another shuffle), with ``batch_norm`` (batch
statistics count a repeated row twice, a weighted row once) or with ``dropout`` (a
repeated row draws two masks). scikit-learn's own MLP is tested on this check only with
``solver="lbfgs"`` (classifier) and ``solver="sgd", tol=1e-2`` (regressor), not with
its default Adam.

Threads: ``n_threads=None`` uses fastopt's default, which honours ``OMP_NUM_THREADS``.
Inside joblib's loky workers (``GridSearchCV(n_jobs=k)``, ``cross_val_score``) that
variable is set to cores // k, so the workers divide the cores instead of
oversubscribing them. ``n_threads_`` records what a fit used.

Pickling (scikit-learn, joblib) stores the model as plain data: its configuration, the
parameter arena, the batch-norm buffers and the optimizer's state; it is rebuilt on load.
``fastopt.save(est.model_, path)`` writes fastopt's own pickle-free file.
"""

import copy
import math
import numbers
import warnings
from contextlib import nullcontext

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils.multiclass import check_classification_targets, unique_labels
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("fastopt.sklearn needs scikit-learn: pip install 'fastopt[sklearn]' "
                      "(or pip install scikit-learn)") from exc

from . import layers as _layers
from . import optim as _optim
from .callbacks import Callback
from .model import Sequential, class_probabilities
from .threads import get_num_threads, threads
from .train import Trainer

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "sigmoid": "sigmoid",
                "tanh": "tanh", "relu": "relu", "leaky_relu": "leaky_relu", "elu": "elu",
                "gelu": "gelu", "gelu_tanh": "gelu_tanh", "softplus": "softplus"}
_SOLVERS = ("adam", "sgd", "adamw", "rmsprop", "adagrad")
_LEARNING_RATES = ("constant", "invscaling", "adaptive")


# ---- plain-data round trip of a trained model (pickle, deepcopy) ----

def _trainer_to_plain(trainer):
    """Everything a Trainer needs to continue, as dicts, numbers and numpy arrays (the
    same state fastopt.save writes)."""
    model = trainer.model
    return {"model_config": model.get_config(), "model_state": model.get_state(),
            "trainer": trainer.state_dict()}


def _trainer_from_plain(plain):
    model = Sequential.from_config(plain["model_config"])
    model.set_state(plain["model_state"])
    return Trainer.from_state_dict(model, plain["trainer"])


# ---- the per-epoch bookkeeping scikit-learn's MLP does ----

def _set_sgd_learning_rate(opt, lr):
    """Change SGD's learning rate as scikit-learn does: its velocity v ← μ·v − lr·g is a
    step, which keeps the earlier rates in it; fastopt's momentum buffer b (p ← p − lr·b)
    is a gradient, which the new rate would rescale. Rescaling b by old/new keeps
    v = −lr·b unchanged, so every later step equals scikit-learn's."""
    buffer = opt.state.get("momentum_buffer")
    if buffer is not None and lr > 0:
        buffer *= opt.lr / lr
    opt.lr = lr


class _EpochMonitor(Callback):
    """After each epoch: loss_curve_, t_, validation score, the stopping rule, the SGD
    learning-rate rules; at the end: back to the best validation epoch."""

    def __init__(self, est, decay, n_train, validation, incremental):
        self.est = est
        self.decay = decay              # λ of the L2 penalty, to report ½·λ·‖W‖²
        self.n_train = n_train
        self.validation = validation    # (X_val, T_val, w_val) or None
        self.incremental = incremental
        self.epochs = 0
        self.converged = False
        self.best_state = None

    def _penalty(self, trainer):
        if self.decay == 0.0:
            return 0.0
        data = trainer.model.arena.data
        total = 0.0
        for start, stop, decayed in trainer.model.arena.segments():
            if decayed:
                seg = data[start:stop]
                total += float(np.dot(seg, seg))
        return 0.5 * self.decay * total

    def on_epoch_end(self, trainer, epoch, logs):
        est = self.est
        self.epochs += 1
        loss = logs["loss"] + self._penalty(trainer)
        est.loss_ = loss
        est.loss_curve_.append(loss)
        est.t_ += self.n_train
        if est.verbose:
            print(f"Iteration {len(est.loss_curve_)}, loss = {loss:.8f}")
        opt = trainer.optimizer
        if self.validation is not None:
            X_val, T_val, w_val = self.validation
            score = est._validation_score(trainer.model.predict(X_val), T_val, w_val)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            if score < est.best_validation_score_ + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                self.best_state = trainer.model.get_state()
        else:
            if loss > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if loss < est.best_loss_:
                est.best_loss_ = loss
        sgd_rule = est.solver == "sgd" and est.schedule is None
        if sgd_rule and est.learning_rate == "invscaling":
            _set_sgd_learning_rate(opt, est.learning_rate_init / (est.t_ + 1) ** est.power_t)
        if est._no_improvement_count > est.n_iter_no_change and not self.incremental:
            if sgd_rule and est.learning_rate == "adaptive" and opt.lr > 1e-6:
                _set_sgd_learning_rate(opt, opt.lr / 5.0)
                est._no_improvement_count = 0
                if est.verbose:
                    print(f"Setting learning rate to {opt.lr:f}")
            else:
                self.converged = True
                trainer.stop_training = True
                if est.verbose:
                    what = ("Validation score" if self.validation is not None
                            else "Training loss")
                    print(f"{what} did not improve more than tol={est.tol:f} for "
                          f"{est.n_iter_no_change} consecutive epochs. Stopping.")

    def on_train_end(self, trainer, logs):
        if self.best_state is not None:
            trainer.model.set_state(self.best_state)


# ---- the shared estimator ----

def _store_params(estimator, arguments):
    """scikit-learn's __init__ contract: each argument stored, unchanged, under its name
    (validation waits for fit)."""
    for name, value in arguments.items():
        if name != "self":
            setattr(estimator, name, value)


class _BaseMLP(BaseEstimator):
    """Parameters, validation, model building and the fit loop shared by both estimators."""

    _classifier = False

    # -- parameter checks (before any work) --

    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = [sizes]
        try:
            sizes = list(sizes)
        except TypeError:
            raise ValueError("hidden_layer_sizes must be an int or a sequence of ints, got "
                             f"{self.hidden_layer_sizes!r}") from None
        for h in sizes:
            if isinstance(h, bool) or not isinstance(h, numbers.Integral) or h <= 0:
                raise ValueError(f"hidden_layer_sizes must be > 0, got {self.hidden_layer_sizes!r}")
        return [int(h) for h in sizes]

    def _check_params(self):
        def number(name, low=None, high=None, low_open=False, high_open=False):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if low is not None and (value < low or low_open and value == low):
                raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
            if high is not None and (value > high or high_open and value == high):
                raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")

        def integer(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

        self._hidden_sizes()
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        if self.solver not in _SOLVERS:
            hint = (" (fastopt trains with stochastic solvers only; use solver='adam' or "
                    "'sgd')" if self.solver == "lbfgs" else "")
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}{hint}")
        if self.learning_rate not in _LEARNING_RATES:
            raise ValueError(f"learning_rate must be one of {_LEARNING_RATES}, "
                             f"got {self.learning_rate!r}")
        number("alpha", low=0)
        number("learning_rate_init", low=0, low_open=True)
        number("power_t", low=0)
        integer("max_iter", 1)
        integer("n_iter_no_change", 1)
        number("tol", low=0)
        number("momentum", low=0, high=1)
        number("validation_fraction", low=0, high=1, low_open=True, high_open=True)
        number("beta_1", low=0, high=1, high_open=True)
        number("beta_2", low=0, high=1, high_open=True)
        number("epsilon", low=0, low_open=True)
        number("dropout", low=0, high=1, high_open=True)
        bs = self.batch_size
        if not (bs == "auto" or bs is None or (isinstance(bs, numbers.Integral)
                                                and not isinstance(bs, bool) and bs >= 1)):
            raise ValueError(f"batch_size must be 'auto', None or an integer >= 1, got {bs!r}")
        if self.clip_norm is not None:
            number("clip_norm", low=0, low_open=True)
        if self.n_threads is not None:
            integer("n_threads", 1)
        if self.dtype not in ("float32", "float64", np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.optimizer_params is not None and not isinstance(self.optimizer_params, dict):
            raise ValueError(f"optimizer_params must be a dict or None, got {self.optimizer_params!r}")
        if self.schedule is not None and self.learning_rate != "constant":
            raise ValueError("give schedule or learning_rate='invscaling'/'adaptive', not both")

    # -- building --

    def _build_model(self, n_features, n_outputs, seed):
        act = _ACTIVATIONS[self.activation]
        # Glorot uniform everywhere, as scikit-learn's MLP initializes (it narrows the bound
        # by √3 for "logistic"; fastopt keeps Glorot's).
        init = "glorot_uniform"
        built = _layers.mlp_layers(self._hidden_sizes(), n_outputs, act, self.batch_norm,
                                   self.dropout, init=init)
        return Sequential(built, input_dim=n_features, dtype=np.dtype(self.dtype).name,
                          seed=seed)

    def _make_optimizer(self, decay):
        extra = dict(self.optimizer_params or {})
        lr = self.learning_rate_init
        if self.solver == "adam":
            kwargs = dict(lr=lr, betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                          weight_decay=decay)
        elif self.solver == "adamw":
            kwargs = dict(lr=lr, betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                          weight_decay=self.alpha)
        elif self.solver == "sgd":
            kwargs = dict(lr=lr, momentum=self.momentum,
                          nesterov=bool(self.nesterovs_momentum and self.momentum > 0),
                          weight_decay=decay)
        elif self.solver == "rmsprop":
            kwargs = dict(lr=lr, eps=self.epsilon, weight_decay=decay)
        else:  # adagrad
            kwargs = dict(lr=lr, weight_decay=decay)
        kwargs.update(extra)
        return _optim.get_optimizer(self.solver, **kwargs)

    def _threads(self):
        return nullcontext() if self.n_threads is None else threads(int(self.n_threads))

    # -- sample weights --

    @staticmethod
    def _check_sample_weight(sample_weight, n):
        if sample_weight is None:
            return None
        sw = np.asarray(sample_weight, dtype=np.float64)
        if sw.ndim == 0:
            sw = np.full(n, float(sw))
        if sw.shape != (n,):
            raise ValueError(f"sample_weight.shape == {sw.shape}, expected ({n},)")
        if not np.isfinite(sw).all():
            raise ValueError("sample_weight must be finite")
        if (sw < 0).any():
            raise ValueError("sample_weight must be >= 0")
        if n and not sw.any():
            raise ValueError("sample_weight is zero everywhere: nothing to learn from")
        return sw

    # -- the fit loop --

    def _fit(self, X, y, sample_weight=None, incremental=False, classes=None, comm=None):
        if comm is not None:
            from .distributed import gather_shards
            X, y, sample_weight = gather_shards(comm, X, y, sample_weight)
        self._check_params()
        fitted = hasattr(self, "_trainer")
        first = not fitted or not (incremental or self.warm_start)
        X, y = validate_data(self, X, y, reset=first, dtype=(np.float64, np.float32),
                             multi_output=not self._classifier, y_numeric=not self._classifier)
        n = X.shape[0]
        T = self._encode_targets(y, first, classes)
        sw = self._check_sample_weight(sample_weight, n)
        sw = self._combine_class_weight(sw, T)
        if first:
            self._set_target_scaling(T, sw)
        T = self._scale_targets(T)

        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        if comm is not None:
            seed = comm.bcast(seed, root=0)
        early = self.early_stopping and not incremental
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        validation = None
        if early:
            stratify = T if self._classifier else None
            parts = [X, T] + ([] if sw is None else [sw])
            try:
                split = train_test_split(*parts, test_size=self.validation_fraction,
                                         random_state=seed, stratify=stratify)
            except ValueError:  # too few of some class to stratify
                split = train_test_split(*parts, test_size=self.validation_fraction,
                                         random_state=seed)
            X, X_val, T, T_val = split[:4]
            sw, sw_val = (split[4], split[5]) if sw is not None else (None, None)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            validation = (X_val, T_val, sw_val)
            n = X.shape[0]

        if self.batch_size == "auto":
            batch = min(200, n)
        elif self.batch_size is None:
            batch = n
        else:
            if self.batch_size > n:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped")
            batch = int(min(self.batch_size, n))
        mean_weight = 1.0 if sw is None else float(sw.mean())
        decay = self.alpha / (batch * mean_weight) if mean_weight > 0 else 0.0
        if self.solver == "adamw":
            decay_reported = 0.0  # decoupled: not part of the loss
        else:
            decay_reported = decay

        if first:
            model = self._build_model(X.shape[1], self._n_model_outputs(), seed)
            self.loss_curve_ = []
            self.t_ = 0
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.validation_scores_ = None
                self.best_validation_score_ = None
                self.best_loss_ = np.inf
            self._seed = seed
        else:
            model = self._trainer.model
        if first or not incremental:
            schedule = copy.deepcopy(self.schedule)
            self._trainer = Trainer(model, self._loss_name(), self._make_optimizer(decay),
                                    schedule=schedule, clip_norm=self.clip_norm, comm=comm)
        elif self.solver != "adamw" and "weight_decay" not in (self.optimizer_params or {}):
            # partial_fit: λ = alpha / B follows this call's batch, as scikit-learn's does.
            self._trainer.optimizer.weight_decay = decay
        trainer = self._trainer
        if not incremental:
            self._no_improvement_count = 0
        # A batch of one row cannot be batch-normalized: drop such a last batch.
        drop_last = bool(self.batch_norm and n % batch == 1 and n > 1)
        monitor = _EpochMonitor(self, decay_reported, n, validation, incremental)
        X = np.ascontiguousarray(X, dtype=model.dtype)
        with self._threads():
            self.n_threads_ = get_num_threads()
            trainer.fit(X, T, epochs=1 if incremental else self.max_iter, batch_size=batch,
                        shuffle=bool(self.shuffle), seed=self._seed, sample_weight=sw,
                        verbose=0, drop_last=drop_last, callbacks=[monitor])
        self.n_iter_ = monitor.epochs  # of this call, as scikit-learn ≥ 1.3 (partial_fit: 1)
        if (not incremental and not monitor.converged and monitor.epochs == self.max_iter):
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning)
        return self

    def _combine_class_weight(self, sw, T):
        return sw

    def _predict_raw(self, X):
        check_is_fitted(self, "_trainer")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        model = self._trainer.model
        with self._threads():
            return model.predict(np.ascontiguousarray(X, dtype=model.dtype)).astype(np.float64)

    # -- fitted model, read-only views for users --

    @property
    def model_(self):
        """The trained ``fastopt.Sequential`` (save it with ``fastopt.save``)."""
        check_is_fitted(self, "_trainer")
        return self._trainer.model

    @property
    def coefs_(self):
        """Weight matrices as scikit-learn lays them out: (n_in, n_out) per Dense layer."""
        return [layer.params["W"].T.copy() for layer in self.model_.layers
                if isinstance(layer, _layers.Dense)]

    @property
    def intercepts_(self):
        return [layer.params["b"].copy() for layer in self.model_.layers
                if isinstance(layer, _layers.Dense)]

    # -- pickling: plain data only --

    def __getstate__(self):
        state = dict(super().__getstate__())
        trainer = state.pop("_trainer", None)
        if trainer is not None:
            state["_trainer"] = _trainer_to_plain(trainer)
        return state

    def __setstate__(self, state):
        state = dict(state)
        plain = state.get("_trainer")
        if isinstance(plain, dict):
            state["_trainer"] = _trainer_from_plain(plain)
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by fastopt (softmax cross-entropy).

    Parameters are scikit-learn's ``MLPClassifier``'s (stochastic solvers) plus fastopt's
    extras; see the module docstring for the exact mapping. ``class_weight``: None, a dict
    {label: weight} or "balanced" (n_samples / (n_classes · count)); it multiplies
    ``sample_weight``. Labels may be any sortable values (strings included); they are
    encoded to indices of ``classes_``. Two classes train as a 2-way softmax.
    """

    _classifier = True

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 class_weight=None, batch_norm=False, dropout=0.0, optimizer_params=None,
                 schedule=None, clip_norm=None, n_threads=None, dtype="float32"):
        _store_params(self, locals())

    def fit(self, X, y, sample_weight=None, comm=None):
        """Train for up to ``max_iter`` epochs (from scratch unless ``warm_start``).
        ``comm``: data-parallel over MPI, each rank passing its own shard of the rows
        (fastopt.distributed.gather_shards)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False, comm=comm)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing the model and the optimizer's state.

        ``classes`` (every label that will ever appear) is required on the first call.
        """
        if not hasattr(self, "_trainer") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(X, y, sample_weight=sample_weight, incremental=True, classes=classes)

    def _loss_name(self):
        return "softmax_cross_entropy"

    def _n_model_outputs(self):
        return len(self.classes_)

    def _encode_targets(self, y, first, classes):
        check_classification_targets(y)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError("fastopt's MLPClassifier takes 1-D class labels (multiclass or "
                             f"binary); got y of shape {y.shape}")
        if first:
            labels = unique_labels(classes) if classes is not None else unique_labels(y)
            if len(labels) < 2:
                raise ValueError(f"the classifier needs samples of at least 2 classes in the "
                                 f"data; got 1 class: {labels[0]!r}")
            self.classes_ = labels
        elif classes is not None and not np.array_equal(unique_labels(classes), self.classes_):
            raise ValueError(f"`classes={list(classes)!r}` is not the same as on the first "
                             f"call to partial_fit, which was {list(self.classes_)!r}")
        unseen = np.setdiff1d(unique_labels(y), self.classes_)
        if unseen.size:
            if self.warm_start and not classes:
                raise ValueError("warm_start can only be used where `y` has the same classes "
                                 "as in the previous call to fit. Previously got "
                                 f"{self.classes_}, `y` has {unique_labels(y)}")
            raise ValueError(f"`y` has classes not in `self.classes_`: {unseen}; "
                             f"self.classes_ has {self.classes_}")
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def _combine_class_weight(self, sw, T):
        if self.class_weight is None:
            return sw
        k = len(self.classes_)
        if isinstance(self.class_weight, str):
            if self.class_weight != "balanced":
                raise ValueError(f"class_weight must be None, a dict or 'balanced', "
                                 f"got {self.class_weight!r}")
            present = np.unique(T)
            table = np.ones(k)
            table[present] = compute_class_weight("balanced", classes=present, y=T)
        elif isinstance(self.class_weight, dict):
            table = np.ones(k)
            for label, weight in self.class_weight.items():
                hit = np.flatnonzero(self.classes_ == label)
                if hit.size == 0:
                    raise ValueError(f"class_weight has label {label!r}, which is not in "
                                     f"classes_ {list(self.classes_)!r}")
                table[hit[0]] = float(weight)
            if not np.isfinite(table).all() or (table < 0).any():
                raise ValueError("class_weight values must be finite and >= 0")
        else:
            raise ValueError(f"class_weight must be None, a dict or 'balanced', "
                             f"got {self.class_weight!r}")
        w = table[T]
        return w if sw is None else sw * w

    def _set_target_scaling(self, T, sw):
        self.n_outputs_ = 1
        self.out_activation_ = "softmax"

    def _scale_targets(self, T):
        return T

    def _validation_score(self, logits, T, w):
        return accuracy_score(T, np.argmax(logits, axis=1), sample_weight=w)

    def predict_proba(self, X):
        """Class probabilities: softmax of the logits, columns in ``classes_`` order."""
        return class_probabilities(self._predict_raw(X))

    def predict_log_proba(self, X):
        z = self._predict_raw(X)
        z -= z.max(axis=1, keepdims=True)
        z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
        return z

    def predict(self, X):
        """The most probable class of each row (a label from ``classes_``)."""
        raw = self._predict_raw(X)
        return self.classes_[np.argmax(raw, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by fastopt (mean squared error).

    Parameters are scikit-learn's ``MLPRegressor``'s (stochastic solvers) plus fastopt's
    extras; see the module docstring. ``y`` may have several columns (multi-output).
    Targets are standardized internally with the (sample-weighted) mean ``y_mean_`` and
    standard deviation ``y_scale_`` of the first fit (1 where a column is constant), and
    predictions mapped back: the network trains on unit-scale targets whatever their units.
    ``loss_curve_`` is therefore in standardized units. ``loss``: "squared_error" only
    (scikit-learn's "poisson" is not implemented); it comes first, as in scikit-learn.
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 batch_norm=False, dropout=0.0, optimizer_params=None, schedule=None,
                 clip_norm=None, n_threads=None, dtype="float32"):
        _store_params(self, locals())

    def _check_params(self):
        if self.loss != "squared_error":
            raise ValueError(f"loss must be 'squared_error' (fastopt does not implement "
                             f"{self.loss!r}), got {self.loss!r}")
        super()._check_params()

    def fit(self, X, y, sample_weight=None, comm=None):
        """Train for up to ``max_iter`` epochs (from scratch unless ``warm_start``).
        ``comm``: data-parallel over MPI, each rank passing its own shard of the rows
        (fastopt.distributed.gather_shards)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False, comm=comm)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing the model and the optimizer's state. The
        target scaling comes from the first call's batch."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _loss_name(self):
        return "mse"

    def _n_model_outputs(self):
        return self.n_outputs_

    def _encode_targets(self, y, first, classes):
        Y = np.asarray(y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        if not first and Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs, but the model was fitted with "
                             f"{self.n_outputs_}")
        return Y

    def _set_target_scaling(self, Y, sw):
        w = np.ones(Y.shape[0]) if sw is None else sw
        if w.sum() <= 0:
            w = np.ones(Y.shape[0])
        mean = np.average(Y, axis=0, weights=w)
        scale = np.sqrt(np.average((Y - mean) ** 2, axis=0, weights=w))
        scale[~(scale > 1e-12 * np.maximum(1.0, np.abs(mean)))] = 1.0
        self.y_mean_ = mean
        self.y_scale_ = scale
        self.n_outputs_ = Y.shape[1]
        self.out_activation_ = "identity"

    def _scale_targets(self, Y):
        return (Y - self.y_mean_) / self.y_scale_

    def _validation_score(self, out, T, w):
        # R² is invariant to the per-column standardization: score the scaled values.
        return r2_score(T, out, sample_weight=w)

    def predict(self, X):
        """Predictions in the units of ``y``; 1-D when the model has one output."""
        out = self._predict_raw(X) * self.y_scale_ + self.y_mean_
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
