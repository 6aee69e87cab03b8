"""Learning-rate schedules against CONTRACT.md's formulas (written out here) and,
where it is importable, torch.optim.lr_scheduler."""

import json
import math

import pytest

from fastopt import optim, schedules as S

LR0 = 0.3
TIMES = [0, 1, 2, 5, 9, 10, 11, 25, 100]


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-14, abs_tol=1e-300)


@pytest.mark.parametrize("t", TIMES)
def test_closed_form_schedules_follow_their_formulas(t):
    T = 10
    expected = {
        S.Constant(lr0=LR0): LR0,
        S.StepDecay(step_size=3, gamma=0.5, lr0=LR0): LR0 * 0.5 ** (t // 3),
        S.ExponentialDecay(gamma=0.9, lr0=LR0): LR0 * 0.9 ** t,
        S.ExponentialDecay(decay_time=4.0, lr0=LR0): LR0 * math.exp(-t / 4.0),
        S.InverseTimeDecay(k=0.5, lr0=LR0): LR0 / (1 + 0.5 * t),
        S.PolynomialDecay(T=T, lr0=LR0): LR0 * (1 - min(t, T) / T),
        S.PolynomialDecay(T=T, power=2.0, lr0=LR0): LR0 * (1 - min(t, T) / T) ** 2,
        S.PolynomialDecay(T=T, power=0.5, lr_end=0.01, lr0=LR0):
            (LR0 - 0.01) * (1 - min(t, T) / T) ** 0.5 + 0.01,
        S.CosineDecay(T=T, lr0=LR0): 0.5 * LR0 * (1 + math.cos(math.pi * min(t, T) / T)),
        S.CosineDecay(T=T, lr_end=0.02, lr0=LR0):
            0.02 + 0.5 * (LR0 - 0.02) * (1 + math.cos(math.pi * min(t, T) / T)),
    }
    for schedule, want in expected.items():
        assert close(schedule.lr_at(t), want), (schedule, t)


def test_horizon_ends_are_exact():
    assert S.CosineDecay(T=10, lr0=LR0).lr_at(0) == LR0
    assert S.CosineDecay(T=10, lr_end=0.01, lr0=LR0).lr_at(10) == 0.01
    assert S.CosineDecay(T=10, lr_end=0.01, lr0=LR0).lr_at(1000) == 0.01
    assert S.PolynomialDecay(T=10, lr0=LR0).lr_at(10) == 0.0
    assert S.PolynomialDecay(T=10, lr_end=0.05, lr0=LR0).lr_at(15) == 0.05
    assert S.PolynomialDecay(T=10, lr0=LR0).lr_at(0) == LR0
    assert S.InverseTimeDecay(k=1.0, lr0=LR0).lr_at(3) == LR0 / 4


def test_linear_polynomial_decay_is_a_straight_line():
    s = S.PolynomialDecay(T=8, power=1.0, lr0=0.8)
    assert [s.lr_at(t) for t in range(10)] == pytest.approx(
        [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0], abs=1e-15)


def test_warmup_ramps_linearly_then_hands_over_with_its_clock_shifted():
    inner = S.CosineDecay(T=10, lr0=1.0)
    s = S.Warmup(inner, warmup=4, start_factor=0.2)
    assert s.lr_at(0) == 0.2
    assert close(s.lr_at(1), 0.2 + 0.8 * 1 / 4)
    assert close(s.lr_at(3), 0.2 + 0.8 * 3 / 4)
    assert s.lr_at(4) == inner.lr_at(0) == 1.0
    assert close(s.lr_at(9), inner.lr_at(5))
    assert s.lr_at(14) == inner.lr_at(10) == 0.0
    assert s.lr_at(50) == 0.0
    ramp = S.Warmup(warmup=5, lr0=0.5, interval="step")
    assert ramp.interval == "step" and ramp.lr_at(0) == 0.0 and ramp.lr_at(7) == 0.5


def test_step_sets_the_optimizer_lr_and_takes_lr0_from_it():
    opt = optim.Adam(lr=0.4)
    s = S.ExponentialDecay(gamma=0.5)
    with pytest.raises(RuntimeError, match="lr0"):
        s.lr_at(1)
    s.step(opt, 0)
    assert s.lr0 == 0.4 and opt.lr == 0.4
    s.step(opt, 3)
    assert opt.lr == 0.4 * 0.125
    assert s.interval == "epoch"
    w = S.Warmup(S.StepDecay(step_size=2, interval="step"), warmup=2)
    w.step(opt, 1)
    assert w.lr0 == opt.lr * 2 == 0.05 and w.interval == "step"


def test_schedule_state_dict_round_trip():
    opt = optim.SGD(lr=0.2)
    for s in [S.CosineDecay(T=7, lr_end=0.01, interval="step"),
              S.Warmup(S.PolynomialDecay(T=5, power=2.0), warmup=3, start_factor=0.1),
              S.ExponentialDecay(decay_time=3.0), S.StepDecay(step_size=2, gamma=0.3)]:
        s.step(opt, 4)
        state = json.loads(json.dumps(s.state_dict()))
        fresh = type(s)(**({"schedule": S.PolynomialDecay(T=1)} if isinstance(s, S.Warmup)
                           else {"T": 1} if "T" in state and not isinstance(s, S.ExponentialDecay)
                           else {"step_size": 1} if isinstance(s, S.StepDecay)
                           else {"gamma": 0.1}))
        fresh.load_state_dict(state)
        assert [fresh.lr_at(t) for t in range(12)] == [s.lr_at(t) for t in range(12)]
        assert fresh.interval == s.interval and fresh.last_t == 4


def test_bad_schedule_arguments_are_rejected():
    for make in [lambda: S.StepDecay(step_size=0), lambda: S.ExponentialDecay(),
                 lambda: S.ExponentialDecay(gamma=0.5, decay_time=2.0),
                 lambda: S.CosineDecay(T=0), lambda: S.PolynomialDecay(T=5, power=0),
                 lambda: S.Constant(lr0=-1.0), lambda: S.Constant(interval="batch"),
                 lambda: S.Warmup(warmup=0), lambda: S.ReduceOnPlateau(factor=1.0),
                 lambda: S.ReduceOnPlateau(mode="up"), lambda: S.get_schedule("linear")]:
        with pytest.raises(ValueError):
            make()
    with pytest.raises(ValueError):
        S.Constant(lr0=1.0).lr_at(-1)
    with pytest.raises(TypeError):
        S.Warmup(S.Warmup())


# ---- reduce on plateau ----

def plateau_lrs(values, **kw):
    opt = optim.SGD(lr=1.0)
    s = S.ReduceOnPlateau(**kw)
    lrs = []
    for v in values:
        s.step(opt, v)
        lrs.append(opt.lr)
    return lrs


def test_plateau_waits_patience_epochs_then_cuts():
    # patience=2: two bad epochs are tolerated, the third cuts.
    lrs = plateau_lrs([5, 4, 4, 4, 4, 4, 4, 4], factor=0.5, patience=2)
    assert lrs == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25]


