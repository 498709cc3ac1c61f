"""What the Winograd kernels of both backends share: eligibility and the transformed-filter cache.

The kernels themselves are twins, fastconv/numba/winograd.py and csrc/winograd.c (phases
transform_filter, transform_input, batched_gemm, transform_output); the matrices come from
fastconv/winograd_points.py.

Filter transforms cost once, not per call, where the weights do not change (inference): the
cache keeps, per kernel and weight shape, a copy of the weights it transformed and the transform.
A call whose weights equal the copy (same values, compared in full) reuses the transform; any
other call transforms again and replaces the entry.  So a transform is never stale: in-place
updates, a new array at a reused address, or NaNs (never equal) all miss.  The comparison reads
the weights once, a fraction of what transforming them costs (the transform is (m + 2)^2 / 9
times larger than the weights).  The cache is bounded in bytes and drops the least recently used
entries first; ``FILTERS.clear()`` empties it.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Optional

import numpy as np

DEFAULT_CACHE_BYTES = 256 << 20


def why_not(spec) -> Optional[str]:
    """Why a Winograd F(m x m, 3 x 3) kernel cannot serve spec, or None (any m)."""
    if (spec.kh, spec.kw) != (3, 3):
        return f"needs a 3x3 filter, got {spec.kh}x{spec.kw}"
    if spec.stride != (1, 1):
        return f"needs stride 1, got {spec.stride[0] if spec.stride[0] == spec.stride[1] else spec.stride}"
    if spec.dilation != (1, 1):
        return f"needs dilation 1, got {spec.dilation[0] if spec.dilation[0] == spec.dilation[1] else spec.dilation}"
    return None


class FilterCache:
    """Transformed filters keyed by (kernel, weight shape and strides, dtype), validated by value."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict = OrderedDict()  # key -> (weights copy, transform)
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, kernel: str, w: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """transform(w), or the transform kept from an earlier call with equal weights."""
        key = (kernel, w.shape, w.dtype.str)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and np.array_equal(entry[0], w):
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
        u = transform(w)
        with self._lock:
            self.misses += 1
            self._entries[key] = (np.array(w, copy=True), u)
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and self.nbytes > self.max_bytes:
                self._entries.popitem(last=False)
        return u

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes + u.nbytes for w, u in self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


FILTERS = FilterCache()
