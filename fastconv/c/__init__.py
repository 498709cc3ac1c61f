"""The C backend: thin wrappers over the cffi extension fastconv._cconv, one file per algorithm
(csrc/<algo>.c holds the C).  It imports nothing of Numba.  ``BACKEND`` is its record for the
registry, the tuning cache key and the CLI (fastconv/backend.py)."""
from ..backend import Backend, sources_hash
from . import _lib


def _fingerprint() -> dict:
    return {"c_build": _lib.build_info(), "c_binary": _lib.binary_hash(), "c_sources": sources_hash("c")}


def _status() -> str:
    if _lib.lib is None:
        return f"C: {_lib.UNAVAILABLE}"
    return f"C: {'OpenMP' if _lib.has_openmp() else 'serial (no OpenMP)'}, build {_lib.build_info()}"


BACKEND = Backend("c", _lib.UNAVAILABLE, _fingerprint, _status)
