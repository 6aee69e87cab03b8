"""Hypothesis property tests: every kernel against the float64 references on generated
shapes (1 row, 1 column, widths around the SIMD widths), dtypes and values (large, tiny,
subnormal, exact zeros), and for thread counts 1 and 2 (bitwise equality where the
contract promises it).

The number of examples comes from the Hypothesis profile (tests/conftest.py): ``ci`` by
default, ``HYPOTHESIS_PROFILE=long pytest tests/test_properties.py`` for a deep local run.

Tolerances are error bounds, not fixed rtol/atol: a GEMM is compared with
``c·eps·(|X|·|W|ᵀ + |b|)``, an elementwise function with ``c·eps·(|f(z)| + L·|z|)`` (L its
Lipschitz constant: the error of rounding z itself), so tiny and subnormal values are
checked relative to their own size instead of vanishing under an absolute tolerance.
"""

import numpy as np
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

import fastopt as fo
from fastopt._kernels import dense, dropout as _dropout, loss as kernels
from fastopt._kernels import _testing
from fastopt._kernels.optim import norm_blocks, sum_squares
from fastopt.layers import mask_bits_buffer
from fastopt.threads import blas_single_thread
from fastopt.threads import get_num_threads

from reference import bn_backward, bn_forward, dropout_keep
from reference import act, act_grad, bce, mse, softmax_xent, softmax_xent_proba
from test_optim import CASES, Reference

DTYPES = [np.float32, np.float64]
ACTS = ["identity", "relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "sigmoid", "tanh",
        "softplus"]
ALPHA = {"leaky_relu": 0.01, "elu": 1.0}
LIPSCHITZ = {"identity": 1.0, "relu": 1.0, "leaky_relu": 1.0, "elu": 1.0, "gelu": 1.13,
             "gelu_tanh": 1.13, "sigmoid": 0.25, "tanh": 1.0, "softplus": 1.0}
# Widths around the vector widths (4/8 doubles, 8/16 floats) and the 32-bit mask words.
SIMD_EDGES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65]
widths = st.one_of(st.sampled_from(SIMD_EDGES), st.integers(1, 80))
rows = st.one_of(st.just(1), st.integers(1, 70))
dtypes = st.sampled_from(DTYPES)
# Value regimes: the scale of the entries; every array also gets exact zeros.
REGIMES = ["unit", "large", "tiny", "subnormal", "zeros", "mixed"]
regimes = st.sampled_from(REGIMES)
seeds = st.integers(0, 2 ** 32 - 1)


def values(rng, shape, dtype, regime, large=None):
    """Entries of one regime, with some exact zeros, as ``dtype``."""
    fi = np.finfo(dtype)
    big = large if large is not None else (1e15 if dtype == np.float32 else 1e100)
    scale = {"unit": 1.0, "large": big, "tiny": fi.tiny * 1e3, "subnormal": fi.smallest_subnormal * 64,
             "zeros": 0.0, "mixed": 1.0}[regime]
    x = rng.standard_normal(shape) * scale
    if regime == "mixed":
        pick = rng.integers(0, 4, shape)
        x = np.select([pick == 0, pick == 1, pick == 2], [x * big ** 0.5, x * fi.tiny * 16,
                      x * fi.smallest_subnormal * 8], x)
    x[rng.random(shape) < 0.15] = 0.0
    return x.astype(dtype)


def eps(dtype):
    return float(np.finfo(dtype).eps)


def assert_within(actual, expected, bound, what):
    """|actual − expected| ≤ bound elementwise (bound already includes the constants)."""
    actual = np.asarray(actual, np.float64)
    err = np.abs(actual - expected)
    bad = ~(err <= bound)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err - bound, -np.inf)), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} outside the bound; worst "
                             f"at {i}: got {actual[i]!r}, expected {expected[i]!r}, bound {bound[i]!r}")


def both_thread_counts(fn):
    """Run ``fn()`` with 1 and 2 threads; the results must be bitwise identical."""
    outs = []
    for n in (1, 2):
        with fo.threads(n):
            outs.append(fn())
    for a, b in zip(outs[0], outs[1]):
        assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True), \
            "results differ between 1 and 2 threads"
    return outs[0]


def floor(dtype):
    return 64 * float(np.finfo(dtype).smallest_subnormal) + 4 * float(np.finfo(dtype).tiny) * eps(dtype)


# ---- dense: GEMM + bias + activation epilogue, and its backward ----

