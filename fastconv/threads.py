"""One thread count for every backend: the C kernels (OpenMP, passed explicitly on each call)
and the Numba kernels (prange).  Set with set_num_threads(n) or FASTCONV_NUM_THREADS (else
OMP_NUM_THREADS, as torch and OpenBLAS read it).

Backend-neutral: nothing here imports a backend (the C path runs without Numba).  The count is
bounded by the thread pool every backend can run: NUMBA_NUM_THREADS, else the CPUs this process
may run on (the rule of Numba's own pool size; a backend whose pool is smaller lowers the bound
with limit_pool).  Numba's set_num_threads is thread-local, so the Numba wrappers apply the count
in the calling thread right before each launch (fastconv/numba/_options.py: launch_threads).

Every launch goes through for_problem, which also keeps two promises:

- **fork.**  GNU OpenMP is not fork-safe: a child forked after the parent ran a team hangs in its
  next parallel region (libgomp's pool threads are gone, its barrier waits for them), and Numba's
  OpenMP layer kills a child that launches a parallel loop once the parent has (``Terminating:
  fork() called from a process already using GNU OpenMP``), whatever the thread count.  So a child
  forked after this process launched a kernel (multiprocessing's default start method on Linux,
  DataLoader workers) runs every kernel serially: the C kernels on one thread (libgomp runs a
  team of one without its pool) and the Numba kernels as their serial twins (fastconv/numba/
  _options.py), compiled on first use in the child.  A child of a process that launched nothing
  keeps its threads.  (Another library's GNU OpenMP team in the parent is not seen: call
  set_num_threads(1) in such workers.)
- **BLAS inside parallel regions.**  The GEMMs run inside fastconv's own OpenMP/prange tasks, one
  per thread, on a private OpenBLAS set to one thread (fastconv/common/openblas.py).  Another library may
  change that (threadpoolctl's threadpool_limits(2), as scikit-learn users and benchmark harnesses
  call, reaches every OpenBLAS of the process): each task then ran 2 OpenBLAS threads (c.im2col on
  a 256-channel 14x14 layer went from 1.1 to 7.9 ms) and OpenBLAS printed "Detect OpenMP Loop and
  this application may hang" on every call.  So every launch first puts it back to one thread.
"""
from __future__ import annotations

import math
import os
import warnings

from .common import openblas


def _pool_from_environment() -> int:
    """NUMBA_NUM_THREADS when it is a positive int, else the CPUs this process may run on."""
    try:
        n = int(os.environ.get("NUMBA_NUM_THREADS", ""))
        if n >= 1:
            return n
    except ValueError:
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


_pool = _pool_from_environment()


def max_threads() -> int:
    """The most threads one call may use: the thread pool every backend can run."""
    return _pool


def limit_pool(n: int) -> None:
    """A backend's pool holds only n threads (Numba's, when its config was changed in code):
    bound the count by it.  Called by a backend package at import."""
    global _pool, _num_threads
    if n < _pool:
        _pool = max(1, n)
        _num_threads = min(_num_threads, _pool)


def _validated(n, source: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n={n!r} must be an int")
    if not 1 <= n <= max_threads():
        raise ValueError(f"set_num_threads: n={n} must be between 1 and {max_threads()} "
                         f"(the thread pool size; raise NUMBA_NUM_THREADS for more){source}")
    return n


def _from_environment() -> int:
    """FASTCONV_NUM_THREADS; else OMP_NUM_THREADS (its first level, at most the pool), which the
    launchers of several processes per machine set to divide the cores (torchrun sets 1, and
    torch follows it); else the whole pool."""
    value = os.environ.get("FASTCONV_NUM_THREADS")
    if value is None:
        omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        return min(int(omp), max_threads()) if omp.isdigit() and int(omp) >= 1 else max_threads()
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


# Below this much work (FLOPs; for max-pool its window taps, POOL_WORK_PER_TAP each, or for its
# backward twice the input's size) a call runs on one thread.
# Waking a team costs microseconds on an idle machine, but on a busy one every parallel region
# waits for a time slice on each core: measured with 2 threads while other processes kept both
# cores busy, a 2x4x7x6 conv took 11-23 ms, against 12-50 us on one thread.  2^20 FLOPs is about
# 20 us of one core's work, where a second thread could save little anyway (PyTorch's parallel_for
# has the same kind of grain size).
SERIAL_WORK = 1 << 20
# A depthwise layer (one input channel per group) streams its planes at a few FLOPs per byte, so a
# FLOP of it costs several of a dense layer's: c.depthwise ran MobileNet-v2's 960 x 7 x 7 layer
# (0.85 MFLOP) at 7 GFLOP/s on one core, 121 us, where 2^20 FLOPs of a dense layer take about 20
# (Intel Xeon, AVX-512).  Its work counts its FLOPs this many times.
DEPTHWISE_WORK_PER_FLOP = 8
# A max-pool tap (a load, a compare, one or two selects) costs tens of FLOPs of a dense layer:
# AlexNet's pool5 (256 planes of 13x13, 3x3/2: 83k taps) took 194 us on one core of AMD EPYC
# Zen 3, 2.3 ns a tap, yet counted as twice its input (86k) it stayed on one thread, 0.66x the
# speed of torch's two.
POOL_WORK_PER_TAP = 64


_launched = False  # this process has launched a kernel (an OpenMP team, a Numba parallel loop)
serial_only = False  # a child forked after its parent launched one: every kernel runs serially


def _after_fork_in_child() -> None:
    global serial_only
    serial_only = serial_only or _launched


os.register_at_fork(after_in_child=_after_fork_in_child)


def for_problem(spec=None) -> int:
    """The threads one call on spec should use: the set count, or 1 for a small problem or in a
    forked child that must run serially.  Called right before every launch (see above)."""
    global _launched
    _launched = True
    openblas.keep_single_threaded()
    if serial_only:
        return 1
    if spec is None:
        return _num_threads
    if hasattr(spec, "flops"):
        work = spec.flops * (DEPTHWISE_WORK_PER_FLOP if spec.c_in == spec.groups > 1 else 1)
    elif hasattr(spec, "kernel"):  # a max-pool forward
        work = POOL_WORK_PER_TAP * math.prod(spec.output_shape) * math.prod(spec.kernel)
    else:
        work = 2 * math.prod(spec.input_shape)
    return 1 if work < SERIAL_WORK else _num_threads


def in_force() -> dict:
    """The thread counts in force (``fastconv kernels`` prints them)."""
    return {"fastconv": _num_threads, "pool": max_threads(), "openblas_per_task": openblas.num_threads(),
            "serial_only": serial_only}
