"""ParamArena: layout, alignment and decay segments."""

import numpy as np
import pytest

import fastopt as fo
from fastopt.params import ParamArena


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_slots_are_aligned_and_decayed_ones_come_first(dtype):
    arena = ParamArena(dtype)
    keys = [arena.reserve(0, "W", (7, 3), True), arena.reserve(0, "b", (7,), False),
            arena.reserve(1, "W", (2, 7), True), arena.reserve(1, "b", (2,), False)]
    arena.allocate()
    slots = [arena.slot(k) for k in keys]
    assert [s.decay for s in arena.slots] == [True, True, False, False]
    for s in slots:
        assert (arena.data[s.offset:].ctypes.data % 64) == 0
    segments = arena.segments()
    assert segments[0][0] == 0 and segments[-1][1] == arena.size
    assert [d for _, _, d in segments] == [True, False]
    decayed = np.zeros(arena.size, bool)
    for start, stop, d in segments:
        decayed[start:stop] = d
    for s in slots:
        assert decayed[s.offset:s.offset + s.size].all() == s.decay
    assert arena.n_params == 21 + 7 + 14 + 2
    assert not arena.data.any() and not arena.grad.any()


def test_layers_can_override_which_parameters_decay():
    model = fo.Sequential([fo.Dense(4, decay={"b": True}), fo.Dense(2, decay={"W": False})], input_dim=3)
    decay = {(s.layer, s.name): s.decay for s in model.arena.slots}
    assert decay == {(0, "W"): True, (0, "b"): True, (1, "W"): False, (1, "b"): False}


def test_reserving_after_allocation_is_an_error():
    arena = ParamArena(np.float32)
    arena.reserve(0, "W", (2, 2), True)
    arena.allocate()
    with pytest.raises(RuntimeError, match="already allocated"):
        arena.reserve(0, "b", (2,), False)