@given(dtype=dtypes, name=st.sampled_from(ACTS), N=rows, n_in=widths, n_out=widths,
       regime=regimes, seed=seeds, has_bias=st.booleans())
def test_dense_forward_and_backward_epilogues(dtype, name, N, n_in, n_out, regime, seed, has_bias):
    rng = np.random.default_rng(seed)
    X = values(rng, (N, n_in), dtype, regime, large=1e6 if dtype == np.float32 else 1e50)
    W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    b = values(rng, n_out, dtype, regime, large=1e6 if dtype == np.float32 else 1e50)
    dA = values(rng, (N, n_out), dtype, "unit")
    code = dense.ACTIVATIONS[name]
    alpha = ALPHA.get(name, 0.0)

    def run():
        A = np.empty((N, n_out), dtype)
        Z = np.empty_like(A) if code in dense.NEEDS_PREACTIVATION else A
        dZ, dW = np.empty_like(A), np.empty_like(W)
        db, dX = np.zeros(n_out, dtype), np.empty_like(X)
        with blas_single_thread:
            dense.forward(X, W, b, Z, A, code, alpha, has_bias, n_threads=get_num_threads())
            A_kept, Z_kept = A.copy(), Z.copy()
            dense.backward(dA, X, W, A, Z, dZ, dW, db, dX, code, alpha, has_bias, True,
                           n_threads=get_num_threads())
        return A_kept, Z_kept, dZ, dW, db, dX

    A, Z, dZ, dW, db, dX = both_thread_counts(run)
    X64, W64, b64 = X.astype(np.float64), W.astype(np.float64), b.astype(np.float64) * has_bias
    Zref = X64 @ W64.T + b64
    gemm_bound = (n_in + 4) * eps(dtype) * (np.abs(X64) @ np.abs(W64).T + np.abs(b64))
    L = LIPSCHITZ[name]
    ref = act(name, Zref, ALPHA.get(name))
    assert_within(A, ref, 16 * eps(dtype) * np.abs(ref) + 2 * L * gemm_bound
                  + 16 * eps(dtype) * L * np.abs(Zref) + floor(dtype), "A")
    # Backward from what the forward kept (its Z, or its A), in float64.
    if code in dense.NEEDS_PREACTIVATION:
        deriv = act_grad(name, Z.astype(np.float64))
    else:
        deriv = _grad_from_output(name, A.astype(np.float64))
    dA64 = dA.astype(np.float64)
    dZ_ref = dA64 * deriv
    assert_within(dZ, dZ_ref, 32 * eps(dtype) * np.abs(dA64) * max(L, 1.0) + floor(dtype), "dZ")
    dZ64 = dZ.astype(np.float64)
    assert_within(dW, dZ64.T @ X64, (N + 4) * eps(dtype) * (np.abs(dZ64).T @ np.abs(X64))
                  + floor(dtype), "dW")
    assert_within(dX, dZ64 @ W64, (n_out + 4) * eps(dtype) * (np.abs(dZ64) @ np.abs(W64))
                  + floor(dtype), "dX")
    if has_bias:
        assert_within(db, dZ64.sum(axis=0), (N + 4) * eps(dtype) * np.abs(dZ64).sum(axis=0)
                      + floor(dtype), "db")


