r"""Learning-rate schedules (the formulas are below).

A schedule is a small object. The closed-form ones have ``lr_at(t)``, a pure function
of ``t`` (the number of steps or epochs completed, from 0), and ``step(optimizer, t)``,
which sets ``optimizer.lr = lr_at(t)``; ``interval`` ("step" or "epoch", the user's
choice) tells the Trainer when to call it: before each optimizer step with ``t`` =
steps taken so far, or at the start of each epoch with ``t`` = epochs completed (as a
torch.optim.lr_scheduler stepped once per epoch).

``lr0`` is the initial learning rate; left as None it is read from the optimizer the
first time ``step`` is called (torch's ``base_lr``), and kept in ``state_dict``.

``ReduceOnPlateau`` instead watches a value: ``step(optimizer, value)`` at the end of
each epoch, with ``monitor`` naming the value the Trainer should pass.

.. code-block:: text

    Constant            lr₀
    StepDecay           lr₀ · γ^⌊t / step_size⌋
    ExponentialDecay    lr₀ · γ^t          or, given decay_time T,  lr₀ · exp(−t/T)
    InverseTimeDecay    lr₀ / (1 + k·t)
    PolynomialDecay     (lr₀ − lr_end) · (1 − min(t,T)/T)^β + lr_end     (β = 1: linear)
    CosineDecay         lr_end + ½(lr₀ − lr_end)(1 + cos(π·min(t,T)/T))
    Warmup              lr₀ · (f + (1 − f)·t/W)  for t < W,  then  inner.lr_at(t − W)
    ReduceOnPlateau     lr ← max(lr·factor, min_lr) after more than `patience` epochs
                        without improvement by more than min_delta, then `cooldown`
                        epochs of rest (torch.optim.lr_scheduler.ReduceLROnPlateau,
                        threshold_mode="abs")
"""

import math
import numbers

from .validation import check_number as _number, lookup

__all__ = [
    "Schedule", "Constant", "StepDecay", "ExponentialDecay", "InverseTimeDecay",
    "PolynomialDecay", "CosineDecay", "Warmup", "ReduceOnPlateau",
    "SCHEDULES", "get_schedule", "from_state_dict",
]

_INTERVALS = ("step", "epoch")


def _count(value, name, low=0):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _time(t):
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"t must be a number of steps or epochs, got {t!r}")
    if not t >= 0:
        raise ValueError(f"t must be >= 0, got {t}")
    return t


def _constructor_params(obj):
    """The object's constructor arguments (but ``_not_params``) as it stored them."""
    import inspect

    names = inspect.signature(type(obj).__init__).parameters
    return {name: getattr(obj, name) for name in names
            if name != "self" and name not in obj._not_params}


class Schedule:
    """Base of the closed-form schedules: ``lr_at(t)``, ``step(optimizer, t)``, state."""

    name = None
    monitor = None      # closed-form schedules watch no value

    def __init__(self, lr0=None, interval="epoch"):
        self.lr0 = None if lr0 is None else _number(lr0, "lr0", low=0)
        if interval not in _INTERVALS:
            raise ValueError(f"interval must be 'step' or 'epoch', got {interval!r}")
        self.interval = interval
        self.last_t = None

    # Constructor arguments that are not hyperparameters of the formula.
    _not_params = ("lr0", "interval")

    def _params(self):
        """Constructor arguments besides lr0 and interval, by name."""
        return _constructor_params(self)

    def _lr0(self):
        if self.lr0 is None:
            raise RuntimeError(f"{type(self).__name__} has no lr0 yet: pass lr0=..., or "
                               "call step(optimizer, t) once to take the optimizer's lr")
        return self.lr0

    def lr_at(self, t):
        """The learning rate at ``t`` steps/epochs completed (t >= 0)."""
        return self._formula(self._lr0(), _time(t))

    def _formula(self, lr0, t):
        raise NotImplementedError

    def step(self, optimizer, t):
        """Set ``optimizer.lr`` to ``lr_at(t)``; the first call fixes lr0 if unset."""
        if self.lr0 is None:
            self.lr0 = optimizer.lr
        optimizer.lr = self.lr_at(t)
        self.last_t = t

    def state_dict(self):
        return {"schedule": self.name, "lr0": self.lr0, "interval": self.interval,
                "last_t": self.last_t, **self._params()}

    def load_state_dict(self, state):
        if state.get("schedule", self.name) != self.name:
            raise ValueError(f"a state_dict of {state['schedule']!r} cannot be loaded "
                             f"into {type(self).__name__}")
        params = {k: state[k] for k in self._params() if k in state}
        fresh = type(self)(lr0=state.get("lr0"), interval=state.get("interval", self.interval),
                           **{**self._params(), **params})
        self.__dict__.update(fresh.__dict__)
        self.last_t = state.get("last_t")

    def __repr__(self):
        args = {"lr0": self.lr0, **self._params(), "interval": self.interval}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


