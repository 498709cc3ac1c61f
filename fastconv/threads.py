"""One thread count for every backend: the C kernels (OpenMP, passed explicitly on each call)
and the Numba kernels (prange).  Set with set_num_threads(n) or FASTCONV_NUM_THREADS.

Numba's own set_num_threads is thread-local, so the Numba wrappers apply this count in the
calling thread right before each launch (numba_launch_threads).
"""
from __future__ import annotations

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


def numba_launch_threads() -> None:
    """Apply the count to Numba in the calling thread (its setting is thread-local)."""
    if numba.get_num_threads() != _num_threads:
        numba.set_num_threads(_num_threads)