def _grad_from_output(name, A):
    """act'(z) written in terms of a = act(z) (what the kernels keep for these)."""
    if name == "identity":
        return np.ones_like(A)
    if name == "relu":
        return (A > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(A > 0, 1.0, 0.01)
    if name == "elu":
        return np.where(A > 0, 1.0, A + 1.0)
    if name == "sigmoid":
        return A * (1 - A)
    if name == "tanh":
        return 1 - A * A
    if name == "softplus":
        return -np.expm1(-A)
    raise KeyError(name)


@given(dtype=dtypes, name=st.sampled_from(ACTS), N=rows, n=widths, regime=regimes, seed=seeds)
def test_standalone_activation_forward_and_backward(dtype, name, N, n, regime, seed):
    rng = np.random.default_rng(seed)
    Z = values(rng, (N, n), dtype, regime, large=1e4)
    dA = values(rng, (N, n), dtype, "unit")
    code, alpha = dense.ACTIVATIONS[name], ALPHA.get(name, 0.0)

    def run():
        A, dZ = np.empty_like(Z), np.empty_like(Z)
        dense.activation_forward(Z, A, code, alpha, n_threads=get_num_threads())
        dense.activation_backward(dA, A, Z, dZ, code, alpha, n_threads=get_num_threads())
        return A, dZ

    A, dZ = both_thread_counts(run)
    Z64 = Z.astype(np.float64)
    ref = act(name, Z64, ALPHA.get(name))
    L = LIPSCHITZ[name]
    assert_within(A, ref, 16 * eps(dtype) * (np.abs(ref) + L * np.abs(Z64)) + floor(dtype), "A")
    dA64 = dA.astype(np.float64)
    assert_within(dZ, dA64 * act_grad(name, Z64, ALPHA.get(name)),
                  32 * eps(dtype) * np.abs(dA64) * (1 + np.abs(Z64) * (name != "relu"))
                  + floor(dtype), "dZ")


# ---- losses ----

def _loss_bound(dtype, Z, N):
    return 64 * eps(dtype) * (1 + np.abs(Z).max(initial=0.0)) / N


@given(dtype=dtypes, N=rows, K=st.one_of(st.sampled_from([2, 3, 7, 8, 9, 16, 17, 33]),
                                         widths.filter(lambda k: k >= 2)),
       regime=regimes, seed=seeds, smoothing=st.sampled_from([0.0, 0.1]), weighted=st.booleans())
def test_softmax_cross_entropy_and_probability_targets(dtype, N, K, regime, seed, smoothing,
                                                       weighted):
    rng = np.random.default_rng(seed)
    Z = values(rng, (N, K), dtype, regime, large=1e4)
    y = rng.integers(0, K, N)
    w = (rng.uniform(0.0, 3.0, N) if weighted else np.ones(N)).astype(dtype)
    w[0] = max(w[0], 0.5)
    scale = 1.0 / float(w.astype(np.float64).sum())

    def run():
        dZ, rows_ = np.empty_like(Z), np.empty(N, np.float64)
        v = kernels.softmax_cross_entropy(Z, y, w, scale, smoothing, dZ, rows_,
                                          n_threads=get_num_threads())
        P = np.full((N, K), smoothing / K)
        P[np.arange(N), y] += 1 - smoothing
        P = P.astype(dtype)
        dZp, rows_p = np.empty_like(Z), np.empty(N, np.float64)
        vp = kernels.dense_target_loss(kernels.FUSED_KINDS["softmax_cross_entropy_proba"], Z, P, w,
                                       scale, dZp, rows_p, n_threads=get_num_threads())
        return np.array(v), dZ, rows_, np.array(vp), dZp, rows_p, P

    v, dZ, rows_, vp, dZp, rows_p, P = both_thread_counts(run)
    ref_v, ref_g, ref_rows = softmax_xent(Z, y, smoothing, w)
    size = 1 + np.abs(Z.astype(np.float64)).max(axis=1)
    assert_within(rows_, ref_rows, 64 * eps(dtype) * (size + np.log(K)), "row losses")
    assert abs(float(v) - ref_v) <= 64 * eps(dtype) * (size.max() + np.log(K))
    g_bound = 64 * eps(dtype) * scale * w.astype(np.float64)[:, None] + floor(dtype)
    assert_within(dZ, ref_g, g_bound + 0 * ref_g, "dZ")
    ref_vp, ref_gp, ref_rows_p = softmax_xent_proba(Z, P, w)
    assert_within(rows_p, ref_rows_p, 64 * eps(dtype) * (size + np.log(K)), "row losses (proba)")
    assert_within(dZp, ref_gp, g_bound + 0 * ref_gp, "dZ (proba)")


@given(dtype=dtypes, N=rows, K=widths, regime=regimes, seed=seeds, weighted=st.booleans())
def test_binary_cross_entropy_and_mse(dtype, N, K, regime, seed, weighted):
    rng = np.random.default_rng(seed)
    Z = values(rng, (N, K), dtype, regime, large=1e4)
    Y = rng.integers(0, 2, (N, K)).astype(dtype)
    T = values(rng, (N, K), dtype, regime, large=1e4)
    w = (rng.uniform(0.0, 3.0, N) if weighted else np.ones(N)).astype(dtype)
    w[0] = max(w[0], 0.5)
    scale = 1.0 / float(w.astype(np.float64).sum())

    def run():
        dZ, r = np.empty_like(Z), np.empty(N, np.float64)
        v = kernels.dense_target_loss(kernels.FUSED_KINDS["binary_cross_entropy"], Z, Y, w, scale,
                                      dZ, r, n_threads=get_num_threads())
        dY, r2 = np.empty_like(Z), np.empty(N, np.float64)
        v2 = kernels.dense_target_loss(kernels.FUSED_KINDS["mse"], Z, T, w, scale, dY, r2,
                                       n_threads=get_num_threads())
        return np.array(v), dZ, r, np.array(v2), dY, r2

    v, dZ, r, v2, dY, r2 = both_thread_counts(run)
    Z64, w64 = Z.astype(np.float64), w.astype(np.float64)
    ref_v, ref_g, ref_rows = bce(Z, Y, w)
    size = 1 + np.abs(Z64).mean(axis=1)
    assert_within(r, ref_rows, 64 * eps(dtype) * size, "bce row losses")
    assert_within(dZ, ref_g, 64 * eps(dtype) * scale * w64[:, None] / K + floor(dtype), "bce dZ")
    ref_v2, ref_g2, ref_rows2 = mse(Z, T, w)
    diff = np.abs(Z64 - T.astype(np.float64))
    assert_within(r2, ref_rows2, 16 * eps(dtype) * (diff * (diff + np.abs(Z64) + np.abs(T))).mean(axis=1)
                  + floor(dtype), "mse row losses")
    assert_within(dY, ref_g2, 16 * eps(dtype) * (np.abs(Z64) + np.abs(T)) * scale * w64[:, None] / K
                  + floor(dtype), "mse dY")


# ---- batch norm (through the layer: its kernels' public face) ----

@given(dtype=dtypes, N=st.integers(2, 70), d=widths, seed=seeds,
       offset=st.sampled_from([0.0, 3.0, 1e3]), spread=st.sampled_from([1e-3, 1.0, 1e3]),
       act_name=st.sampled_from([None, "relu", "leaky_relu", "elu"]))
def test_batchnorm_training_forward_and_backward(dtype, N, d, seed, offset, spread, act_name):
    rng = np.random.default_rng(seed)
    x = (offset + rng.standard_normal((N, d)) * spread * rng.uniform(0.5, 2.0, d)).astype(dtype)
    dy = rng.standard_normal((N, d)).astype(dtype)
    # Constant columns and exact zeros: var = 0 except for eps.
    x[:, rng.random(d) < 0.1] = dtype(offset)
    gamma = rng.uniform(0.5, 2.0, d)
    beta = rng.standard_normal(d)

    def run():
        layers = [fo.BatchNorm()] + ([fo.Activation(act_name)] if act_name else [])
        model = fo.Sequential(layers, input_dim=d, dtype=dtype, seed=0)
        bn = model.layers[0]
        bn.params["gamma"][...] = gamma
        bn.params["beta"][...] = beta
        y = model.forward(x, training=True).copy()
        dx = model.backward(dy).copy()
        return y, dx, bn.grads["gamma"].copy(), bn.grads["beta"].copy(), bn.running_var.copy()

    y, dx, dgamma, dbeta, running_var = both_thread_counts(run)
    g64, b64 = gamma.astype(dtype).astype(np.float64), beta.astype(dtype).astype(np.float64)
    y_ref, mu, var, xhat = bn_forward(x, g64, b64, 1e-5)
    # The error of x̂ is relative to the spread: cond = |x − μ|/σ plus the rounding of x.
    sigma = np.sqrt(var + 1e-5)
    xscale = (np.abs(x.astype(np.float64)) + np.abs(mu)) / sigma
    y_bound = 64 * eps(dtype) * (np.abs(g64) * (np.abs(xhat) + xscale) + np.abs(b64)) + floor(dtype)
    dy64 = dy.astype(np.float64)
    if act_name:
        a = act(act_name, y_ref, ALPHA.get(act_name))
        assert_within(y, a, y_bound, "BN + activation output")
        mask_ok = np.abs(y_ref) > y_bound   # where the kink is ambiguous, skip the backward
        assume(mask_ok.mean() > 0.5)
        dy64 = dy64 * _grad_from_output(act_name, y.astype(np.float64))
    else:
        assert_within(y, y_ref, y_bound, "BN output")
    dx_ref, dgamma_ref, dbeta_ref = bn_backward(dy64, xhat, var, g64, 1e-5)
    if act_name:
        note("with an activation, the backward bound covers the kernel's own mask only")
        return
    size = (np.abs(g64) / sigma) * (np.abs(dy64).sum(axis=0) + np.abs(dy64) * N) / N * (1 + xscale.max(axis=0))
    assert_within(dx, dx_ref, 64 * eps(dtype) * size + floor(dtype), "dx")
    assert_within(dbeta, dbeta_ref, (N + 4) * eps(dtype) * np.abs(dy64).sum(axis=0) + floor(dtype),
                  "dbeta")
    assert_within(dgamma, dgamma_ref, 64 * eps(dtype) * (np.abs(dy64) * (np.abs(xhat) + xscale)).sum(axis=0)
                  + floor(dtype), "dgamma")
    assert np.isfinite(running_var).all() and (running_var >= 0).all()


# ---- dropout ----

@given(dtype=dtypes, N=rows, d=widths, seed=st.integers(0, 2 ** 64 - 1), step=st.integers(0, 2 ** 64 - 1),
       layer=st.integers(0, 2 ** 32 - 1), rate=st.floats(0.0, 0.95), regime=regimes, vseed=seeds)
def test_dropout_masks_forward_and_backward_are_exact(dtype, N, d, seed, step, layer, rate, regime,
                                                      vseed):
    rng = np.random.default_rng(vseed)
    x = values(rng, (N, d), dtype, regime)
    dy = values(rng, (N, d), dtype, regime)
    threshold = int(np.floor((1.0 - rate) * 2.0 ** 32))
    assume(threshold < 2 ** 32)
    scale = 1.0 / (1.0 - rate)

    def run():
        bits = mask_bits_buffer(N, d)
        y = np.empty_like(x)
        _dropout.forward(x, y, bits, seed, step, layer, threshold, scale,
                         n_threads=get_num_threads())
        dx = np.empty_like(dy)
        _dropout.backward(dy, bits, dx, scale, n_threads=get_num_threads())
        alone = np.full_like(bits, 0xFFFFFFFF)
        _testing.mask_bits(alone, d, seed, step, layer, threshold, n_threads=get_num_threads())
        return y, dx, bits, alone

    y, dx, bits, alone = both_thread_counts(run)
    np.testing.assert_array_equal(alone, bits)
    keep = dropout_keep(seed, step, layer, (N, d), rate)
    t = np.arange(d)
    decoded = ((bits[:, t // 32] >> (8 * (t % 4) + (t % 32) // 4)) & 1).astype(bool)
    np.testing.assert_array_equal(decoded, keep)
    for out, inp in ((y, x), (dx, dy)):
        expected = np.where(keep, inp.astype(np.float64) * scale, 0.0)
        assert_within(out, expected, eps(dtype) * np.abs(expected) + floor(dtype), "dropout")
        assert not np.any(out[~keep]), "dropped units must be exact zeros"


# ---- optimizers (their public .step) and the global norm ----

OPT_CASES = [(kind, kw) for kind, cases in CASES.items() for kw in cases]


@given(case=st.sampled_from(OPT_CASES), dtype=dtypes, n=st.one_of(st.sampled_from(SIMD_EDGES),
                                                                  st.integers(1, 3000)),
       regime=regimes, seed=seeds, steps=st.integers(1, 3), grad_scale=st.sampled_from([1.0, 0.5]),
       segmented=st.booleans())
def test_optimizer_steps_match_the_float64_reference(case, dtype, n, regime, seed, steps,
                                                     grad_scale, segmented):
    kind, kw = case
    rng = np.random.default_rng(seed)
    p0 = values(rng, n, dtype, "unit")
    # Large gradients stay below where g² overflows the dtype (there the float64
    # reference is not what a float32 kernel can compute).
    grads = [values(rng, n, dtype, regime, large=1e12 if dtype == np.float32 else 1e100)
             for _ in range(steps)]
    segments = None
    if segmented and n >= 3:
        a, b = n // 3, 2 * n // 3
        segments = [(0, a, True), (a, b, False), (b, n, True)]
    mask = np.ones(n)
    if segments:
        for s0, s1, dec in segments:
            mask[s0:s1] = float(dec)

    def run():
        opt = fo.optim.get_optimizer(kind, **kw)
        p = p0.copy()
        history = []
        for g in grads:
            opt.step(p, g, segments=segments, grad_scale=grad_scale)
            history.append(p.copy())
        return history

    history = both_thread_counts(run)
    ref = Reference(kind, **kw)
    prev = p0.astype(np.float64)
    for k, g in enumerate(grads):
        # Each step from the kernel's own previous parameters: no accumulated drift. The
        # reference's state (momentum, moments) is its own float64 history.
        expected = ref.step(prev, g.astype(np.float64), mask, grad_scale)
        got = history[k].astype(np.float64)
        change = np.abs(expected - prev)
        bound = 64 * eps(dtype) * (np.abs(prev) + change * (k + 1)) + floor(dtype)
        if kw.get("l1") or kind == "adamw" or kw.get("weight_decay"):
            bound = bound + 64 * eps(dtype) * kw.get("lr", 0.01)
        # Subnormal gradients: the kernels form lr·g (or m) in the dtype before dividing by
        # √v + eps, so that product underflows in the subnormal range and the update's
        # absolute error is a subnormal ulp times 1/eps, not relative to the update.
        sensitivity = 1.0 / kw.get("eps", {"adagrad": 1e-10, "sgd": 1.0}.get(kind, 1e-8))
        bound = bound + 16 * sensitivity * float(np.finfo(dtype).smallest_subnormal)
        assert_within(got, expected, bound, f"{kind} {kw} step {k + 1}")
        prev = got


@given(dtype=dtypes, n=st.one_of(st.sampled_from([1, 7, 4095, 4096, 4097]), st.integers(1, 20000)),
       regime=regimes, seed=seeds)
def test_sum_squares_is_accurate_and_thread_invariant(dtype, n, regime, seed):
    g = values(np.random.default_rng(seed), n, dtype, regime)

    def run():
        partials = np.empty(norm_blocks(n), np.float64)
        return (np.array(sum_squares(g, partials, n_threads=get_num_threads())),)

    (got,) = both_thread_counts(run)
    g64 = g.astype(np.float64)
    expected = float(np.dot(g64, g64))
    assert abs(float(got) - expected) <= (n + 4) * 2.2e-16 * expected + 1e-300


# ---- thread invariance where the kernels actually split the work ----
# The shapes above are too small for a second thread (each kernel gives a thread at
# least 8k-128k elements and splits a GEMM only from 128 columns): these draw shapes large
# enough to split and check 1 vs 2 threads bitwise, plus the reference on the result.

_fewer = settings(max_examples=max(5, settings.default.max_examples // 3))
big = st.integers(128, 420)


@_fewer
@given(dtype=dtypes, name=st.sampled_from(ACTS), N=big, n_in=big, n_out=big, regime=regimes,
       seed=seeds)
def test_split_dense_step_is_bitwise_thread_invariant(dtype, name, N, n_in, n_out, regime, seed):
    test_dense_forward_and_backward_epilogues.hypothesis.inner_test(
        dtype, name, N, n_in, n_out, regime, seed, True)


@_fewer
@given(dtype=dtypes, N=st.integers(200, 700), d=st.integers(100, 300), seed=seeds,
       act_name=st.sampled_from([None, "relu"]))
def test_split_batchnorm_is_bitwise_thread_invariant(dtype, N, d, seed, act_name):
    test_batchnorm_training_forward_and_backward.hypothesis.inner_test(
        dtype, N, d, seed, 3.0, 1.0, act_name)


@_fewer
@given(dtype=dtypes, N=st.integers(300, 1200), K=st.sampled_from([31, 64, 100]), regime=regimes,
       seed=seeds, weighted=st.booleans())
def test_split_losses_are_bitwise_thread_invariant(dtype, N, K, regime, seed, weighted):
    test_binary_cross_entropy_and_mse.hypothesis.inner_test(dtype, N, K, regime, seed, weighted)
    test_softmax_cross_entropy_and_probability_targets.hypothesis.inner_test(
        dtype, N, K, regime, seed, 0.1, weighted)


@_fewer
@given(dtype=dtypes, N=st.integers(200, 600), d=st.integers(100, 300), seed=seeds,
       rate=st.floats(0.05, 0.9), regime=regimes)
def test_split_dropout_is_bitwise_thread_invariant(dtype, N, d, seed, rate, regime):
    test_dropout_masks_forward_and_backward_are_exact.hypothesis.inner_test(
        dtype, N, d, seed, seed * 7 + 1, seed % 5, rate, regime, seed)


@_fewer
@given(case=st.sampled_from(OPT_CASES), dtype=dtypes, n=st.integers(140_000, 300_000), regime=regimes,
       seed=seeds)
def test_split_optimizer_steps_are_bitwise_thread_invariant(case, dtype, n, regime, seed):
    test_optimizer_steps_match_the_float64_reference.hypothesis.inner_test(
        case, dtype, n, regime, seed, 2, 0.7, True)
