"""What the Winograd kernels of both backends share: eligibility and the transformed-filter cache,
which also tells whether the weights are finite (inf and NaN: fastconv/common/nonfinite.py).

The kernels themselves are twins, fastconv/numba/winograd.py and csrc/winograd.c (phases
transform_filter, transform_input, batched_gemm, transform_output); the matrices come from
fastconv/common/winograd_points.py.

Filter transforms cost once, not per call, where the weights do not change (inference): the
cache keeps, per kernel, a copy of the weights it transformed and the transform.  A call whose
weights equal a kept copy (same values, compared in full) reuses that transform; any other call
transforms again.  So a transform is never stale: in-place updates, a new array at a reused
address, or NaNs (never equal) all miss.  The comparison reads the weights once, a fraction of
what transforming them costs (the transform is (m + 2)^2 / 9 times larger than the weights).
``transformed`` is the one entry point of both backends: it views OIHW weights as (G, O/G, C/G, 3, 3)
(so the key, the weight shape, carries the groups the packing depends on), and for grad of input,
whose flipped, transposed weight is a strided view, it keeps and compares the contiguous OIHW
weights the view is made of, under a key of its own (forward and backward then do not evict each
other; comparing a contiguous array is 2.7x faster: VGG conv5_1, 0.86 against 2.35 ms a call).
Several weights of one shape are kept side by side (VGG-16's conv5_1 to conv5_3 share theirs),
the one at the caller's address compared first; a miss replaces the entry of the weights at that
address, if any (an in-place update leaves nothing worth keeping).  The cache is bounded in bytes
and in entries per shape and drops the least recently used entries first; ``FILTERS.clear()``
empties it.  The byte bound (``FILTERS.max_bytes``; default 1 GiB, or FASTCONV_FILTER_CACHE_MB)
must hold a whole network's transforms, or a forward pass through it evicts every entry before
its next use: VGG-16's 3x3 layers keep 294 MB under F(4x4,3x3) (weights plus transforms).

The comparison is not free on big layers (512 x 512 x 3 x 3: 0.85 ms a call, single-threaded, of
VGG conv4_2's ~9 ms).  A caller that owns its weights and knows when they change (fastconv.torch's
FusedConv2d, by torch's version counters) can vouch for them: inside ``trusted(address, token)``
the entry at that address that was validated under the same token is reused without comparing.
A new token (the caller's weights changed, or a new array took the address) compares in full once.
"""
from __future__ import annotations

import contextvars
import threading
from collections import OrderedDict
from typing import Callable, Optional

import numpy as np

from . import config
from .nonfinite import NonFinite

DEFAULT_CACHE_BYTES = 1 << 30

# Accepted error per output tile m, max |err| / max |y| (the registry's rtol).  Measured in
# float32 on every VGG-16 3x3 layer: F2 <= 9.8e-7, F4 <= 2.1e-5 (float64: 4.6e-15, 3.4e-14); on
# small random shapes hypothesis found F2 at 2.3e-6, so the bounds keep headroom.
RTOL = {2: {"float32": 1e-5, "float64": 1e-13}, 4: {"float32": 5e-5, "float64": 1e-12}}
DEFAULT_PER_SHAPE = 8

