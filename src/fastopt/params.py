"""ParamArena: every parameter in one contiguous buffer, every gradient in a second.

Layers reserve named slots while the model is built; the arena then allocates both
buffers once and layers keep views into them. One optimizer kernel call updates every
parameter, clipping by global norm is one reduction, saving is one array.

Slots that take weight decay come first, the rest after, so an optimizer applies its
decay to a few contiguous segments (``segments()``) instead of reading a per-element mask.

Each slot starts on a 64-byte boundary (a cache line, an AVX-512 vector) so no two
slots share a line; the padding between slots is zero in both buffers and stays zero
under every optimizer (a zero gradient on a zero parameter is a fixed point).
"""

from dataclasses import dataclass

import numpy as np

_ALIGN_BYTES = 64


@dataclass(frozen=True)
class Slot:
    """Where one named parameter lives in the arena."""

    layer: int        # index of the owning layer in the model
    name: str         # "W", "b", "gamma", ...
    shape: tuple
    offset: int       # in elements, from the start of the arena
    size: int
    decay: bool       # subject to weight decay / L1 (default: weights yes; biases, BN no)

    @property
    def key(self):
        return f"{self.layer}.{self.name}"


def aligned_zeros(n, dtype):
    """Zeros whose first element sits on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    itemsize = dtype.itemsize
    raw = np.zeros(n + _ALIGN_BYTES // itemsize, dtype=dtype)
    start = (-raw.ctypes.data % _ALIGN_BYTES) // itemsize
    return raw[start:start + n]


class ParamArena:
    """Reserve named slots, then allocate the parameter and gradient buffers once."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.slots = []
        self._requests = []
        self._by_key = {}
        self._size = 0
        self.data = None
        self.grad = None

    @property
    def size(self):
        """Elements in each buffer, padding included."""
        return self._size

    @property
    def n_params(self):
        """Trainable scalars, padding excluded."""
        return sum(slot.size for slot in self.slots)

    def reserve(self, layer, name, shape, decay):
        """Ask for a parameter; returns its Slot once ``allocate()`` has placed it."""
        if self.data is not None:
            raise RuntimeError("the arena is already allocated; reserve slots before allocate()")
        shape = tuple(int(d) for d in shape)
        size = int(np.prod(shape, dtype=np.int64))
        self._requests.append((layer, name, shape, size, bool(decay)))
        return (layer, name)

    def allocate(self):
        """Place every reserved slot (decayed ones first) and allocate both buffers."""
        per_line = _ALIGN_BYTES // self.dtype.itemsize
        ordered = ([r for r in self._requests if r[4]] + [r for r in self._requests if not r[4]])
        offset = 0
        for layer, name, shape, size, decay in ordered:
            offset = -(-offset // per_line) * per_line
            slot = Slot(layer, name, shape, offset, size, decay)
            self.slots.append(slot)
            self._by_key[(layer, name)] = slot
            offset += size
        self._size = offset
        self.data = aligned_zeros(self._size, self.dtype)
        self.grad = aligned_zeros(self._size, self.dtype)

    def slot(self, key):
        """The Slot reserved under ``key`` (what ``reserve`` returned)."""
        return self._by_key[key]

    def segments(self):
        """Contiguous runs ``(start, stop, decay)`` covering the whole buffer."""
        runs = []
        for slot in self.slots:
            start = runs[-1][1] if runs else 0
            stop = slot.offset + slot.size
            if runs and runs[-1][2] == slot.decay:
                runs[-1] = (runs[-1][0], stop, slot.decay)
            else:
                runs.append((start, stop, slot.decay))
        if runs:
            runs[-1] = (runs[-1][0], self._size, runs[-1][2])
        return runs

    def param(self, key):
        slot = self._by_key[key]
        return self.data[slot.offset:slot.offset + slot.size].reshape(slot.shape)

    def grad_of(self, key):
        slot = self._by_key[key]
        return self.grad[slot.offset:slot.offset + slot.size].reshape(slot.shape)

