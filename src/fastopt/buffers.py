"""Per-batch-size buffers, the one cache that layers, losses, metrics and the Distiller use.

Buffers are made for the largest batch seen (per key) and served as row views, cached per
batch size, so a training loop allocates nothing once its batch sizes have been seen; the
view cache is bounded so a stream of ever-new batch sizes stays small.
"""

import numpy as np

__all__ = ["RowBuffers"]


def _rows_of(arrays, rows):
    if isinstance(arrays, dict):
        return {name: a[:rows] for name, a in arrays.items()}
    if isinstance(arrays, tuple):
        return tuple(a[:rows] for a in arrays)
    return arrays[:rows]


class RowBuffers:
    """``get(rows, key)``: the arrays ``make(capacity, key)`` returns (an array, a tuple or
    a dict of arrays with a leading row axis), cut to ``rows`` rows."""

    def __init__(self, make, max_views=8):
        self._make = make
        self._max_views = max_views
        self._full = {}      # key -> (capacity, arrays)
        self._views = {}     # (rows, key) -> views

    @classmethod
    def named(cls, names, width, dtype):
        """Buffers of one (rows, width) array per name, as a dict."""
        return cls(lambda rows, key: {name: np.empty((rows, width), dtype) for name in names})

    def get(self, rows, key=None):
        views = self._views.get((rows, key))
        if views is None:
            capacity, full = self._full.get(key, (0, None))
            if rows > capacity:
                full = self._make(rows, key)
                self._full[key] = (rows, full)
                self._views = {k: v for k, v in self._views.items() if k[1] != key}
            if len(self._views) >= self._max_views:
                self._views.clear()
            views = self._views[(rows, key)] = _rows_of(full, rows)
        return views
