"""The C backend: thin wrappers over the cffi extension fastconv._cconv, one file per algorithm
(csrc/<algo>.c holds the C).  It imports nothing of Numba.  ``BACKEND`` is its record for the
registry, the tuning cache key and the CLI (fastconv/backend.py)."""
from ..backend import Backend, sources_hash
from . import _lib


def _fingerprint() -> dict:
    return {"c_build": _lib.build_info(), "c_binary": _lib.binary_hash(), "c_sources": sources_hash("c"),
            "c_isa": _lib.isa()}


def _status() -> str:
    if _lib.lib is None:
        return f"C: {_lib.UNAVAILABLE}"
    forced = f" (FASTCONV_ISA; the CPU runs {_lib.cpu_isa()})" if _lib.isa() != _lib.cpu_isa() else ""
    return (f"C: ISA {_lib.isa()}{forced}, {'OpenMP' if _lib.has_openmp() else 'serial (no OpenMP)'}, "
            f"build {_lib.build_info()}")


def _isa() -> str:
    return _lib.isa() if _lib.lib is not None else "-"


BACKEND = Backend("c", _lib.UNAVAILABLE, _fingerprint, _status, _isa)