class Constant(Schedule):
    """``lr₀`` at every t."""

    name = "constant"

    def _formula(self, lr0, t):
        return lr0


class StepDecay(Schedule):
    """``lr₀ · γ^⌊t / step_size⌋`` (torch StepLR)."""

    name = "step"

    def __init__(self, step_size, gamma=0.1, lr0=None, interval="epoch"):
        super().__init__(lr0, interval)
        self.step_size = _count(step_size, "step_size", low=1)
        self.gamma = _number(gamma, "gamma", low=0)

    def _formula(self, lr0, t):
        return lr0 * self.gamma ** (t // self.step_size)


class ExponentialDecay(Schedule):
    """``lr₀ · γ^t`` (torch ExponentialLR), or ``lr₀ · exp(−t/T)`` given ``decay_time=T``.

    Give exactly one of ``gamma`` and ``decay_time``.
    """

    name = "exponential"

    def __init__(self, gamma=None, decay_time=None, lr0=None, interval="epoch"):
        super().__init__(lr0, interval)
        if (gamma is None) == (decay_time is None):
            raise ValueError("give exactly one of gamma (lr₀·γ^t) and decay_time "
                             "(lr₀·exp(−t/T))")
        self.gamma = None if gamma is None else _number(gamma, "gamma", low=0)
        self.decay_time = (None if decay_time is None
                           else _number(decay_time, "decay_time", low=0, low_open=True))

    def _formula(self, lr0, t):
        if self.gamma is not None:
            return lr0 * self.gamma ** t
        return lr0 * math.exp(-t / self.decay_time)


class InverseTimeDecay(Schedule):
    """``lr₀ / (1 + k·t)``."""

    name = "inverse_time"

    def __init__(self, k=1.0, lr0=None, interval="epoch"):
        super().__init__(lr0, interval)
        self.k = _number(k, "k", low=0)

    def _formula(self, lr0, t):
        return lr0 / (1.0 + self.k * t)


class PolynomialDecay(Schedule):
    """``(lr₀ − lr_end) · (1 − min(t,T)/T)^power + lr_end``; power = 1 is linear decay.

    With lr_end = 0 (the default) this is ``lr₀ · (1 − min(t,T)/T)^power`` (torch
    PolynomialLR); it stays at lr_end for t >= T.
    """

    name = "polynomial"

    def __init__(self, T, power=1.0, lr_end=0.0, lr0=None, interval="epoch"):
        super().__init__(lr0, interval)
        self.T = _count(T, "T", low=1)
        self.power = _number(power, "power", low=0, low_open=True)
        self.lr_end = _number(lr_end, "lr_end", low=0)

    def _formula(self, lr0, t):
        frac = 1.0 - min(t, self.T) / self.T
        return (lr0 - self.lr_end) * frac ** self.power + self.lr_end


class CosineDecay(Schedule):
    """``lr_end + ½(lr₀ − lr_end)(1 + cos(π·min(t,T)/T))``: lr₀ at 0, lr_end from T on.

    Torch's CosineAnnealingLR (eta_min = lr_end) for t <= T; past T it stays at lr_end.
    """

    name = "cosine"

    def __init__(self, T, lr_end=0.0, lr0=None, interval="epoch"):
        super().__init__(lr0, interval)
        self.T = _count(T, "T", low=1)
        self.lr_end = _number(lr_end, "lr_end", low=0)

    def _formula(self, lr0, t):
        return self.lr_end + 0.5 * (lr0 - self.lr_end) * (
            1.0 + math.cos(math.pi * min(t, self.T) / self.T))


class Warmup(Schedule):
    """Linear warm-up over ``warmup`` steps/epochs, then the wrapped schedule.

    ``lr₀ · (start_factor + (1 − start_factor) · t/W)`` for t < W, then
    ``schedule.lr_at(t − W)`` (the wrapped schedule starts its own clock at W, as
    torch's SequentialLR does). lr₀ is the wrapped schedule's; ``interval`` is too
    unless given. ``schedule=None`` wraps a Constant.
    """

    name = "warmup"
    _not_params = ("schedule", "lr0", "interval")

    def __init__(self, schedule=None, warmup=1, start_factor=0.0, lr0=None, interval=None):
        if schedule is None:
            schedule = Constant(lr0=lr0, interval=interval or "epoch")
        if not isinstance(schedule, Schedule) or isinstance(schedule, Warmup):
            raise TypeError("Warmup wraps one closed-form schedule (not a Warmup), "
                            f"got {schedule!r}")
        self.schedule = schedule
        super().__init__(schedule.lr0 if lr0 is None else lr0, interval or schedule.interval)
        self.warmup = _count(warmup, "warmup", low=1)
        self.start_factor = _number(start_factor, "start_factor", low=0, high=1)

    @property
    def lr0(self):
        return self.schedule.lr0

    @lr0.setter
    def lr0(self, value):
        # One lr0, the wrapped schedule's: warm-up ramps to where it starts.
        self.schedule.lr0 = value

    def _formula(self, lr0, t):
        if t < self.warmup:
            return lr0 * (self.start_factor + (1.0 - self.start_factor) * t / self.warmup)
        return self.schedule.lr_at(t - self.warmup)

    def state_dict(self):
        state = super().state_dict()
        state["inner"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state):
        if state.get("schedule", self.name) != self.name:
            raise ValueError(f"a state_dict of {state['schedule']!r} cannot be loaded "
                             "into Warmup")
        self.schedule.load_state_dict(state["inner"])
        self.warmup = _count(state.get("warmup", self.warmup), "warmup", low=1)
        self.start_factor = _number(state.get("start_factor", self.start_factor),
                                    "start_factor", low=0, high=1)
        self.interval = state.get("interval", self.interval)
        self.last_t = state.get("last_t")

    def __repr__(self):
        return (f"Warmup({self.schedule!r}, warmup={self.warmup}, "
                f"start_factor={self.start_factor!r}, interval={self.interval!r})")


class ReduceOnPlateau:
    """Cut the learning rate when a monitored value stops improving.

    At the end of each epoch, ``step(optimizer, value)``:

    .. code-block:: text

        improved ← value < best − min_delta   (mode "min")   value > best + min_delta ("max")
        if improved: best ← value ; bad ← 0   else bad ← bad + 1
        if cooling down: cooldown_left ← cooldown_left − 1 ; bad ← 0
        if bad > patience:
            lr ← max(lr·factor, min_lr)   (kept unchanged if that moves it by <= 1e-8)
            cooldown_left ← cooldown ; bad ← 0

    torch.optim.lr_scheduler.ReduceLROnPlateau with threshold_mode="abs" and
    threshold=min_delta. A NaN value never counts as an improvement.
    ``monitor`` names the value the Trainer passes ("val_loss" by default).
    """

    name = "reduce_on_plateau"
    interval = "epoch"

    _not_params = ()

    def __init__(self, factor=0.1, patience=10, min_delta=0.0, cooldown=0, min_lr=0.0,
                 mode="min", monitor="val_loss", eps=1e-8):
        self.factor = _number(factor, "factor", low=0, high=1, low_open=True, high_open=True)
        self.patience = _count(patience, "patience")
        self.min_delta = _number(min_delta, "min_delta", low=0)
        self.cooldown = _count(cooldown, "cooldown")
        self.min_lr = _number(min_lr, "min_lr", low=0)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode = mode
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a value, got {monitor!r}")
        self.monitor = monitor
        self.eps = _number(eps, "eps", low=0)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, optimizer, value):
        """Record this epoch's ``value``; lower ``optimizer.lr`` when it has plateaued."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"the monitored value must be a number, got {value!r}")
        value = float(value)
        if self._improved(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _params(self):
        return _constructor_params(self)

    def state_dict(self):
        return {"schedule": self.name, **self._params(), "best": self.best,
                "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state):
        if state.get("schedule", self.name) != self.name:
            raise ValueError(f"a state_dict of {state['schedule']!r} cannot be loaded "
                             "into ReduceOnPlateau")
        fresh = ReduceOnPlateau(**{k: state.get(k, v) for k, v in self._params().items()})
        self.__dict__.update(fresh.__dict__)
        self.best = float(state["best"])
        self.num_bad_epochs = _count(state["num_bad_epochs"], "num_bad_epochs")
        self.cooldown_counter = _count(state["cooldown_counter"], "cooldown_counter")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"ReduceOnPlateau({args})"


SCHEDULES = {
    "constant": Constant, "step": StepDecay, "exponential": ExponentialDecay,
    "inverse_time": InverseTimeDecay, "polynomial": PolynomialDecay,
    "cosine": CosineDecay, "warmup": Warmup, "reduce_on_plateau": ReduceOnPlateau,
}


def get_schedule(name, **kwargs):
    """A schedule by name (``SCHEDULES``' keys), made with ``kwargs``."""
    return lookup(SCHEDULES, name, "schedule")(**kwargs)


def from_state_dict(state):
    """Rebuild a schedule from its ``state_dict()`` (what ``fastopt.save`` stores)."""
    import inspect

    name = state.get("schedule") if isinstance(state, dict) else None
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule in state: {name!r}")
    cls = SCHEDULES[name]
    if cls is Warmup:
        schedule = Warmup(from_state_dict(state["inner"]), warmup=state["warmup"],
                          start_factor=state["start_factor"], interval=state["interval"])
    else:
        accepted = inspect.signature(cls).parameters
        schedule = cls(**{k: v for k, v in state.items() if k in accepted})
    schedule.load_state_dict(state)
    return schedule
