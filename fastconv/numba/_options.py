"""Numba decorator policy for every fastconv kernel, in one place (stumpy's config.py pattern).

- ``FASTMATH`` lists the LLVM flags we allow.  It omits ``nnan`` and ``ninf`` on purpose: NaN and
  inf must propagate exactly as in PyTorch (max-pool's NaN rule, -inf padding), and with those
  flags LLVM may fold ``v != v`` to false.  ``reassoc`` and ``contract`` let reductions vectorize
  and use FMA, which changes rounding only within the registry's tolerances.
- ``driver`` is for the top-level kernel of an algorithm and pass (the one that uses ``prange``);
  ``helper`` for the functions it calls, which must live in the same file, because Numba's cache
  only notices edits to the decorated function's own file.
- The threading layer must survive concurrent calls from several Python threads, which Numba's
  ``workqueue`` layer does not (it aborts the process).  ``threadsafe`` takes OpenMP or TBB,
  whichever is present, unless the user chose a layer through NUMBA_THREADING_LAYER.  A user's
  choice is kept; when it ends on ``workqueue`` (asked for by name, or as what ``forksafe`` or
  ``default`` found), fastconv's parallel launches are serialized under one lock, so concurrent
  callers wait for each other instead of aborting the process.
- ``launch_threads`` applies fastconv's thread count (fastconv/threads.py) in the calling thread.
- A ``driver`` is a ``Driver``: the parallel kernel and its serial twin (the same Python function
  compiled with ``parallel=False``, prange as range, under a qualified name of its own so the two
  never share a cache entry), which runs in a forked child that must not launch a team
  (fastconv/threads.py).  The twin compiles on its first call, so a process that never forks never
  pays for it.
- **Vector ISA.**  Numba compiles for the host CPU (LLVM's CPU name and features; its cache is
  keyed on them), so the kernels use whatever vectors LLVM's tuning for that CPU prefers.  Per-path
  builds, as csrc/ has, are not possible: Numba takes target features only process-wide
  (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, read at import), and setting them would change every other
  Numba user's code in the process.  So FASTCONV_ISA governs the C kernels only.  LLVM 22 uses
  512-bit vectors on AMD Zen 4/5 (znver4/5) and prefers 256-bit ones on Intel's AVX-512 cores (its
  ``prefer-256-bit`` tuning).  Measured on AMD EPYC Zen 5 (znver5), 2 threads, float32, batch 1,
  medians of 7 interleaved runs, two processes each: the default (512-bit) against
  ``NUMBA_CPU_FEATURES=<host's>,+prefer-256-bit``, VGG-16 conv1_2 / conv3_2 / conv5_1 in ms --
  numba.direct 24.0-24.3 / 19.8-21.7 / 4.5-4.8 against 27.7-28.3 / 20.4-23.8 / 6.0-6.6;
  numba.winograd_f4k3 7.8 / 5.1-5.9 / 3.7-3.9 against 8.0-9.0 / 5.3-6.2 / 4.6-4.7; numba.im2col
  11.6-11.7 / 9.9-10.8 / 2.8-3.0 against 12.4-13.5 / 10.4-10.6 / 3.2-3.3.  So 512-bit is 5-25%
  faster where LLVM picks it.  On an Intel AVX-512 machine a user may set NUMBA_CPU_FEATURES to the
  host's features plus ``-prefer-256-bit`` before importing fastconv (not measured there).
"""
import os
import threading
import types

import numba

from .. import threads

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"

# fastconv's thread count may not exceed Numba's pool (its config may have been changed in code)
threads.limit_pool(int(numba.config.NUMBA_NUM_THREADS))


def launch_threads(spec=None) -> None:
    """Apply fastconv's count for spec (threads.for_problem) to Numba in the calling thread, right
    before a launch: Numba's setting is thread-local."""
    n = threads.for_problem(spec)
    if not threads.serial_only and numba.get_num_threads() != n:  # serial twins launch no team
        numba.set_num_threads(n)


class Driver:
    """A parallel kernel; calls go to its serial twin in a forked child that must run serially,
    and under the workqueue layer one at a time."""

    _lock = threading.Lock()
    _serialize = None  # unknown until the first launch tells the layer; then True (workqueue) or False

    def __init__(self, fn):
        self.py_func = fn
        self.parallel = numba.njit(parallel=True, cache=True, nogil=True, fastmath=set(FASTMATH))(fn)
        self._serial = None
        self.__name__, self.__qualname__, self.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__

    @property
    def serial(self):
        if self._serial is None:
            fn = self.py_func
            twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
            twin.__qualname__ = fn.__qualname__ + "__serial"  # its own cache file
            self._serial = numba.njit(parallel=False, cache=True, nogil=True, fastmath=set(FASTMATH))(twin)
        return self._serial

    def __call__(self, *args):
        if threads.serial_only:
            return self.serial(*args)
        if Driver._serialize is False:
            return self.parallel(*args)
        with Driver._lock:  # the first launches, and every launch under workqueue
            out = self.parallel(*args)
            if Driver._serialize is None:
                Driver._serialize = numba.threading_layer() == "workqueue"
            return out

    def __getattr__(self, name):  # the dispatcher's own attributes (stats, signatures, ...)
        return getattr(self.parallel, name)


def driver(fn):
    return Driver(fn)


def helper(fn):
    return numba.njit(cache=True, nogil=True, fastmath=set(FASTMATH), inline="always")(fn)
