"""The one OpenBLAS both backends call: the scipy-openblas32 wheel's, loaded and configured here.

A process running fastconv holds several OpenBLAS copies (numpy and scipy vendor their own); the
C extension links this one by soname (no rpath), and the Numba kernels call it through the symbol
addresses below (fastconv/numba/_blas.py), so the C and Numba GEMMs run the same code.
Importing this module raises ImportError when the wheel is missing.

A side effect of the global load (scipy_openblas32 does it on import): scipy's bundled OpenBLAS
exports the same ``scipy_*`` names, so scipy's BLAS modules loaded after this one (scipy.linalg,
cython_blas, hence ``np.dot`` in Numba code) bind to this copy and its single thread.  Measured,
float32 2048^2 on 2 cores, imported after / before fastconv: np.dot in njit 94 / 157 GFLOP/s,
scipy.linalg.blas.sgemm 67 / 103.
"""
from __future__ import annotations

import ctypes

# Loads libscipy_openblas.so with RTLD_GLOBAL (scipy_openblas32.dll is that handle): the C
# extension, which links it by soname, must be imported after this module.
import scipy_openblas32

lib = scipy_openblas32.dll

# The GEMMs run inside OpenMP tasks (C) or prange tasks (Numba), one per thread: OpenBLAS's own
# pool would only oversubscribe the cores.  This copy of OpenBLAS is the scipy-openblas32 wheel's
# (numpy and scipy vendor their own), and this build exports no thread-local setter.
lib.scipy_openblas_set_num_threads(1)


def address(symbol: str) -> int:
    """The address of one of the library's C functions, e.g. ``scipy_cblas_sgemm``."""
    return ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