def test_plateau_improvement_must_beat_min_delta():
    lrs = plateau_lrs([1.0, 0.95, 0.91, 0.5, 0.45], factor=0.1, patience=1, min_delta=0.1)
    # 0.95 and 0.91 do not beat best − 0.1 = 0.9: the second of them cuts; 0.5 does.
    assert lrs == pytest.approx([1, 1, 0.1, 0.1, 0.1])


def test_plateau_cooldown_and_min_lr():
    lrs = plateau_lrs([3] * 10, factor=0.5, patience=0, cooldown=2, min_lr=0.2)
    # patience 0: every bad epoch cuts, except during the 2 cooldown epochs after a cut.
    assert lrs == [1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2]


def test_plateau_in_max_mode_watches_for_increases():
    lrs = plateau_lrs([0.5, 0.6, 0.6, 0.6, 0.7], factor=0.5, patience=1, mode="max")
    assert lrs == [1, 1, 1, 0.5, 0.5]


def test_plateau_state_round_trip_continues_the_same_sequence():
    values = [5, 4, 4, 4, 4, 3, 3, 3, 3, 3]
    opt_a, a = optim.SGD(lr=1.0), S.ReduceOnPlateau(factor=0.5, patience=1, cooldown=1)
    for v in values[:4]:
        a.step(opt_a, v)
    state = json.loads(json.dumps(a.state_dict()))
    opt_b, b = optim.SGD(lr=opt_a.lr), S.ReduceOnPlateau()
    b.load_state_dict(state)
    for v in values[4:]:
        a.step(opt_a, v)
        b.step(opt_b, v)
        assert opt_a.lr == opt_b.lr


# ---- torch ----

def torch_lrs(torch, make, steps, values=None):
    x = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([x], lr=LR0)
    sched = make(opt)
    lrs = []
    for k in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(values[k]) if values is not None else sched.step()
    return lrs


def test_closed_form_schedules_match_torch_lr_scheduler():
    torch = pytest.importorskip("torch")
    L = torch.optim.lr_scheduler
    pairs = [
        (lambda o: L.StepLR(o, step_size=3, gamma=0.5), S.StepDecay(step_size=3, gamma=0.5)),
        (lambda o: L.ExponentialLR(o, gamma=0.9), S.ExponentialDecay(gamma=0.9)),
        (lambda o: L.CosineAnnealingLR(o, T_max=10, eta_min=0.01),
         S.CosineDecay(T=10, lr_end=0.01)),
        (lambda o: L.PolynomialLR(o, total_iters=10, power=2.0),
         S.PolynomialDecay(T=10, power=2.0)),
        (lambda o: L.LinearLR(o, start_factor=0.25, total_iters=4),
         S.Warmup(warmup=4, start_factor=0.25)),
    ]
    for make, ours in pairs:
        ours.lr0 = LR0
        want = torch_lrs(torch, make, 11)  # to t = T, where torch's cosine turns back
        got = [ours.lr_at(t) for t in range(11)]
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), ours


def test_plateau_matches_torch_reduce_lr_on_plateau():
    torch = pytest.importorskip("torch")
    values = [5, 4, 4, 4.05, 4, 3.95, 3.9, 3.9, 3.9, 3.9, 3.9, 3.9, 3.9, 2, 2, 2, 2, 2]
    kw = dict(factor=0.5, patience=2, cooldown=1, min_lr=0.05)
    want = torch_lrs(torch, lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, threshold=0.1, threshold_mode="abs", **kw), len(values), values)
    opt, s = optim.SGD(lr=LR0), S.ReduceOnPlateau(min_delta=0.1, **kw)
    got = []
    for v in values:
        got.append(opt.lr)
        s.step(opt, v)
    assert got == pytest.approx(want, rel=1e-15)
