"""Load the C extension, or record why it is missing; the one pointer-marshalling helper.

If ``fastconv._cconv`` cannot be imported (no compiler at install time), ``lib`` is None and
``UNAVAILABLE`` says why: every ``c.*`` kernel then refuses with that reason, ``auto`` stays on
Numba, and ``fastconv kernels`` shows it.  In a source checkout the build fingerprint baked into
the extension is compared with csrc/ to catch the classic stale editable install.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import warnings

import numpy as np

from .. import threads
from ..spec import ConvSpec, PoolBackwardSpec, PoolSpec, activation_code

try:
    # First: loads libscipy_openblas.so with RTLD_GLOBAL (the extension links it by soname, no
    # rpath) and sets its threads to 1.
    from ..common import openblas  # noqa: F401
    from .._cconv import ffi, lib

    UNAVAILABLE: str | None = None
except ImportError as exc:  # the optional extension was not built
    ffi = lib = None
    UNAVAILABLE = f"C extension not built ({exc}); reinstall with a C compiler (gcc) available"

# Keyed by the dtype itself: numpy's dtype.name costs ~2 us a call, a dict lookup of the (hashed,
# canonical: api._c made it so) descriptor ~50 ns, and a call passes three or four arrays.
_NULL, _from_buffer = (ffi.NULL, ffi.from_buffer) if ffi is not None else (None, None)
_CTYPES = {np.dtype(np.float32): "float[]", np.dtype(np.float64): "double[]", np.dtype(np.int64): "int64_t[]"}
ISA_NAMES = ("generic", "avx2", "avx512")  # FC_ISA_* of csrc/fastconv.h, in order


def _isa_from_environment() -> int:
    """The microkernels' ISA: FASTCONV_ISA (generic | avx2 | avx512) to force a lower path, else
    the best this CPU runs (cpuid, fc_cpu_isa).  A path above the CPU's is refused with a warning."""
    cpu = lib.fc_cpu_isa() if lib is not None else 0
    value = os.environ.get("FASTCONV_ISA", "").strip().lower()
    if value in ("", "auto"):
        return cpu
    if value not in ISA_NAMES:
        warnings.warn(f"fastconv: ignoring FASTCONV_ISA={value!r}: expected one of {', '.join(ISA_NAMES)}",
                      RuntimeWarning, stacklevel=2)
        return cpu
    if ISA_NAMES.index(value) > cpu:
        warnings.warn(f"fastconv: FASTCONV_ISA={value}: this CPU runs at most {ISA_NAMES[cpu]}; using "
                      f"{ISA_NAMES[cpu]}", RuntimeWarning, stacklevel=2)
        return cpu
    return ISA_NAMES.index(value)


ISA = _isa_from_environment()


def isa() -> str:
    """The ISA of the C microkernels in this process: 'avx512', 'avx2' or 'generic'."""
    return ISA_NAMES[ISA]


def cpu_isa() -> str:
    """The best ISA this CPU runs."""
    return ISA_NAMES[lib.fc_cpu_isa()] if lib is not None else "unknown"


FC_OK, FC_ENOMEM, FC_EINDEX, FC_ESIZE, FC_ENONFINITE = 0, 1, 2, 3, 4


def build_info() -> str:
    return ffi.string(lib.fc_build_info()).decode() if lib is not None else "not built"


def has_openmp() -> bool:
    return bool(lib is not None and lib.fc_has_openmp())


@functools.lru_cache(maxsize=1)
def binary_hash() -> str:
    """SHA-256 (16 hex digits) of the extension's file: compiler and flags included."""
    if lib is None:
        return "not built"
    try:
        with open(importlib.util.find_spec("fastconv._cconv").origin, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except (ImportError, AttributeError, OSError, TypeError):
        return "unreadable"


def _check_stale() -> None:
    """Warn when csrc/ beside the package no longer matches the sources the .so was built from."""
    csrc = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "csrc")
    if lib is None or not os.path.isdir(csrc):
        return
    from .._build_cffi import csrc_hash

    if f"csrc:{csrc_hash(csrc)}" not in build_info():
        warnings.warn("fastconv: the C extension is stale (csrc/ changed since it was built); "
                      "rebuild with `pip install -e .`", RuntimeWarning, stacklevel=3)


_check_stale()


def ptr(a: np.ndarray | None, *, out: bool = False):
    """A cffi pointer to a C-contiguous array's data (NULL for None); no copy.  out: the kernel
    writes it (the wrappers' own new arrays, writeable by construction).  The buffer protocol
    itself refuses an array that is not C-contiguous (ValueError "ndarray is not C-contiguous"),
    so no check is repeated here: every kernel call passes three to five of these, and cffi's
    require_writable keyword cost 0.2 us each, an assertion of the two flags 0.4 us (1.2 -> 0.5 us
    a pointer, Zen 3)."""
    return _NULL if a is None else _from_buffer(_CTYPES[a.dtype], a)


