"""Numba decorator policy for every fastconv kernel, in one place (stumpy's config.py pattern).

- ``FASTMATH`` lists the LLVM flags we allow.  It omits ``nnan`` and ``ninf`` on purpose: NaN and
  inf must propagate exactly as in PyTorch (max-pool's NaN rule, -inf padding), and with those
  flags LLVM may fold ``v != v`` to false.  ``reassoc`` and ``contract`` let reductions vectorize
  and use FMA, which changes rounding only within the registry's tolerances.
- ``driver`` is for the top-level kernel of an algorithm and pass (the one that uses ``prange``);
  ``helper`` for the functions it calls, which must live in the same file, because Numba's cache
  only notices edits to the decorated function's own file.
- The threading layer must survive concurrent calls from several Python threads, which Numba's
  default ``workqueue`` layer does not (it aborts the process).  ``threadsafe`` takes OpenMP or
  TBB, whichever is present, unless the user chose a layer through NUMBA_THREADING_LAYER.
"""
import os

import numba

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"


def driver(fn):
    return numba.njit(parallel=True, cache=True, nogil=True, fastmath=set(FASTMATH))(fn)


def helper(fn):
    return numba.njit(cache=True, nogil=True, fastmath=set(FASTMATH), inline="always")(fn)
