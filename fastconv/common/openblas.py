"""The one OpenBLAS both backends call: the scipy-openblas32 wheel's, loaded and configured here.

A process running fastconv holds several OpenBLAS copies (numpy and scipy vendor their own); the
C extension links this one by soname (no rpath), and the Numba kernels call it through the symbol
addresses below (fastconv/numba/_blas.py), so the C and Numba GEMMs run the same code.
Importing this module raises ImportError when the wheel is missing.

The library is loaded with RTLD_LOCAL, without importing the scipy_openblas32 package, whose
import loads it RTLD_GLOBAL on purpose (to serve numpy/scipy builds linked against it).  Globally,
its ``scipy_*`` symbols would shadow those of scipy's own bundled OpenBLAS, which exports the
same names: every scipy BLAS module loaded afterwards (scipy.linalg, cython_blas, hence np.dot in
Numba code) would run this copy, pinned to one thread below.  Measured, float32 2048^2 on 2 cores,
with the global load: np.dot in njit 94 GFLOP/s instead of 157, scipy.linalg.blas.sgemm 67
instead of 103.  Loaded locally, the C extension still finds it (the dynamic loader matches its
DT_NEEDED soname against libraries already loaded) and nothing else sees it.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os


def _library_path() -> str:
    """The wheel's libscipy_openblas*.so, found without importing the package (see above)."""
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("fastconv needs the scipy-openblas32 package (pip install scipy-openblas32)")
    lib_dir = os.path.join(spec.submodule_search_locations[0], "lib")
    names = sorted(f for f in os.listdir(lib_dir) if f.startswith("libscipy_openblas") and ".so" in f)
    if not names:
        raise ImportError(f"scipy-openblas32 has no libscipy_openblas*.so in {lib_dir}")
    return os.path.join(lib_dir, names[0])


# Must happen before the C extension is imported: it links the library by soname, with no rpath.
lib = ctypes.CDLL(_library_path(), mode=os.RTLD_LOCAL)

# The GEMMs run inside OpenMP tasks (C) or prange tasks (Numba), one per thread: OpenBLAS's own
# pool would only oversubscribe the cores.  This copy of OpenBLAS is the scipy-openblas32 wheel's
# (numpy and scipy vendor their own), and this build exports no thread-local setter.
lib.scipy_openblas_set_num_threads(1)
_get_threads = lib.scipy_openblas_get_num_threads


def keep_single_threaded() -> None:
    """Put the library back to one thread if another library changed it (threadpoolctl's
    threadpool_limits reaches this copy too: fastconv/threads.py).  One C call, ~0.1 us."""
    if _get_threads() != 1:
        lib.scipy_openblas_set_num_threads(1)


def num_threads() -> int:
    return _get_threads()


def version() -> str:
    """The scipy-openblas32 wheel's version ("unknown" when its metadata is missing)."""
    try:
        from importlib.metadata import version as installed
        return installed("scipy-openblas32")
    except Exception:  # noqa: BLE001 - metadata missing in odd installs
        return "unknown"


def address(symbol: str) -> int:
    """The address of one of the library's C functions, e.g. ``scipy_cblas_sgemm``."""
    return ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
