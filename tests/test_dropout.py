import math

import numpy as np
import pytest

import fastopt as fo
from fastopt._kernels import dropout as _dropout
from fastopt._kernels import _testing
from fastopt.layers import mask_bits_buffer
from fastopt.threads import get_num_threads

from reference import dropout_keep, philox4x32_10

# Random123's known answers for Philox4x32-10 (kat_vectors): counter, key, output.
KNOWN_ANSWERS = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]
DTYPES = [np.float32, np.float64]


def _model(rate, width, dtype=np.float64, seed=0, depth=0):
    layers = [fo.Activation("identity") for _ in range(depth)] + [fo.Dropout(rate)]
    return fo.Sequential(layers, input_dim=width, dtype=dtype, seed=seed)


def test_philox_matches_random123_known_answers():
    ctr = np.array([c for c, _, _ in KNOWN_ANSWERS], np.uint32)
    key = np.array([k for _, k, _ in KNOWN_ANSWERS], np.uint32)
    out = np.zeros_like(ctr)
    _testing.philox4x32_10_blocks(ctr, key, out)
    np.testing.assert_array_equal(out, np.array([o for _, _, o in KNOWN_ANSWERS], np.uint32))


def test_numpy_reference_matches_known_answers():
    for ctr, key, expected in KNOWN_ANSWERS:
        np.testing.assert_array_equal(philox4x32_10([ctr], key)[0], expected)


@pytest.mark.parametrize("n_blocks", [1, 7, 8, 15, 16, 17, 40])
@pytest.mark.parametrize("first", [0, 5, 0xFFFFFFF0])
def test_philox_fill_simd_and_scalar_paths_agree_with_reference(n_blocks, first):
    c1, c2, c3, k0, k1 = 3, 0x12345678, 9, 0xDEADBEEF, 42
    simd = np.zeros(4 * n_blocks, np.uint32)
    scalar = np.ones(4 * n_blocks, np.uint32)
    _testing.philox_fill_blocks(simd, first, c1, c2, c3, k0, k1)
    _testing.philox_fill_blocks(scalar, first, c1, c2, c3, k0, k1, scalar=True)
    blocks = (first + np.arange(n_blocks, dtype=np.uint64)) & 0xFFFFFFFF  # counter wraps
    ctr = np.stack([blocks, np.full(n_blocks, c1), np.full(n_blocks, c2),
                    np.full(n_blocks, c3)], axis=1)
    expected = philox4x32_10(ctr, [k0, k1]).reshape(-1)
    np.testing.assert_array_equal(simd, expected)
    np.testing.assert_array_equal(scalar, expected)