# (weights' data address, token) that the current call's caller vouches for, or None: see above.
TRUSTED: contextvars.ContextVar = contextvars.ContextVar("fastconv_trusted_weights", default=None)


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
    """Transformed filters keyed by (kernel, weight shape, dtype, address), validated by value."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, per_shape: int = DEFAULT_PER_SHAPE):
        self.max_bytes = max_bytes
        self.per_shape = per_shape  # entries kept per (kernel, shape, dtype)
        self._entries: OrderedDict = OrderedDict()  # key -> (weights copy, transform, finite, token), LRU first
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, kernel: str, w: np.ndarray, transform: Callable[[np.ndarray], tuple[np.ndarray, bool]]) -> np.ndarray:
        """u of (u, finite) = transform(w), or the u kept from an earlier call with equal weights;
        NonFinite when it holds inf or NaN (weights that do: the call must go elsewhere)."""
        if config.WEIGHTS_VARY.get():  # new weights every call: transform, keep nothing
            u, ok = transform(w)
            if not ok:
                raise NonFinite(kernel)
            return u
        kind = (kernel, w.shape, w.dtype.str)
        key = kind + (w.__array_interface__["data"][0],)
        trusted = TRUSTED.get()
        token = trusted[1] if trusted is not None and trusted[0] == key[3] else None
        with self._lock:
            entry = self._entries.get(key) if token is not None else None
            if entry is not None and entry[3] == token:  # vouched for: no comparison
                self._entries.move_to_end(key)
                self.hits += 1
                if not entry[2]:
                    raise NonFinite(kernel)
                return entry[1]
            same = [k for k in reversed(self._entries) if k[:3] == kind]  # most recent first
            same.sort(key=lambda k: k != key)  # the entry at w's address first
            for k in same:
                copy, u, ok, _ = self._entries[k]
                if _equal(copy, w):
                    self._entries.move_to_end(k)
                    if token is not None and k == key:
                        self._entries[k] = (copy, u, ok, token)
                    self.hits += 1
                    if not ok:
                        raise NonFinite(kernel)
                    return u
        u, ok = transform(w)  # ok: u is finite, told once per weight values, as the transform
        with self._lock:
            self.misses += 1
            self._entries[key] = (np.array(w, copy=True), u, ok, token)
            self._entries.move_to_end(key)
            same = [k for k in self._entries if k[:3] == kind]
            for k in same[:max(0, len(same) - self.per_shape)]:
                del self._entries[k]
            while len(self._entries) > 1 and self.nbytes > self.max_bytes:
                self._entries.popitem(last=False)
        if not ok:
            raise NonFinite(kernel)
        return u

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes + u.nbytes for w, u, _, _ in self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


def _equal(kept: np.ndarray, w: np.ndarray) -> bool:
    """Same values (NaN never equal), the first few compared first: weights that differ usually
    differ there, so a miss against a kept entry of the same shape costs little."""
    return np.array_equal(kept.flat[:256], w.flat[:256]) and np.array_equal(kept, w)


FILTERS = FilterCache(config.mb_from_environment("FASTCONV_FILTER_CACHE_MB", DEFAULT_CACHE_BYTES))


_SCRATCH = threading.local()


def buffer(size: int, dtype) -> np.ndarray:
    """A 1-d array of size elements for a transform: new where FILTERS may keep it; under
    WEIGHTS_VARY (the transform lives for one call) a view of the calling thread's scratch,
    reused from call to call.  A new array of a large transform is fresh pages every call (NumPy
    maps arrays over 32 MB anew): 512 x 512 filters, F(4x4, 3x3), 37.7 MB, took 10.6 ms to
    transform into a new array against 5.2 into a used one (Intel Xeon model 207, 2 threads)."""
    dtype = np.dtype(dtype)
    if not config.WEIGHTS_VARY.get():
        return np.empty(size, dtype)
    kept = getattr(_SCRATCH, "bytes", None)
    if kept is None or kept.nbytes < size * dtype.itemsize:
        kept = _SCRATCH.bytes = np.empty(size * dtype.itemsize, np.uint8)
    return kept[:size * dtype.itemsize].view(dtype)


def transformed(kernel: str, spec, w: np.ndarray, transform: Callable[[np.ndarray], tuple[np.ndarray, bool]],
                source: Optional[np.ndarray] = None) -> np.ndarray:
    """u of (u, finite) = transform(w5), w viewed as (G, O/G, C/G, 3, 3), or the u FILTERS keeps
    for equal weights.  source: for grad of input, the OIHW weights the transposed view w is made of."""
    G = spec.groups
    w5 = w.reshape(G, spec.c_out // G, spec.c_in // G, 3, 3) if w.ndim == 4 else w
    if source is None:
        return FILTERS.get(kernel, w5, transform)
    kept = source.reshape(G, source.shape[0] // G, -1, 3, 3)
    return FILTERS.get(kernel + " (transposed)", kept, lambda _: transform(w5))
