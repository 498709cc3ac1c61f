"""One thread count for every backend: the C kernels (OpenMP, passed explicitly on each call)
and the Numba kernels (prange).  Set with set_num_threads(n) or FASTCONV_NUM_THREADS.

Numba's own set_num_threads is thread-local, so the Numba wrappers apply this count in the
calling thread right before each launch (numba_launch_threads).
"""
from __future__ import annotations

import math
import os
import warnings

import numba


def max_threads() -> int:
    """The size of Numba's thread pool (NUMBA_NUM_THREADS, default: the CPU count)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def _validated(n, source: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n={n!r} must be an int")
    if not 1 <= n <= max_threads():
        raise ValueError(f"set_num_threads: n={n} must be between 1 and {max_threads()} "
                         f"(the thread pool size; raise NUMBA_NUM_THREADS for more){source}")
    return n


def _from_environment() -> int:
    value = os.environ.get("FASTCONV_NUM_THREADS")
    if value is None:
        return max_threads()
    try:
        return _validated(int(value), " (from FASTCONV_NUM_THREADS)")
    except (TypeError, ValueError) as exc:
        warnings.warn(f"fastconv: ignoring FASTCONV_NUM_THREADS={value!r}: {exc}", RuntimeWarning, stacklevel=2)
        return max_threads()


_num_threads = _from_environment()


def set_num_threads(n: int) -> None:
    """Use n threads in every fastconv kernel (C and Numba)."""
    global _num_threads
    _num_threads = _validated(n, "")


def get_num_threads() -> int:
    return _num_threads


# Below this much work (FLOPs, or for max-pool twice the input's size) a call runs on one thread.
# Waking a team costs microseconds on an idle machine, but on a busy one every parallel region
# waits for a time slice on each core: measured with 2 threads while other processes kept both
# cores busy, a 2x4x7x6 conv took 11-23 ms, against 12-50 us on one thread.  2^20 FLOPs is about
# 20 us of one core's work, where a second thread could save little anyway (PyTorch's parallel_for
# has the same kind of grain size).
SERIAL_WORK = 1 << 20


def for_problem(spec=None) -> int:
    """The threads one call on spec should use: the set count, or 1 for a small problem."""
    if spec is None:
        return _num_threads
    work = spec.flops if hasattr(spec, "flops") else 2 * math.prod(spec.input_shape)
    return 1 if work < SERIAL_WORK else _num_threads


def numba_launch_threads(spec=None) -> None:
    """Apply the count for spec to Numba in the calling thread (its setting is thread-local)."""
    n = for_problem(spec)
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