@pytest.mark.parametrize("n", [1, 5, 31, 32, 33, 40, 64, 96, 100, 127, 128])
@pytest.mark.parametrize("e0", [0, 4, 7, 4 * 0xFFFFFFF8, 3 * 2**32 + 13])
def test_mask_chunk_bits_simd_and_general_paths_agree_with_reference(n, e0):
    # Column t of a 32-column group is bit 8·(t mod 4) + t // 4 of its word.
    seed, step, layer, rate = 0x1234_5678_9ABC, 2**33 + 5, 3, 0.3
    threshold = math.floor((1 - rate) * 2**32)
    fast = np.full(4, 0xFFFFFFFF, np.uint32)
    general = np.full(4, 0xFFFFFFFF, np.uint32)
    _testing.chunk_bits(fast, e0, n, seed, step, layer, threshold)
    _testing.chunk_bits(general, e0, n, seed, step, layer, threshold, general=True)
    words = (n + 31) // 32
    np.testing.assert_array_equal(fast[:words], general[:words])
    t = np.arange(n)
    decoded = (fast[t // 32] >> (8 * (t % 4) + (t % 32) // 4)) & 1
    e = e0 + t.astype(np.uint64)
    ctr = np.stack([(e // 4) & 0xFFFFFFFF, np.full(n, layer), np.full(n, step & 0xFFFFFFFF),
                    np.full(n, step >> 32)], axis=1)
    raw = philox4x32_10(ctr, [seed & 0xFFFFFFFF, seed >> 32])[np.arange(n), e % 4]
    np.testing.assert_array_equal(decoded, raw.astype(np.uint64) < threshold)
    used = np.zeros(32 * words, bool)
    used[:n] = True
    unused_bits = np.zeros(words, np.uint32)
    for t in np.flatnonzero(~used):
        unused_bits[t // 32] |= np.uint32(1 << (8 * (t % 4) + (t % 32) // 4))
    assert not np.any(fast[:words] & unused_bits), "bits past the chunk must be zero"


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (5, 257), (64, 100), (9, 2048)])
def test_mask_bits_alone_decode_to_the_reference_mask_and_match_forward(shape):
    layer_bits = mask_bits_buffer(*shape)
    alone = np.full_like(layer_bits, 0xFFFFFFFF)
    x = np.ones(shape, np.float32)
    _dropout.forward(x, np.empty_like(x), layer_bits, 99, 3, 1, 2**31, 2.0,
                     n_threads=get_num_threads())
    _testing.mask_bits(alone, shape[1], 99, 3, 1, 2**31, n_threads=get_num_threads())
    t = np.arange(shape[1])
    decoded = (alone[:, t // 32] >> (8 * (t % 4) + (t % 32) // 4)) & 1
    np.testing.assert_array_equal(decoded.astype(bool), dropout_keep(99, 3, 1, shape, 0.5))
    np.testing.assert_array_equal(alone, layer_bits)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (2, 7), (3, 17), (129, 33), (5, 257), (64, 100)])
@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_dropout_forward_applies_the_philox_mask_and_scale(dtype, shape, rate):
    model = _model(rate, shape[1], dtype, seed=123)
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    y = model.forward(x, training=True)
    keep = dropout_keep(123, 1, 0, shape, rate)
    expected = np.where(keep, x.astype(np.float64) * (1.0 / (1.0 - rate)), 0.0)
    rtol = 1e-6 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(y, expected, rtol=rtol, atol=0)
    assert np.array_equal(y != 0, keep)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_backward_uses_the_forward_mask(dtype):
    model = _model(0.3, 33, dtype, seed=7)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((129, 33)).astype(dtype)
    dy = rng.standard_normal((129, 33)).astype(dtype)
    model.forward(x, training=True)
    dx = model.backward(dy)
    keep = dropout_keep(7, 1, 0, x.shape, 0.3)
    np.testing.assert_allclose(dx, np.where(keep, dy / 0.7, 0.0),
                               rtol=1e-6 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_rate_is_within_four_standard_errors(rate):
    n_rows, width = 1000, 1000
    model = _model(rate, width, np.float32, seed=3)
    y = model.forward(np.ones((n_rows, width), np.float32), training=True)
    p = 1.0 - rate
    kept = np.count_nonzero(y) / y.size
    assert abs(kept - p) < 4 * math.sqrt(p * (1 - p) / y.size)


def test_masks_are_identical_for_one_and_two_threads():
    x = np.ones((512, 300), np.float32)
    with fo.threads(1):
        y1 = _model(0.5, 300, np.float32, seed=11).forward(x, training=True).copy()
    with fo.threads(2):
        y2 = _model(0.5, 300, np.float32, seed=11).forward(x, training=True).copy()
    assert np.array_equal(y1, y2)


def test_masks_differ_across_steps_layers_and_seeds():
    x = np.ones((64, 64))
    model = _model(0.5, 64, seed=0)
    step1 = model.forward(x, training=True).copy()
    step2 = model.forward(x, training=True).copy()
    other_seed = _model(0.5, 64, seed=1).forward(x, training=True)
    other_layer = _model(0.5, 64, seed=0, depth=1).forward(x, training=True)
    for other in (step2, other_seed, other_layer):
        assert not np.array_equal(step1 != 0, other != 0)
    # and the same key gives the same mask
    assert np.array_equal(step1, _model(0.5, 64, seed=0).forward(x, training=True))


def test_large_seed_and_step_are_keyed_by_both_words():
    seed, step = (1 << 40) + 5, (1 << 33) + 2
    model = _model(0.5, 17, seed=seed)
    model.train_step = step - 1
    y = model.forward(np.ones((9, 17)), training=True)
    assert np.array_equal(y != 0, dropout_keep(seed, step, 0, (9, 17), 0.5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_eval_is_identity_and_rate_zero_is_a_no_op(dtype):
    x = np.random.default_rng(2).standard_normal((5, 7)).astype(dtype)
    np.testing.assert_array_equal(_model(0.5, 7, dtype).forward(x, training=False), x)
    model = _model(0.0, 7, dtype)
    np.testing.assert_array_equal(model.forward(x, training=True), x)
    np.testing.assert_array_equal(model.backward(x), x)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_rate_out_of_range_is_rejected(rate):
    with pytest.raises(ValueError, match="rate"):
        fo.Dropout(rate)


@pytest.mark.parametrize("rate", [True, "0.5", None])
def test_rate_must_be_a_number(rate):
    with pytest.raises(TypeError, match="rate"):
        fo.Dropout(rate)


def test_dropout_config_round_trips():
    layer = fo.Dropout(0.25)
    assert layer.get_config() == {"rate": 0.25}
    assert repr(layer) == "Dropout(rate=0.25)"
