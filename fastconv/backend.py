"""The record a backend package gives of itself (fastconv/c, fastconv/numba, the NumPy reference):
its name, why it cannot run here (or None), what a timing of its kernels depends on besides the
machine (the tuning cache keys on it: versions, build, a hash of its sources, the ISA path), one
line for ``fastconv kernels`` and the benchmarks' machine line, and the vector ISA its kernels
run (``explain`` names it beside the chosen kernel).  The registry lists the records; nothing
above it asks a backend package anything else.
"""
from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class Backend:
    name: str
    unavailable: Optional[str]                          # why its kernels cannot run here, or None
    fingerprint: Callable[[], dict] = field(repr=False)  # what its timings depend on: versions, build
    status: Callable[[], str] = field(repr=False)        # one line: "C: ISA avx512, OpenMP, build ..."
    isa: Callable[[], str] = field(repr=False)           # the vector ISA its kernels run: "avx512"


def sources_hash(*paths: str) -> str:
    """SHA-256 (16 hex digits) over the .py files of these package directories or files, names
    relative to the package root and contents: edits to a backend's Python change its fingerprint."""
    root = os.path.dirname(os.path.abspath(__file__))
    files = []
    for path in paths:
        path = os.path.join(root, path)
        files += sorted(glob.glob(os.path.join(path, "*.py"))) if os.path.isdir(path) else [path]
    digest = hashlib.sha256()
    for f in files:
        digest.update(os.path.relpath(f, root).encode())
        with open(f, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:16]
