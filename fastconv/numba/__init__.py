"""The Numba backend: kernels one file per algorithm, decorator and thread policy in _options.py.
``BACKEND`` is its record for the registry, the tuning cache key and the CLI (fastconv/backend.py)."""
import numba

from .. import machine
from ..backend import Backend, sources_hash
from . import _options  # noqa: F401 - the threading layer and the thread bound, before any kernel


def _fingerprint() -> dict:
    return {"numba": numba.__version__, "numba_sources": sources_hash("numba")}


def _status() -> str:
    return (f"Numba: numba {numba.__version__}, threading layer {numba.config.THREADING_LAYER} "
            f"(pool {numba.config.NUMBA_NUM_THREADS})")


def _isa() -> str:
    return f"{machine.isa_path()} (LLVM for the host CPU)"


BACKEND = Backend("numba", None, _fingerprint, _status, _isa)
