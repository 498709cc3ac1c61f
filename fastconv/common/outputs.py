"""The kernels' output arrays: very large ones come from a pool of buffers nothing else references.

glibc's malloc reuses freed memory for arrays up to 32 MB (its mmap threshold rises to that as
large blocks are freed), but maps every larger one anew: each call's output is then new memory,
a page fault per page and a page the system zeroes before the kernel overwrites it, twice the
output's traffic to memory (it does not fit the last-level cache either).  MobileNet-v2's 16 -> 96
1x1 at 112x112, batch 8 (a 38.5 MB output) ran at 56-60 GFLOP/s into new arrays, 89-95 into
pooled ones; at batch 2 and 4 (9.6 and 19 MB) the pool made no difference (c.im2col, AMD EPYC
Zen 4, two alternating rounds).  ONNX Runtime's arena reuses its buffers likewise.  So an output of
POOL_MIN_BYTES or more is a view of a pooled buffer, handed out again only when the pool's
reference is its only one: every view of it holds one, and so does whatever holds a view (a torch
tensor made by torch.from_numpy), so a reused output is, to every caller, a new array.  The pool
keeps at most FASTCONV_OUTPUT_POOL_MB of buffers (default 512; 0 turns it off), dropping the
longest unused first; beyond that, outputs are new arrays.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import warnings

import numpy as np

POOL_MIN_BYTES = 32 << 20  # glibc's largest mmap threshold: below it, malloc reuses freed memory
DEFAULT_POOL_MB = 512
_ITEMSIZE = {"float32": 4, "float64": 8, np.float32: 4, np.float64: 8, np.int64: 8}  # the kernels' dtypes


def _pool_bytes_from_environment() -> int:
    value = os.environ.get("FASTCONV_OUTPUT_POOL_MB")
    if value is None:
        return DEFAULT_POOL_MB << 20
    try:
        mb = float(value)
        if mb < 0:
            raise ValueError
        return int(mb * (1 << 20))
    except ValueError:
        warnings.warn(f"fastconv: ignoring FASTCONV_OUTPUT_POOL_MB={value!r}: expected a number >= 0",
                      RuntimeWarning, stacklevel=2)
        return DEFAULT_POOL_MB << 20


_lock = threading.Lock()
_buffers: list[np.ndarray] = []  # uint8 buffers, the last handed out at the end
_pool_bytes = _pool_bytes_from_environment()


def _probe_free_refs() -> int:
    """The reference count sys.getrefcount reports for a buffer only the pool's list holds."""
    held = [np.empty(1, np.uint8)]
    return sys.getrefcount(held[0])


_FREE_REFS = _probe_free_refs()


def empty(shape, dtype) -> np.ndarray:
    """np.empty(shape, dtype), from a free pooled buffer of its size when it is large."""
    a = _pooled(shape, dtype)
    return np.empty(shape, dtype) if a is None else a


def zeros(shape, dtype) -> np.ndarray:
    """np.zeros(shape, dtype), from a free pooled buffer of its size when it is large."""
    a = _pooled(shape, dtype)
    if a is None:
        return np.zeros(shape, dtype)
    a.fill(0)
    return a


def _pooled(shape, dtype):
    """An array over a free pooled buffer, or None (small, or no room)."""
    nbytes = math.prod(shape) * (_ITEMSIZE.get(dtype) or np.dtype(dtype).itemsize)  # (np.prod: 3 us a call)
    buf = None if nbytes < POOL_MIN_BYTES else _take(nbytes)
    return None if buf is None else buf.view(dtype).reshape(shape)


def _take(nbytes: int):
    """A pooled buffer of nbytes that nothing else references, new if none is free; None for a
    size the pool does not serve or has no room for."""
    if nbytes > _pool_bytes:
        return None
    with _lock:
        for i in range(len(_buffers) - 1, -1, -1):
            if _buffers[i].nbytes == nbytes and sys.getrefcount(_buffers[i]) == _FREE_REFS:
                buf = _buffers.pop(i)
                break
        else:
            buf = _new_buffer(nbytes)
            if buf is None:
                return None
        _buffers.append(buf)  # the most recently handed out last
        return buf


def _new_buffer(nbytes: int):
    """A new buffer, free ones dropped to make room; None if the ones in use leave none (the
    caller's lock held)."""
    total = _drop_free_over(_pool_bytes - nbytes)
    return np.empty(nbytes, np.uint8) if total + nbytes <= _pool_bytes else None


def _drop_free_over(bound: int) -> int:
    """Drop free buffers, the least recently handed out first, while the pool holds more than
    bound bytes; the bytes it holds then (the caller's lock held)."""
    i, total = 0, sum(b.nbytes for b in _buffers)
    while total > bound and i < len(_buffers):
        if sys.getrefcount(_buffers[i]) == _FREE_REFS:
            total -= _buffers.pop(i).nbytes
        else:
            i += 1
    return total


def set_pool_bytes(n: int) -> None:
    """Bound the pool (bytes of buffers kept, in use or free; 0: no pool), dropping free buffers
    over the new bound."""
    global _pool_bytes
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_pool_bytes: n={n!r} must be an int")
    if n < 0:
        raise ValueError(f"set_pool_bytes: n={n} must be >= 0")
    with _lock:
        _pool_bytes = n
        _drop_free_over(n)


def pooled_bytes() -> tuple[int, int]:
    """(bytes of pooled buffers in use, bytes free)."""
    with _lock:  # (by index: a loop variable would hold a reference of its own)
        busy = sum(_buffers[i].nbytes for i in range(len(_buffers)) if sys.getrefcount(_buffers[i]) > _FREE_REFS)
        return busy, sum(b.nbytes for b in _buffers) - busy


def _after_fork_in_child() -> None:
    """A fork while another thread held the lock would leave the child's copy locked forever."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