def weight_ptr(w: np.ndarray):
    """(pointer, fc_weight_strides * or NULL) for a weight: a C-contiguous OIHW array, or a
    (G, O/G, C/G, kH, kW) view of any strides that the kernel reads in place."""
    if w.ndim == 4:
        return ptr(w), ffi.NULL
    strides = dict(zip(("g", "o", "c", "i", "j"), (s // w.itemsize for s in w.strides)))
    return ffi.cast(_CTYPES[w.dtype][:-2] + " *", w.ctypes.data), ffi.new("fc_weight_strides *", strides)


def per_dtype(f32, f64) -> dict:
    """{dtype: C function} of a twin pair, fc_..._f32 and fc_..._f64, named whole by the caller
    (so a reader can follow a wrapper to its C symbol, and a call indexes a dict); the wrappers
    build these tables only when the extension is built (else no c.* kernel runs)."""
    return {"float32": f32, "float64": f64}


def check(status: int, what: str, index_error: Exception | None = None) -> None:
    if status == FC_OK:
        return
    if status == FC_ENOMEM:
        raise MemoryError(f"{what}: out of memory for the kernel's workspace")
    if status == FC_ESIZE:
        raise ValueError(f"{what}: a GEMM dimension of this problem exceeds OpenBLAS's 32-bit integers")
    if status == FC_EINDEX and index_error is not None:
        raise index_error
    raise RuntimeError(f"{what}: C kernel returned status {status}")


# The C shapes of the specs in use, by the spec's identity: api's memo hands a repeated call the
# same spec object, and hashing a spec (a dataclass of 12 fields) cost 1.6 us a call, a fifth of a
# small layer's kernel call.  Each entry holds its spec, so the id cannot be reused while it is kept.
_SHAPES: dict = {}
_SHAPES_MAX = 1024


def _by_identity(spec, make, act=None):
    key = id(spec) if act is None else (id(spec), act)
    hit = _SHAPES.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    if len(_SHAPES) >= _SHAPES_MAX:
        _SHAPES.clear()
    shape = make(spec) if act is None else make(spec, act)
    _SHAPES[key] = (spec, shape)
    return shape


def _conv_shape_with(spec: ConvSpec, act):
    shape = _conv_shape(spec)
    shape.act, shape.act_slope = activation_code(act)
    return shape


def _conv_shape(spec: ConvSpec):
    return ffi.new("fc_conv2d_shape *", dict(
        n=spec.n, c_in=spec.c_in, h=spec.h, w=spec.w, c_out=spec.c_out, kh=spec.kh, kw=spec.kw,
        out_h=spec.out_h, out_w=spec.out_w, stride_h=spec.stride[0], stride_w=spec.stride[1],
        pad_top=spec.padding[0], pad_left=spec.padding[2],
        dilation_h=spec.dilation[0], dilation_w=spec.dilation[1], groups=spec.groups, isa=ISA))


def _pool_shape(spec: PoolSpec | PoolBackwardSpec):
    if isinstance(spec, PoolBackwardSpec):  # backward reads only the plane sizes
        fields = dict(n=spec.n, c=spec.c, h=spec.h, w=spec.w, out_h=spec.out_h, out_w=spec.out_w)
    else:
        fields = dict(n=spec.n, c=spec.c, h=spec.h, w=spec.w, kh=spec.kernel[0], kw=spec.kernel[1],
                      out_h=spec.out_h, out_w=spec.out_w, stride_h=spec.stride[0], stride_w=spec.stride[1],
                      pad_h=spec.padding[0], pad_w=spec.padding[1],
                      dilation_h=spec.dilation[0], dilation_w=spec.dilation[1], isa=ISA)
    return ffi.new("fc_pool2d_shape *", fields)


def conv_shape(spec: ConvSpec, act=None):
    """The fc_conv2d_shape of spec (made once per spec object and activation, read-only to the C
    side); act: activation_arg's (name, slope), which a forward kernel applies to its outputs."""
    return _by_identity(spec, _conv_shape) if act is None else _by_identity(spec, _conv_shape_with, act)


def pool_shape(spec: PoolSpec | PoolBackwardSpec):
    """The fc_pool2d_shape of spec (made once per spec object)."""
    return _by_identity(spec, _pool_shape)


def workspace_kept_bytes() -> int:
    """Bytes of workspace the C kernels keep between calls (csrc/workspace.c: at most 8 blocks,
    256 MiB; blocks of 256 KiB and more), 0 without the extension."""
    return int(lib.fc_workspace_kept()) if lib is not None else 0


def release_workspace() -> None:
    """Hand the kept workspace blocks back to the system (the next big call allocates afresh)."""
    if lib is not None:
        lib.fc_workspace_release()


def n_threads(spec=None) -> int:
    """Threads for one call on spec (one for a small problem: threads.for_problem)."""
    return threads.for_problem(spec)
