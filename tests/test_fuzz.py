"""Fuzzing every public function of fastconv (issue 12): random valid and invalid arguments.

What is fuzzed: ``fastconv.conv2d``, ``conv2d_backward``, ``max_pool2d``, ``max_pool2d_backward``,
``explain``, ``tune`` (cheap problems only), ``kernels`` (and every kernel's ``refusal``),
``set_num_threads``, the ``fastconv.reference`` oracle itself, and ``fastconv.torch``'s
``conv2d`` / ``max_pool2d`` / ``Conv2d`` / ``MaxPool2d`` (skipped when torch is missing).

What is asserted (API.md is the contract):

- a valid call matches ``fastconv.reference`` (float64 oracle) within the registered tolerance of
  the kernel that ran (max |error| / max |reference| over the finite entries, as the kernel tests
  measure it), with the same NaN / +inf / -inf positions, and matches torch the same way when torch
  is installed (torch with oneDNN off: see torch_oracle for where oneDNN disagrees with torch itself).  Every valid case runs with ``algo="auto"``, with each algorithm family and with
  every registered kernel named exactly (a kernel that cannot serve the case must raise the
  ValueError naming itself);
- a batch of 0 gives empty outputs and zero weight / bias gradients; arrays in a non-native byte
  order give the right answer or a TypeError naming the array, never a misread;
- an invalid call raises ValueError or TypeError whose message names the argument, quickly
  (REFUSAL_S); nothing else escapes (no numba TypingError, OverflowError, IndexError, KeyError,
  MemoryError, AttributeError, ...).  Absurd hyper-parameters (stride=2**63, a 2**40 or 2**30 pool
  window, padding=2**30) run in subprocesses under a timeout and an address-space limit, so a hang
  or a runaway allocation fails one test instead of the session;
- inputs are never modified (bytes, shape, strides and flags compared before and after), outputs
  are new, writeable, C-contiguous arrays of the input dtype in native byte order.

Every example is bounded by hypothesis' deadline (compilation is paid up front by the module's
warm-up fixture) and, against hangs inside C or Numba code that no deadline can interrupt, by a
faulthandler watchdog that dumps every thread's stack and ends the process.

Profiles (selected with the environment variable HYPOTHESIS_PROFILE; default "ci"):

    HYPOTHESIS_PROFILE=ci      pytest -q tests/test_fuzz.py -p no:cacheprovider     # ~1.5 min once compiled
    HYPOTHESIS_PROFILE=nightly pytest -q tests/test_fuzz.py -p no:cacheprovider     # 25x the examples, ~30 min

(the first run on a machine also pays Numba's compilation in the warm-up fixture: minutes).

"ci" is derandomized (the same examples on every run, so CI never flakes on a new example) and
keeps no example database; "nightly" draws new examples on every run, keeps failing ones in
.hypothesis/ (replayed first on the next run) and has generous deadlines.  A failure prints a
``@reproduce_failure`` blob and the falsifying example (shapes, dtypes, layouts, where the NaN/inf
were put, the hyper-parameters as passed).

The profiles are registered as "fastconv-fuzz-ci" / "fastconv-fuzz-nightly" and applied to this
file's tests only, through their decorators: hypothesis' global profile is never loaded here, so
other test files keep their settings (hypothesis ships a built-in "ci" profile that it loads by
itself when it detects CI; registering ours under that name would replace it for the whole session).
"""
from __future__ import annotations

import faulthandler
import io
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Optional

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv.spec import ConvSpec, PoolSpec

try:
    import torch
    import torch.nn.functional as F

    import fastconv.torch as fct
except ImportError:  # pragma: no cover - exercised only without torch
    torch = F = fct = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

# ----------------------------------------------------------------------------- profiles

_PROFILES = {
    "ci": dict(max_examples=20, deadline=timedelta(seconds=5), derandomize=True, database=None),
    "nightly": dict(max_examples=500, deadline=timedelta(seconds=30)),
}
for _name, _kw in _PROFILES.items():
    settings.register_profile(
        f"fastconv-fuzz-{_name}",
        settings(print_blob=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.filter_too_much],
                 **_kw))
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci").strip().lower().removeprefix("fastconv-fuzz-")
if PROFILE not in _PROFILES:  # another suite's profile name: this file keeps its CI settings
    PROFILE = "ci"
_BASE = settings.get_profile(f"fastconv-fuzz-{PROFILE}")
WATCHDOG_S = {"ci": 120, "nightly": 600}[PROFILE]     # an example still running after this hangs
SUBPROCESS_S = {"ci": 40, "nightly": 120}[PROFILE]    # limit of one absurd-parameter subprocess
REFUSAL_S = 1.0                                       # an invalid call is refused within this


def fuzz(scale: float = 1.0, **overrides):
    """This file's profile, with max_examples scaled for a test's cost."""
    return settings(_BASE, max_examples=max(1, round(_BASE.max_examples * scale)), **overrides)


@contextmanager
def bounded(seconds: float = WATCHDOG_S):
    """Ends the process with every thread's stack if the block hangs (in C, Numba or Python)."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


# ----------------------------------------------------------------------------- constants

FLOATS = ("float32", "float64")
TOL = {"float32": 1e-5, "float64": 1e-10}         # registry default (bias gradient; torch's own error)
TORCH_TOL = {"float32": 2e-5, "float64": 1e-11}   # torch's own error, added to a kernel's bound
NONFINITE = (math.nan, math.inf, -math.inf)
HUGE = (2**31, 2**40, 2**62, 2**63, 2**64)        # all over spec.PARAM_LIMIT (2**31 - 1): refused
NEG_HUGE = (-1, -2, -(2**31), -(2**63), -(2**64))
BAD_SCALARS = (1.0, 2.5, math.nan, math.inf, None, "1", b"1", True, False, np.bool_(True),
               np.float64(2.0), 1 + 0j, {1: 1}, {1}, object())
BAD_DTYPES = ("int8", "int32", "int64", "uint8", "bool", "complex64", "complex128", "float16", "object")
CONV_OPS = ("conv2d.fwd", "conv2d.bwd_data", "conv2d.bwd_weight")
BACKENDS = ("auto", "c", "numba", "numpy")
MAX_THREADS = int(numba.config.NUMBA_NUM_THREADS)

# Layouts an array argument is passed in: all hold the same logical values.  Read-only C-contiguous
# arrays ("readonly"; "broadcast" when the first axis has length 1) reach the kernels as they are,
# and Numba compiles a new specialization for every combination of read-only flags (13-70 s each
# here), so calls that may run on Numba get those layouts for every array at once or not at all
# (the warm-up compiled both); calls naming a C kernel or the reference mix them freely.
LAYOUTS = ("C", "C", "F", "strided", "offset", "reversed", "transposed", "broadcast", "readonly", "unaligned")
READONLY_LAYOUTS = ("readonly",)
WRITEABLE_LAYOUTS = tuple(lay for lay in LAYOUTS if lay not in ("readonly", "broadcast"))


# ----------------------------------------------------------------------------- arrays


def materialize(values: np.ndarray, layout: str, swapped: bool = False):
    """(array to pass, its logical values as a native C-contiguous array) for one layout."""
    a = np.ascontiguousarray(values)
    dt = a.dtype.newbyteorder("S") if swapped else a.dtype
    if layout == "broadcast" and a.ndim >= 1 and a.shape[0] > 0:
        a = np.ascontiguousarray(np.broadcast_to(a[:1], a.shape))  # the values repeat along axis 0
        out = np.broadcast_to(a[:1].astype(dt), a.shape)
    elif layout in ("C", "broadcast"):
        out = a.astype(dt, copy=True)
    elif layout == "F":
        out = np.asfortranarray(a.astype(dt))
    elif layout == "strided" and a.ndim >= 1:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), dt)
        out = big[..., 1::2]
        out[...] = a
    elif layout == "offset":
        flat = np.zeros(a.size + 5, dt)
        out = flat[5:].reshape(a.shape)
        out[...] = a
    elif layout == "reversed" and a.ndim >= 1:
        out = np.ascontiguousarray(a[..., ::-1]).astype(dt)[..., ::-1]
    elif layout == "transposed" and a.ndim >= 2:
        out = np.swapaxes(np.ascontiguousarray(np.swapaxes(a, -1, -2)).astype(dt), -1, -2)
    elif layout == "readonly":
        out = a.astype(dt, copy=True)
        out.flags.writeable = False
    elif layout == "unaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        out = buf[1:].view(dt).reshape(a.shape)
        out[...] = a
    else:  # a layout that needs more dimensions than the array has
        out = a.astype(dt, copy=True)
    assert out.shape == a.shape and np.array_equal(out.astype(a.dtype), a, equal_nan=True)
    return out, a


def snapshot(*objs):
    """What must not change: bytes, shape, strides and flags of every array argument."""
    shot = []
    for o in objs:
        if isinstance(o, np.ndarray):
            shot.append((o.dtype.str, o.shape, o.strides, o.flags.writeable, o.flags.c_contiguous,
                         o.tobytes() if o.dtype != object else [id(v) for v in o.ravel()]))
        elif torch is not None and isinstance(o, torch.Tensor):
            shot.append((o.dtype, tuple(o.shape), o.stride(), o.detach().clone()))
        else:
            shot.append(None)
    return shot


def assert_unchanged(before, objs, what):
    after = snapshot(*objs)
    for i, (b, a) in enumerate(zip(before, after)):
        if b is None:
            continue
        if torch is not None and len(b) == 4 and isinstance(b[3], torch.Tensor):
            assert b[:3] == a[:3] and torch.equal(b[3].nan_to_num(7.0), a[3].nan_to_num(7.0)) and \
                torch.equal(b[3].isnan(), a[3].isnan()), f"{what}: input {i} was modified"
        else:
            assert b == a, f"{what}: input {i} was modified (bytes, shape, strides or flags)"


def check_output(out, shape, dtype, inputs, what):
    """A new, writeable, C-contiguous ndarray of the input dtype in native byte order."""
    assert type(out) is np.ndarray, f"{what}: returned {type(out).__name__}, not numpy.ndarray"
    assert out.shape == tuple(shape), f"{what}: shape {out.shape}, expected {tuple(shape)}"
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative, f"{what}: dtype {out.dtype.str}, expected {dtype}"
    assert out.flags.c_contiguous, f"{what}: output is not C-contiguous"
    assert out.flags.writeable, f"{what}: output is read-only"
    for a in inputs:
        if isinstance(a, np.ndarray) and a.size and out.size:
            assert not np.may_share_memory(out, a), f"{what}: output shares memory with an input"


def _where(mask):
    idx = np.argwhere(mask)
    return [tuple(int(v) for v in i) for i in idx[:5]]


def assert_close(actual, expected, rtol, what):
    """Same shape, same NaN / +inf / -inf positions, and on the finite entries max |error| within
    rtol of max |expected| (the registry's measure)."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        ma, me = test(a), test(e)
        if not np.array_equal(ma, me):
            raise AssertionError(f"{what}: {name} pattern differs: extra at {_where(ma & ~me)}, "
                                 f"missing at {_where(me & ~ma)} (got {a[ma ^ me][:5]}, expected {e[ma ^ me][:5]})")
    fin = np.isfinite(e)
    if fin.any():
        scale = np.abs(e[fin]).max()
        err = np.abs(a[fin] - e[fin]).max()
        rel = err / scale if scale > 0 else err
        assert rel <= rtol, f"{what}: relative error {rel:.3g} over the bound {rtol:.0e}"


# ----------------------------------------------------------------------------- refusals


def _clean(e: BaseException) -> bool:
    """ValueError / TypeError raised by fastconv's checks, not a numpy/numba/cffi accident."""
    return isinstance(e, (ValueError, TypeError)) \
        and not isinstance(e, (LookupError, ArithmeticError, UnicodeError)) \
        and not type(e).__module__.startswith(("numba", "cffi", "_cffi"))


def names(msg: str, name: str) -> bool:
    """Whether an error message names the argument (a short name must stand alone)."""
    if len(name) <= 2:
        return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", msg) is not None
    return name.lower() in msg.lower()


def refused(call, accepted_names, what, *, quick=True):
    """call() must raise ValueError/TypeError naming one of accepted_names; returns the exception."""
    t0 = time.perf_counter()
    try:
        out = call()
    except Exception as e:  # noqa: BLE001 - classifying what escaped is the point
        elapsed = time.perf_counter() - t0
        if not _clean(e):
            raise AssertionError(f"{what}: {type(e).__module__}.{type(e).__name__} escaped "
                                 f"(expected ValueError/TypeError naming one of {sorted(accepted_names)}): {e}") from e
        msg = str(e)
        assert any(names(msg, n) for n in accepted_names), \
            f"{what}: {type(e).__name__} does not name any of {sorted(accepted_names)}: {msg!r}"
        if quick:
            assert elapsed < REFUSAL_S, f"{what}: took {elapsed:.2f} s to refuse"
        return e
    raise AssertionError(f"{what}: accepted (returned {_brief(out)}); expected ValueError/TypeError "
                         f"naming one of {sorted(accepted_names)}")


def _brief(out):
    if isinstance(out, tuple):
        return "(" + ", ".join(_brief(o) for o in out) + ")"
    if isinstance(out, np.ndarray):
        return f"array{out.shape} {out.dtype}"
    return type(out).__name__


def run_or_refuse(call, refusal_names, what):
    """(result, None), or (None, exception) when call raises ValueError/TypeError naming one of
    refusal_names (a documented refusal, e.g. a kernel that cannot serve the shape)."""
    try:
        return call(), None
    except Exception as e:  # noqa: BLE001
        if not _clean(e) or not any(names(str(e), n) for n in refusal_names):
            raise
        return None, e


# ----------------------------------------------------------------------------- hyper-parameters


def int_forms(value: int, *, pair_of=None):
    """Equivalent valid spellings of one int hyper-parameter (or of a pair when pair_of is given)."""
    a, b = pair_of if pair_of is not None else (value, value)
    forms = [st.just((a, b)), st.just([a, b]), st.just((np.int64(a), np.int32(b))), st.just((np.uint8(a), b))]
    if a == b:
        forms += [st.just(a), st.just(a), st.just(np.int64(a)), st.just(np.int16(a)), st.just(np.uint32(a))]
    return st.one_of(forms)


def plain(v):
    """A hyper-parameter spelled with plain ints (what the oracle and torch are given)."""
    if isinstance(v, (tuple, list)):
        return tuple(int(x) for x in v)
    if isinstance(v, (str, np.str_)):
        return str(v)
    return int(v)


def bad_int_param(*, positive: bool, allow_empty_tuple: bool = False):
    """Hyper-parameter values that are not an int or a pair of ints in range."""
    low = [0, -1, -3] if positive else [-1, -3]
    lengths = [(1,), (1, 1, 1), (1, 1, 1, 1)] + ([] if allow_empty_tuple else [()])
    return st.one_of(
        st.sampled_from(low + list(HUGE) + list(NEG_HUGE)),
        st.sampled_from(BAD_SCALARS),
        st.sampled_from(lengths),
        st.tuples(st.just(1), st.sampled_from(low + list(HUGE) + [None, 1.0, True, "1"])),
        st.just((1, (1, 1))),
        st.just([np.bool_(False), 1]),
    )


# ----------------------------------------------------------------------------- values


@st.composite
def values(draw, shape, dtype, *, nonfinite=True, ties=False):
    """Random values of shape, with up to 3 NaN / inf / -inf placed at drawn positions."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "small-ints", "ties"] if ties else ["normal", "small-ints"]))
    if kind == "normal":
        a = rng.standard_normal(shape)
    elif kind == "small-ints":
        a = rng.integers(-2, 3, shape).astype(np.float64)
    else:  # many equal values (max-pool ties), some -inf
        a = rng.choice([0.0, 1.0, -math.inf], shape, p=[0.45, 0.45, 0.1])
    a = a.astype(dtype)
    size = a.size
    if nonfinite and size:
        spots = draw(st.lists(st.tuples(st.integers(0, size - 1), st.sampled_from(NONFINITE)), max_size=3))
        flat = a.reshape(-1)
        for i, v in spots:
            flat[i] = v
    return a


@dataclass
class Arg:
    """One array argument: the array passed and its logical values (native, C-contiguous)."""
    passed: np.ndarray
    values: np.ndarray
    layout: str
    swapped: bool

    def __repr__(self):
        v = self.values
        bad = {k: _where(f(v)) for k, f in (("nan", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf))
               if v.dtype.kind == "f" and f(v).any()}
        return (f"<{'x'.join(map(str, v.shape))} {self.passed.dtype.str} {self.layout}"
                f"{' ' + str(bad) if bad else ''}>")


@st.composite
def array_arg(draw, shape, dtype, *, layouts=LAYOUTS, nonfinite=True, ties=False, swap=True):
    vals = draw(values(shape, dtype, nonfinite=nonfinite, ties=ties))
    layout = draw(st.sampled_from(layouts))
    # a quarter byte-swapped; not in the all-read-only group, which must reach Numba read-only
    swapped = swap and layouts != READONLY_LAYOUTS and draw(st.booleans()) and draw(st.booleans())
    passed, logical = materialize(vals, layout, swapped)
    return Arg(passed, logical, layout, swapped)


# ----------------------------------------------------------------------------- conv problems


def conv_out(size, k, s, pad_total, d):
    return (size + pad_total - d * (k - 1) - 1) // s + 1


def same_pads(k, d):
    t = d * (k - 1)
    return t // 2, t - t // 2


@dataclass
class ConvCase:
    x: Arg
    w: Arg
    b: Optional[Arg]
    stride: object
    padding: object
    dilation: object
    groups: object
    dtype: str
    grad_y: Optional[Arg] = None
    out_shape: tuple = ()

    @property
    def hp(self):
        """The hyper-parameters as fastconv receives them."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    @property
    def plain_hp(self):
        return dict(stride=plain(self.stride), padding=plain(self.padding), dilation=plain(self.dilation),
                    groups=int(self.groups))

    def spec(self):
        return ConvSpec.from_shapes(self.x.values.shape, self.w.values.shape, dtype=self.dtype, **self.plain_hp)

    @property
    def swapped(self):
        return any(a is not None and a.swapped for a in (self.x, self.w, self.b, self.grad_y))

    def arrays(self):
        return [a.passed for a in (self.x, self.w, self.b, self.grad_y) if a is not None]


@st.composite
def conv_cases(draw, *, backward=False, readonly_ok=False, nonfinite=True, max_n=2):
    """A valid conv2d problem no bigger than 2x4x9x9, with the arrays in random layouts."""
    dtype = draw(st.sampled_from(FLOATS))
    groups = draw(st.sampled_from([1, 1, 1, 2, 4]))
    cin = groups * draw(st.integers(1, 4 // groups))
    cout = groups * draw(st.integers(1, 4 // groups))
    n = draw(st.sampled_from([0, 1, 1, 2][: max_n + 2]))
    kh, kw = draw(st.sampled_from([1, 2, 3, 3, 3, 4])), draw(st.sampled_from([1, 2, 3, 3, 3, 4]))
    stride = (draw(st.sampled_from([1, 1, 2, 3])), draw(st.sampled_from([1, 1, 2, 3])))
    dilation = (draw(st.sampled_from([1, 1, 1, 2])), draw(st.sampled_from([1, 1, 1, 2])))
    pad_kind = draw(st.sampled_from(["int", "int", "valid", "same"]))
    if pad_kind == "same":
        stride = (1, 1)
        pads = same_pads(kh, dilation[0]) + same_pads(kw, dilation[1])
        padding = draw(st.sampled_from(["same", np.str_("same")]))
    elif pad_kind == "valid":
        pads, padding = (0, 0, 0, 0), "valid"
    else:
        ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        pads = (ph, ph, pw, pw)
        padding = draw(int_forms(ph, pair_of=(ph, pw)))
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - pads[0] - pads[1]), 9))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - pads[2] - pads[3]), 9))
    layouts = LAYOUTS if readonly_ok else WRITEABLE_LAYOUTS
    if not readonly_ok and draw(st.integers(0, 5)) == 0:
        layouts = READONLY_LAYOUTS  # every array read-only (the specialization the warm-up compiled)
    arg = lambda shape, **kw: array_arg(shape, dtype, layouts=layouts, nonfinite=nonfinite, **kw)  # noqa: E731
    x = draw(arg((n, cin, h, w)))
    wt = draw(arg((cout, cin // groups, kh, kw)))
    b = draw(st.one_of(st.none(), arg((cout,))))
    case = ConvCase(x, wt, b, draw(int_forms(stride[0], pair_of=stride)), padding,
                    draw(int_forms(dilation[0], pair_of=dilation)),
                    draw(st.sampled_from([groups, np.int64(groups), np.int8(groups)])), dtype)
    oh = conv_out(h, kh, stride[0], pads[0] + pads[1], dilation[0])
    ow = conv_out(w, kw, stride[1], pads[2] + pads[3], dilation[1])
    assert oh >= 1 and ow >= 1
    case.out_shape = (n, cout, oh, ow)
    if backward:
        case.grad_y = draw(arg(case.out_shape))
    return case


# ----------------------------------------------------------------------------- pool problems


def pool_out(size, k, s, p, d, ceil):
    span = size + 2 * p - d * (k - 1) - 1
    if ceil:
        out = -(-span // s) + 1
        if (out - 1) * s >= size + p:
            out -= 1
        return out
    return span // s + 1


@dataclass
class PoolCase:
    x: Arg
    kernel_size: object
    stride: object
    padding: object
    dilation: object
    ceil_mode: object
    dtype: str
    k: tuple = ()
    s: tuple = ()
    p: tuple = ()
    d: tuple = ()
    out_shape: tuple = ()

    @property
    def hp(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, ceil_mode=self.ceil_mode)

    @property
    def plain_hp(self):
        return dict(kernel_size=self.k, stride=self.s, padding=self.p, dilation=self.d, ceil_mode=bool(self.ceil_mode))


@st.composite
def pool_cases(draw, *, readonly_ok=False, nonfinite=True):
    dtype = draw(st.sampled_from(FLOATS))
    n, c = draw(st.sampled_from([0, 1, 1, 2])), draw(st.integers(1, 4))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    d = (draw(st.sampled_from([1, 1, 2, 3])), draw(st.sampled_from([1, 1, 2, 3])))
    default_stride = draw(st.booleans())
    s = k if default_stride else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    ceil = draw(st.sampled_from([False, True, np.bool_(True), np.bool_(False)]))
    lo = (1, 1) if bool(ceil) else (d[0] * (k[0] - 1) + 1 - 2 * p[0], d[1] * (k[1] - 1) + 1 - 2 * p[1])
    h, w = draw(st.integers(min(max(1, lo[0]), 9), 9)), draw(st.integers(min(max(1, lo[1]), 9), 9))
    assume(pool_out(h, k[0], s[0], p[0], d[0], bool(ceil)) >= 1 and pool_out(w, k[1], s[1], p[1], d[1], bool(ceil)) >= 1)
    layouts = LAYOUTS if readonly_ok else WRITEABLE_LAYOUTS
    if not readonly_ok and draw(st.integers(0, 5)) == 0:
        layouts = READONLY_LAYOUTS
    x = draw(array_arg((n, c, h, w), dtype, layouts=layouts, nonfinite=nonfinite, ties=True))
    stride = draw(st.sampled_from([None, (), []])) if default_stride else draw(int_forms(s[0], pair_of=s))
    case = PoolCase(x, draw(int_forms(k[0], pair_of=k)), stride, draw(int_forms(p[0], pair_of=p)),
                    draw(int_forms(d[0], pair_of=d)), ceil, dtype, k, s, p, d)
    case.out_shape = (n, c, pool_out(h, k[0], s[0], p[0], d[0], bool(ceil)),
                      pool_out(w, k[1], s[1], p[1], d[1], bool(ceil)))
    assert min(case.out_shape[2:]) >= 1
    return case


# ----------------------------------------------------------------------------- kernel choices


def kernel_named(op, name):
    return next(k for k in fc.kernels(op) if k.name == name)


def choices(op):
    """'auto', every family, every kernel by exact name."""
    families = sorted({k.family for k in fc.kernels(op) if k.backend != "numpy"})
    return ["auto"] + [f"family:{f}" for f in families] + [k.name for k in fc.kernels(op)]


def resolve(op, choice):
    """(algo, backend, kernels the choice may run, whether Numba may run)."""
    if choice == "auto":
        ks = list(fc.kernels(op))
        return "auto", "auto", ks
    if choice.startswith("family:"):
        fam = choice.split(":", 1)[1]
        return fam, "auto", [k for k in fc.kernels(op) if k.family == fam]
    k = kernel_named(op, choice)
    return k.algo, k.backend, [k]


def may_run_numba(kernels):
    return any(k.backend == "numba" for k in kernels)


def eligible(kernels, spec, rtol=None):
    ok = [k for k in kernels if k.refusal(spec) is None
          and (rtol is None or k.rtol[spec.dtype] <= rtol)]
    non_ref = [k for k in ok if k.backend != "numpy"]
    return non_ref or ok


def chosen_rtol(op, case_spec, algo, backend, rtol, kernels):
    """The bound of the kernel auto / a family picks (explain says which), else the loosest."""
    try:
        plan = fc.explain(case_spec.input_shape, case_spec.weight_shape, case_spec.stride,
                          (case_spec.padding[0], case_spec.padding[2]) if case_spec.padding[0::2] == case_spec.padding[1::2]
                          else "same", case_spec.dilation, case_spec.groups, case_spec.dtype,
                          op=op, algo=algo, backend=backend, rtol=rtol)
        return kernel_named(op, plan.chosen).rtol[case_spec.dtype]
    except Exception:  # noqa: BLE001 - explain is fuzzed on its own below
        return max(k.rtol[case_spec.dtype] for k in kernels)


# ----------------------------------------------------------------------------- warm-up


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """Compile (or load from Numba's cache) every specialization the fuzz reaches, before any
    deadline applies: each kernel of each op, both dtypes, writeable and all-read-only inputs.
    Errors are left to the tests, which report them."""
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()

    def ro(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    for dtype in FLOATS:
        for xs, ws, hp in [((2, 4, 9, 9), (4, 4, 3, 3), dict(padding=1)),
                           ((1, 2, 7, 6), (4, 1, 2, 3), dict(stride=2, dilation=(1, 2), groups=2)),
                           ((2, 4, 5, 5), (4, 1, 3, 3), dict(groups=4))]:
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal(ws).astype(dtype)
            b = rng.standard_normal(ws[0]).astype(dtype)
            xn = x.copy()
            xn[0, 0, 0, 0] = math.nan  # Winograd's non-finite path
            spec = ConvSpec.from_args(x, w, b, **hp)
            gy = rng.standard_normal(spec.output_shape).astype(dtype)
            for wrap in (lambda a: a, ro):
                for k in fc.kernels("conv2d.fwd"):
                    if k.refusal(spec) is None:
                        for args in ((x, w, b), (x, w, None), (xn, w, b)):
                            try:
                                fc.conv2d(*[None if a is None else wrap(a) for a in args], **hp,
                                          algo=k.algo, backend=k.backend)
                            except Exception:  # noqa: BLE001
                                pass
                for op, kw in (("conv2d.bwd_data", "algo"), ("conv2d.bwd_weight", "weight_algo")):
                    for k in fc.kernels(op):
                        if k.refusal(spec) is None:
                            try:
                                fc.conv2d_backward(wrap(gy), wrap(x), wrap(w), **hp, backend=k.backend,
                                                   **{kw: k.algo})
                            except Exception:  # noqa: BLE001
                                pass
        x = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
        for wrap in (lambda a: a, ro):
            for backend in BACKENDS:
                for hp in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)):
                    try:
                        y, idx = fc.max_pool2d(wrap(x), **hp, backend=backend)
                        fc.max_pool2d_backward(wrap(y), wrap(idx), x.shape, backend=backend)
                    except Exception:  # noqa: BLE001
                        pass
    if torch is not None:
        t = torch.randn(1, 2, 5, 5, requires_grad=True)
        fct.conv2d(t, torch.randn(2, 2, 3, 3)).sum().backward()
        F.conv2d(t, torch.randn(2, 2, 3, 3)).sum().backward()
        F.max_pool2d(t, 2).sum().backward()
    print(f"\n[test_fuzz] warm-up (compilation) took {time.perf_counter() - t0:.1f} s; profile {PROFILE}")
    yield


# ============================================================================= conv2d: valid


@contextmanager
def torch_oracle():
    """torch's native CPU convolution, with oneDNN (mkldnn) off.  oneDNN's float32 kernels skip the
    taps that fall in the zero padding when the kernel is 4x4 or larger, so a NaN/inf weight there
    does not reach the border outputs, while torch's float64 path, its float32 path for smaller
    kernels and torch with oneDNN disabled all compute NaN * 0 = NaN: torch disagrees with itself,
    and fastconv follows the arithmetic (the reference).  Finite results are the same either way."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def torch_conv(case, x, w, b):
    with torch_oracle():
        return _torch_conv(case, x, w, b)


def _torch_conv(case, x, w, b):
    return F.conv2d(torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                    **case.plain_hp).numpy()


@pytest.mark.parametrize("choice", choices("conv2d.fwd"))
@fuzz()
@given(data=st.data(), rtol=st.sampled_from([None, None, None, 1e-2, 1e-5, 1e-13]))
def test_conv2d_valid(choice, data, rtol):
    """Valid problems: the reference's answer (and torch's) within the running kernel's bound, the
    same non-finite pattern, batch 0 empty, inputs untouched, a new native C-contiguous output."""
    algo, backend, kernels = resolve("conv2d.fwd", choice)
    case = data.draw(conv_cases(readonly_ok=not may_run_numba(kernels)), label="case")
    with bounded():
        spec = case.spec()
        ok = eligible(kernels, spec, rtol)
        before = snapshot(*case.arrays())
        call = lambda: fc.conv2d(case.x.passed, case.w.passed, None if case.b is None else case.b.passed,  # noqa: E731
                                 **case.hp, algo=algo, backend=backend, rtol=rtol)
        if not ok:  # the documented refusal: the kernel (or every one of the family) cannot serve it
            refused(call, {choice.split(":")[-1], "rtol"}, f"conv2d(algo={algo!r}, backend={backend!r})")
            assert_unchanged(before, case.arrays(), "conv2d")
            return
        swapped_names = {"x", "weight", "bias", "byte order", "byteorder"}
        y, err = run_or_refuse(call, swapped_names if case.swapped else set(), "conv2d")
        assert_unchanged(before, case.arrays(), "conv2d")
        if err is not None:  # non-native byte order refused with a TypeError naming the array
            assert isinstance(err, TypeError), f"a non-native byte order must be refused with TypeError: {err!r}"
            return
        check_output(y, case.out_shape, case.dtype, case.arrays(), "conv2d")
        if spec.n == 0:
            return
        tol = ok[0].rtol[case.dtype] if len(ok) == 1 else chosen_rtol("conv2d.fwd", spec, algo, backend, rtol, ok)
        bv = None if case.b is None else case.b.values
        expected = fc.reference.conv2d(case.x.values, case.w.values, bv, **case.plain_hp)
        assert_close(y, expected, tol, f"conv2d[{choice}] vs reference")
        if torch is not None:
            assert_close(y, torch_conv(case, case.x.values, case.w.values, bv), tol + TORCH_TOL[case.dtype],
                         f"conv2d[{choice}] vs torch")


@pytest.mark.parametrize("name", [k.name for k in fc.kernels("conv2d.fwd")])
@fuzz(0.5)
@given(data=st.data())
def test_conv2d_weights_changed_in_place(name, data):
    """Kernels that keep transformed filters (Winograd) must notice weights changed in place
    (a training step), NaN/inf included, and give the answer for the new weights."""
    kernel = kernel_named("conv2d.fwd", name)
    case = data.draw(conv_cases(readonly_ok=False), label="case")
    with bounded():
        spec = case.spec()
        if kernel.refusal(spec) is not None or spec.n == 0:
            return
        x, w = np.ascontiguousarray(case.x.values), np.ascontiguousarray(case.w.values).copy()
        for step in range(3):
            y = fc.conv2d(x, w, None, **case.hp, algo=kernel.algo, backend=kernel.backend)
            assert_close(y, fc.reference.conv2d(x, w, None, **case.plain_hp), kernel.rtol[case.dtype],
                         f"{name} after {step} in-place weight updates")
            new = data.draw(values(w.shape, case.dtype), label=f"weights {step + 1}")
            w[...] = new  # same address, same shape, new values


# ============================================================================= conv2d_backward: valid


def backward_choices():
    return (["auto"] + [f"data:{k.name}" for k in fc.kernels("conv2d.bwd_data")]
            + [f"weight:{k.name}" for k in fc.kernels("conv2d.bwd_weight")])


@pytest.mark.parametrize("choice", backward_choices())
@fuzz()
@given(data=st.data(), with_bias=st.sampled_from([True, False, np.bool_(True)]))
def test_conv2d_backward_valid(choice, data, with_bias):
    """(grad_x, grad_w, grad_b) against the reference and torch's autograd; batch 0 gives an empty
    grad_x and zero grad_w / grad_b."""
    if choice == "auto":
        algo = weight_algo = backend = "auto"
        data_ks, weight_ks = list(fc.kernels("conv2d.bwd_data")), list(fc.kernels("conv2d.bwd_weight"))
    else:
        which, name = choice.split(":")
        k = kernel_named("conv2d.bwd_data" if which == "data" else "conv2d.bwd_weight", name)
        backend = k.backend
        algo, weight_algo = (k.algo, "auto") if which == "data" else ("auto", k.algo)
        data_ks = [k] if which == "data" else [d for d in fc.kernels("conv2d.bwd_data") if d.backend == backend]
        weight_ks = [k] if which == "weight" else [d for d in fc.kernels("conv2d.bwd_weight") if d.backend == backend]
    case = data.draw(conv_cases(backward=True, readonly_ok=not may_run_numba(data_ks + weight_ks)), label="case")
    with bounded():
        spec = case.spec()
        ok_d, ok_w = eligible(data_ks, spec), eligible(weight_ks, spec)
        before = snapshot(*case.arrays())
        call = lambda: fc.conv2d_backward(case.grad_y.passed, case.x.passed, case.w.passed, **case.hp,  # noqa: E731
                                          bias=with_bias, algo=algo, weight_algo=weight_algo, backend=backend)
        if not ok_d or not ok_w:
            refused(call, {choice.split(":")[-1]}, f"conv2d_backward[{choice}]")
            assert_unchanged(before, case.arrays(), "conv2d_backward")
            return
        out, err = run_or_refuse(call, {"x", "weight", "grad_y", "byte order"} if case.swapped else set(),
                                 "conv2d_backward")
        assert_unchanged(before, case.arrays(), "conv2d_backward")
        if err is not None:
            assert isinstance(err, TypeError), f"a non-native byte order must be refused with TypeError: {err!r}"
            return
        assert isinstance(out, tuple) and len(out) == 3
        gx, gw, gb = out
        n, cout = case.out_shape[:2]
        check_output(gx, case.x.values.shape, case.dtype, case.arrays(), "grad_x")
        check_output(gw, case.w.values.shape, case.dtype, case.arrays() + [gx], "grad_w")
        if with_bias:
            check_output(gb, (cout,), case.dtype, case.arrays() + [gx, gw], "grad_b")
        else:
            assert gb is None, "grad_b must be None when bias=False"
        if n == 0:  # no gradient flows from an empty batch
            assert not gw.any() and (gb is None or not gb.any()), "batch 0: weight/bias gradients must be zero"
            return
        tol_d = ok_d[0].rtol[case.dtype] if len(ok_d) == 1 else \
            chosen_rtol("conv2d.bwd_data", spec, algo, backend, None, ok_d)
        tol_w = ok_w[0].rtol[case.dtype] if len(ok_w) == 1 else \
            chosen_rtol("conv2d.bwd_weight", spec, weight_algo, backend, None, ok_w)
        rx, rw, rb = fc.reference.conv2d_backward(case.grad_y.values, case.x.values, case.w.values,
                                                  **case.plain_hp, bias=True)
        assert_close(gx, rx, tol_d, f"grad_x[{choice}] vs reference")
        assert_close(gw, rw, tol_w, f"grad_w[{choice}] vs reference")
        if with_bias:
            assert_close(gb, rb, TOL[case.dtype], "grad_b vs reference")
        if torch is not None:
            tx, tw, tb = torch_conv_grads(case)
            assert_close(gx, tx, tol_d + TORCH_TOL[case.dtype], f"grad_x[{choice}] vs torch")
            assert_close(gw, tw, tol_w + TORCH_TOL[case.dtype], f"grad_w[{choice}] vs torch")
            if with_bias:
                assert_close(gb, tb, TOL[case.dtype] + TORCH_TOL[case.dtype], "grad_b vs torch")


def torch_conv_grads(case):
    x = torch.from_numpy(case.x.values.copy()).requires_grad_()
    w = torch.from_numpy(case.w.values.copy()).requires_grad_()
    b = torch.zeros(case.out_shape[1], dtype=x.dtype, requires_grad=True)
    with torch_oracle():
        F.conv2d(x, w, b, **case.plain_hp).backward(torch.from_numpy(case.grad_y.values.copy()))
    return x.grad.numpy(), w.grad.numpy(), b.grad.numpy()


# ============================================================================= max-pool: valid


def torch_pool(case, x):
    y, i = F.max_pool2d(torch.from_numpy(x.copy()), **case.plain_hp, return_indices=True)
    return y.numpy(), i.numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@fuzz(1.5)
@given(data=st.data(), return_indices=st.sampled_from([True, False, np.bool_(True)]))
def test_max_pool2d_valid(backend, data, return_indices):
    """Values and int64 indices exactly the reference's and torch's: ties to the first maximum,
    NaN to the last NaN, -inf padding, ceil_mode's dropped window, batch 0 empty."""
    case = data.draw(pool_cases(readonly_ok=backend in ("c", "numpy")), label="case")
    with bounded():
        before = snapshot(case.x.passed)
        call = lambda: fc.max_pool2d(case.x.passed, **case.hp, return_indices=return_indices,  # noqa: E731
                                     backend=backend)
        out, err = run_or_refuse(call, {"x", "byte order"} if case.x.swapped else set(), "max_pool2d")
        assert_unchanged(before, [case.x.passed], "max_pool2d")
        if err is not None:
            assert isinstance(err, TypeError), f"a non-native byte order must be refused with TypeError: {err!r}"
            return
        if return_indices:
            assert isinstance(out, tuple) and len(out) == 2, "return_indices=True returns (y, indices)"
            y, idx = out
            check_output(idx, case.out_shape, "int64", [case.x.passed], "indices")
        else:
            assert isinstance(out, np.ndarray), "return_indices=False returns y alone"
            y, idx = out, None
        check_output(y, case.out_shape, case.dtype, [case.x.passed], "max_pool2d")
        if case.out_shape[0] == 0:
            return
        ry, ri = fc.reference.max_pool2d(case.x.values, **case.plain_hp)
        assert_close(y, ry, 0.0, f"max_pool2d[{backend}] values vs reference")
        if idx is not None:
            np.testing.assert_array_equal(idx, ri, err_msg=f"max_pool2d[{backend}] indices vs reference")
        if torch is not None:
            ty, ti = torch_pool(case, case.x.values)
            assert_close(y, ty, 0.0, f"max_pool2d[{backend}] values vs torch")
            if idx is not None:
                np.testing.assert_array_equal(idx, ti, err_msg=f"max_pool2d[{backend}] indices vs torch")


@pytest.mark.parametrize("backend", BACKENDS)
@fuzz(1.5)
@given(data=st.data(), shape_form=st.sampled_from(["tuple", "list", "numpy", "numpy-ints"]))
def test_max_pool2d_backward_valid(backend, data, shape_form):
    """Gradients routed to the argmax indices (overlaps accumulate), against the reference and
    torch's autograd, non-finite gradients included; batch 0 gives an empty grad_x."""
    case = data.draw(pool_cases(readonly_ok=backend in ("c", "numpy"), nonfinite=True), label="case")
    layouts = LAYOUTS if backend in ("c", "numpy") else (
        READONLY_LAYOUTS if case.x.layout == "readonly" else WRITEABLE_LAYOUTS)
    g = data.draw(array_arg(case.out_shape, case.dtype, layouts=layouts), label="grad_y")
    with bounded():
        _, ri = fc.reference.max_pool2d(case.x.values, **case.plain_hp)
        ipassed, _ = materialize(ri, data.draw(st.sampled_from([lay for lay in layouts if lay != "broadcast"]),
                                               label="indices layout"))
        shape = case.x.values.shape
        input_shape = {"tuple": tuple(shape), "list": list(shape), "numpy": np.array(shape),
                       "numpy-ints": tuple(np.int64(s) for s in shape)}[shape_form]
        before = snapshot(g.passed, ipassed)
        call = lambda: fc.max_pool2d_backward(g.passed, ipassed, input_shape, backend=backend)  # noqa: E731
        if ri.size and not ((ri >= 0) & (ri < shape[2] * shape[3])).all():
            # a window whose taps all fall in padding gets PyTorch's out-of-plane index: it has no
            # argmax, and the backward refuses such indices (API.md) rather than guess
            with pytest.raises(ValueError, match="indices"):
                call()
            assert_unchanged(before, [g.passed, ipassed], "max_pool2d_backward")
            return
        gx, err = run_or_refuse(call, {"grad_y", "byte order"} if g.swapped else set(), "max_pool2d_backward")
        assert_unchanged(before, [g.passed, ipassed], "max_pool2d_backward")
        if err is not None:
            assert isinstance(err, TypeError), f"a non-native byte order must be refused with TypeError: {err!r}"
            return
        check_output(gx, shape, case.dtype, [g.passed, ipassed], "max_pool2d_backward")
        if shape[0] == 0:
            return
        tol = max(k.rtol[case.dtype] for k in fc.kernels("maxpool2d.bwd"))
        expected = fc.reference.max_pool2d_backward(g.values, ri, tuple(shape))
        assert_close(gx, expected, tol, f"max_pool2d_backward[{backend}] vs reference")
        if torch is not None:
            t = torch.from_numpy(case.x.values.copy()).requires_grad_()
            F.max_pool2d(t, **case.plain_hp).backward(torch.from_numpy(g.values.copy()))
            assert_close(gx, t.grad.numpy(), tol + TORCH_TOL[case.dtype], f"max_pool2d_backward[{backend}] vs torch")


@needs_torch
@fuzz()
@given(conv=conv_cases(readonly_ok=True), pool=pool_cases(readonly_ok=True))
def test_reference_matches_torch(conv, pool):
    """The oracle itself (a public function) against torch: values, non-finite patterns, indices."""
    with bounded():
        for a in (conv.x, conv.w, conv.b, pool.x):
            if a is not None and a.swapped:
                return  # the reference's byte-order handling is fuzzed through the kernels' tests
        bv = None if conv.b is None else conv.b.passed
        y = fc.reference.conv2d(conv.x.passed, conv.w.passed, bv, **conv.hp)
        check_output(y, conv.out_shape, conv.dtype, [], "reference.conv2d")
        assert_close(y, torch_conv(conv, conv.x.values, conv.w.values, None if conv.b is None else conv.b.values),
                     TORCH_TOL[conv.dtype], "reference.conv2d vs torch")
        py, pi = fc.reference.max_pool2d(pool.x.passed, **pool.hp)
        ty, ti = torch_pool(pool, pool.x.values)
        assert_close(py, ty, 0.0, "reference.max_pool2d vs torch")
        np.testing.assert_array_equal(pi, ti, err_msg="reference.max_pool2d indices vs torch")


# ============================================================================= invalid calls


def _bad_array(draw, a: np.ndarray, name: str = ""):
    """A corrupted version of array argument a: (value, kind)."""
    kind = draw(st.sampled_from(["dtype", "dtype", "ndim", "ndim", "type", "swapped-bad-dtype"]))
    if kind == "dtype":
        dt = draw(st.sampled_from(BAD_DTYPES))
        return a.astype(dt), kind
    if kind == "swapped-bad-dtype":
        return a.astype(draw(st.sampled_from([">i4", ">i8", ">f2", ">c8"]))), kind
    if kind == "ndim":
        nd = draw(st.sampled_from([d for d in (0, 1, 2, 3, 4, 5) if d != a.ndim]))
        if nd == 0:
            return np.array(1.0, a.dtype), kind
        if nd < a.ndim:
            return np.ones(tuple(max(1, s) for s in a.shape[a.ndim - nd:]), a.dtype), kind
        return a.reshape(a.shape + (1,) * (nd - a.ndim)), kind
    return draw(st.sampled_from([a.tolist(), None, 1.0, "array", (1, 2)])), kind


@st.composite
def invalid_conv_calls(draw, *, backward=False):
    """A valid problem with 1-2 arguments broken: (case, kwargs for conv2d, names, corruptions)."""
    case = draw(conv_cases(backward=backward, readonly_ok=True, max_n=1))
    for a in (case.x, case.w, case.b, case.grad_y):  # byte order is fuzzed in the valid tests
        if a is not None and a.swapped:
            a.passed = a.values.copy()
            a.swapped = False
    kw = dict(x=case.x.passed, w=case.w.passed, **case.hp)
    if not backward:
        kw["bias"] = None if case.b is None else case.b.passed
    else:
        kw["grad_y"] = case.grad_y.passed
    n, cin, h, w = case.x.values.shape
    cout, cg, kh, kwid = case.w.values.shape
    dtype = case.dtype
    other = "float64" if dtype == "float32" else "float32"
    kinds = ["x", "weight", "stride", "padding", "dilation", "groups", "groups-nondividing", "mixed",
             "channels", "zero-channels", "zero-hw", "zero-out-channels", "kernel-too-big", "same-stride",
             "algo", "backend", "rtol"] + (["bias"] if not backward else ["grad_y", "grad_y-shape", "weight_algo"])
    touches = {"x": {"x"}, "weight": {"w"}, "bias": {"bias"}, "grad_y": {"grad_y"}, "grad_y-shape": {"grad_y"},
               "mixed": {"w", "grad_y", "bias"}, "channels": {"w"}, "zero-channels": {"x", "w"},
               "zero-hw": {"x"}, "zero-out-channels": {"w"}, "kernel-too-big": {"w", "padding"},
               "same-stride": {"padding", "stride"}, "groups-nondividing": {"groups"}}
    chosen = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=2, unique=True))
    if len(chosen) == 2 and touches.get(chosen[0], {chosen[0]}) & touches.get(chosen[1], {chosen[1]}):
        chosen = chosen[:1]
    expect = set()
    for kind in chosen:
        if kind == "x":
            kw["x"], _ = _bad_array(draw, case.x.values, "x")
            expect |= {"x", "input"}
        elif kind == "weight":
            kw["w"], _ = _bad_array(draw, case.w.values, "weight")
            expect |= {"weight"}
        elif kind == "bias":
            kw["bias"] = draw(st.sampled_from([
                np.zeros(cout + 1, dtype), np.zeros((cout, 1), dtype), np.array(0.0, dtype),
                np.zeros(cout, "int32"), np.zeros(cout, "float16"), [0.0] * cout, 0.0, "bias"]))
            expect |= {"bias"}
        elif kind == "grad_y":
            kw["grad_y"], _ = _bad_array(draw, case.grad_y.values, "grad_y")
            expect |= {"grad_y", "grad"}
        elif kind == "grad_y-shape":
            s = list(case.out_shape)
            s[draw(st.integers(0, 3))] += draw(st.sampled_from([1, 2]))
            kw["grad_y"] = np.zeros(s, draw(st.sampled_from([dtype, other])))
            expect |= {"grad_y"}
        elif kind in ("stride", "dilation"):
            kw[kind] = draw(bad_int_param(positive=True))
            expect |= {kind}
        elif kind == "padding":
            kw["padding"] = draw(st.one_of(bad_int_param(positive=False),
                                           st.sampled_from(["full", "SAME", "", "same ", "Valid"])))
            expect |= {"padding"}
        elif kind == "groups":
            kw["groups"] = draw(st.sampled_from([0, -1, -(2**63)] + list(HUGE) + [1.0, None, "1", True,
                                                 np.bool_(True), (1, 1), [1]]))
            expect |= {"groups"}
        elif kind == "groups-nondividing":
            kw["groups"] = cin + 1
            expect |= {"groups"}
        elif kind == "mixed":
            target = draw(st.sampled_from(["weight"] + (["bias"] if not backward and case.b is not None else [])
                                          + (["grad_y"] if backward else [])))
            key = {"weight": "w", "bias": "bias", "grad_y": "grad_y"}[target]
            src = {"weight": case.w, "bias": case.b, "grad_y": case.grad_y}[target]
            kw[key] = src.values.astype(other)
            expect |= {"mixed", "dtype", target, "x"}
        elif kind == "channels":
            kw["w"] = np.zeros((cout, cg + 1, kh, kwid), dtype)
            expect |= {"weight", "channels", "in_channels", "groups"}
        elif kind == "zero-channels":
            kw["x"] = np.zeros((n, 0, h, w), dtype)
            kw["w"] = np.zeros((cout, 0, kh, kwid), dtype)
            expect |= {"x", "weight", "channel", "empty"}
        elif kind == "zero-hw":
            s = [n, cin, h, w]
            s[draw(st.sampled_from([2, 3]))] = 0
            kw["x"] = np.zeros(s, dtype)
            expect |= {"x", "empty"}
        elif kind == "zero-out-channels":
            kw["w"] = np.zeros((0, cg, kh, kwid), dtype)
            expect |= {"weight", "out_channels", "empty"}
        elif kind == "kernel-too-big":
            kw["padding"] = 0
            d = plain(case.dilation)
            dh = d if isinstance(d, int) else d[0]
            kw["w"] = np.zeros((cout, cg, h // dh + 2, kwid), dtype)
            expect |= {"output size", "kernel", "weight", "padding"}
        elif kind == "same-stride":
            kw["padding"], kw["stride"] = "same", draw(st.sampled_from([2, (1, 2), (3, 1)]))
            expect |= {"padding", "stride", "same"}
        elif kind in ("algo", "weight_algo"):
            kw[kind] = draw(st.sampled_from(["", "fast", "WINOGRAD", "winograd_f6k3", "Auto", None, 3,
                                             ["im2col"], ("im2col",)]))
            expect |= {kind}
        elif kind == "backend":
            kw["backend"] = draw(st.sampled_from(["gpu", "", "C", "NUMBA", None, 1, ["c"], "cuda"]))
            expect |= {"backend"}
        elif kind == "rtol":
            kw["rtol"] = draw(st.sampled_from([0, 0.0, -1e-3, math.nan, -math.inf, "1e-3", True, [1e-3], 1j]))
            expect |= {"rtol"}
    return case, kw, expect, chosen


def _conv_call(fn, kw, *, backward):
    kw = dict(kw)
    if backward:
        args = (kw.pop("grad_y"), kw.pop("x"), kw.pop("w"))
    else:
        args = (kw.pop("x"), kw.pop("w"), kw.pop("bias"))
    return lambda: fn(*args, **kw)


_REFERENCE_KW = ("stride", "padding", "dilation", "groups")


@fuzz(5)
@given(call=invalid_conv_calls())
def test_conv2d_invalid(call):
    """Broken arguments: ValueError/TypeError naming one of them, quickly, from fastconv.conv2d and
    from the reference alike; nothing else escapes; inputs untouched."""
    case, kw, expect, kinds = call
    note(f"corrupted: {kinds}")
    with bounded():
        arrays = [v for v in kw.values() if isinstance(v, np.ndarray)]
        before = snapshot(*arrays)
        refused(_conv_call(fc.conv2d, kw, backward=False), expect, f"conv2d with bad {kinds}")
        if not {"algo", "backend", "rtol"} & set(kinds):
            ref_kw = {k: v for k, v in kw.items() if k not in ("algo", "backend", "rtol")}
            refused(_conv_call(fc.reference.conv2d, ref_kw, backward=False), expect,
                    f"reference.conv2d with bad {kinds}")
        assert_unchanged(before, arrays, "conv2d (refused)")


@fuzz(3)
@given(call=invalid_conv_calls(backward=True), with_bias=st.booleans())
def test_conv2d_backward_invalid(call, with_bias):
    case, kw, expect, kinds = call
    note(f"corrupted: {kinds}")
    with bounded():
        arrays = [v for v in kw.values() if isinstance(v, np.ndarray)]
        before = snapshot(*arrays)
        refused(_conv_call(fc.conv2d_backward, dict(kw, bias=with_bias), backward=True), expect,
                f"conv2d_backward with bad {kinds}")
        if not {"algo", "backend", "rtol", "weight_algo"} & set(kinds):
            ref_kw = {k: v for k, v in kw.items() if k not in ("algo", "backend", "rtol", "weight_algo")}
            refused(_conv_call(fc.reference.conv2d_backward, ref_kw, backward=True), expect,
                    f"reference.conv2d_backward with bad {kinds}")
        assert_unchanged(before, arrays, "conv2d_backward (refused)")


@st.composite
def invalid_pool_calls(draw):
    case = draw(pool_cases(readonly_ok=True))
    if case.x.swapped:
        case.x.passed, case.x.swapped = case.x.values.copy(), False
    kw = dict(x=case.x.passed, **case.hp)
    n, c, h, w = case.x.values.shape
    dtype = case.dtype
    kinds = ["x", "kernel_size", "stride", "padding", "padding-over-half", "dilation", "ceil_mode",
             "zero-channels", "zero-hw", "window-too-big", "backend"]
    touches = {"padding-over-half": {"padding"}, "zero-channels": {"x"}, "zero-hw": {"x"},
               "window-too-big": {"kernel_size", "padding", "dilation", "stride", "ceil_mode"}}
    chosen = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=2, unique=True))
    if len(chosen) == 2 and touches.get(chosen[0], {chosen[0]}) & touches.get(chosen[1], {chosen[1]}):
        chosen = chosen[:1]
    expect = set()
    for kind in chosen:
        if kind == "x":
            kw["x"], _ = _bad_array(draw, case.x.values, "x")
            expect |= {"x", "input"}
        elif kind == "kernel_size":
            kw["kernel_size"] = draw(bad_int_param(positive=True))
            expect |= {"kernel_size"}
        elif kind == "stride":
            kw["stride"] = draw(bad_int_param(positive=True, allow_empty_tuple=True))
            expect |= {"stride"}
        elif kind == "padding":
            kw["padding"] = draw(st.one_of(bad_int_param(positive=False), st.sampled_from(["same", "valid"])))
            expect |= {"padding"}
        elif kind == "padding-over-half":
            kw["padding"] = (case.k[0] // 2 + draw(st.integers(1, 3)), case.p[1])
            expect |= {"padding"}
        elif kind == "dilation":
            kw["dilation"] = draw(bad_int_param(positive=True))
            expect |= {"dilation"}
        elif kind == "ceil_mode":
            kw["ceil_mode"] = draw(st.sampled_from(["yes", "no", "False", "", 1, 0, None, 1.0, [True], 2]))
            expect |= {"ceil_mode"}
        elif kind == "zero-channels":
            kw["x"] = np.zeros((n, 0, h, w), dtype)
            expect |= {"x", "channel", "empty"}
        elif kind == "zero-hw":
            s = [n, c, h, w]
            s[draw(st.sampled_from([2, 3]))] = 0
            kw["x"] = np.zeros(s, dtype)
            expect |= {"x", "empty"}
        elif kind == "window-too-big":
            # a window past the input: out of range unless ceil_mode (torch then keeps one window)
            kw.update(kernel_size=(h + 3, case.k[1]), padding=0, dilation=1, stride=1, ceil_mode=False)
            expect |= {"output size", "kernel_size"}
        elif kind == "backend":
            kw["backend"] = draw(st.sampled_from(["gpu", "", "C", None, 1, ["c"]]))
            expect |= {"backend"}
    return case, kw, expect, chosen


@fuzz(5)
@given(call=invalid_pool_calls())
def test_max_pool2d_invalid(call):
    case, kw, expect, kinds = call
    note(f"corrupted: {kinds}")
    with bounded():
        arrays = [v for v in kw.values() if isinstance(v, np.ndarray)]
        before = snapshot(*arrays)
        kw2 = dict(kw)
        x = kw2.pop("x")
        refused(lambda: fc.max_pool2d(x, **kw2), expect, f"max_pool2d with bad {kinds}")
        if "backend" not in kinds:
            refused(lambda: fc.reference.max_pool2d(x, **kw2), expect, f"reference.max_pool2d with bad {kinds}")
        assert_unchanged(before, arrays, "max_pool2d (refused)")


@st.composite
def invalid_pool_backward_calls(draw):
    case = draw(pool_cases(readonly_ok=True, nonfinite=False))
    assume_n = case.out_shape[0] > 0
    shape = case.x.values.shape
    _, idx = fc.reference.max_pool2d(case.x.values, **case.plain_hp)
    g = np.ones(case.out_shape, case.dtype)
    kw = dict(grad_y=g, indices=idx, input_shape=tuple(shape))
    kinds = ["grad_y", "indices-dtype", "indices-type", "indices-shape", "input_shape", "input_shape-nc",
             "backend"] + (["indices-range"] if assume_n else [])
    chosen = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=2, unique=True))
    expect = set()
    for kind in chosen:
        if kind == "grad_y":
            kw["grad_y"], _ = _bad_array(draw, g, "grad_y")
            expect |= {"grad_y"}
        elif kind == "indices-dtype":
            kw["indices"] = idx.astype(draw(st.sampled_from(["int32", "uint64", "float64", "bool", "int16", "object"])))
            expect |= {"indices"}
        elif kind == "indices-type":
            kw["indices"] = draw(st.sampled_from([idx.tolist(), None, 0, "indices"]))
            expect |= {"indices"}
        elif kind == "indices-shape":
            kw["indices"] = np.zeros(tuple(s + 1 for s in idx.shape), np.int64)
            expect |= {"indices", "shape"}
        elif kind == "indices-range":
            bad = idx.copy()
            flat = bad.reshape(-1)
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(
                [-1, shape[2] * shape[3], 2**40, -(2**63), 2**63 - 1]))
            kw["indices"] = bad
            expect |= {"indices"}
        elif kind == "input_shape":
            kw["input_shape"] = draw(st.sampled_from([
                shape[:3], tuple(shape) + (1,), (shape[0], shape[1], -1, shape[3]), (shape[0], shape[1], 0, shape[3]),
                (shape[0], shape[1], 2**63, shape[3]), (shape[0], shape[1], 2**64, 1),
                (shape[0], shape[1], 1.5, shape[3]), None, 4, "1,1,4,4", (shape[0], shape[1], None, shape[3]),
                (shape[0], shape[1], True, shape[3]), np.array(shape, float)]))
            expect |= {"input_shape"}
        elif kind == "input_shape-nc":
            kw["input_shape"] = (shape[0] + 1, shape[1], shape[2], shape[3])
            expect |= {"input_shape"}
        elif kind == "backend":
            kw["backend"] = draw(st.sampled_from(["gpu", "", None, 1]))
            expect |= {"backend"}
    return case, kw, expect, chosen


@fuzz(3)
@given(call=invalid_pool_backward_calls())
def test_max_pool2d_backward_invalid(call):
    case, kw, expect, kinds = call
    note(f"corrupted: {kinds}")
    with bounded():
        arrays = [v for v in kw.values() if isinstance(v, np.ndarray)]
        before = snapshot(*arrays)
        refused(lambda: fc.max_pool2d_backward(**kw), expect, f"max_pool2d_backward with bad {kinds}")
        if "backend" not in kinds:
            ref_kw = {k: v for k, v in kw.items() if k != "backend"}
            refused(lambda: fc.reference.max_pool2d_backward(**ref_kw), expect,
                    f"reference.max_pool2d_backward with bad {kinds}")
        assert_unchanged(before, arrays, "max_pool2d_backward (refused)")


@fuzz(1)
@given(case=pool_cases(readonly_ok=True, nonfinite=False), backend=st.sampled_from(BACKENDS))
def test_max_pool2d_backward_swapped_indices(case, backend):
    """Indices in big-endian int64 ('>i8'): converted or refused with TypeError naming indices."""
    with bounded():
        shape = case.x.values.shape
        _, idx = fc.reference.max_pool2d(case.x.values, **case.plain_hp)
        g = np.arange(np.prod(case.out_shape), dtype=case.dtype).reshape(case.out_shape)
        out, err = run_or_refuse(lambda: fc.max_pool2d_backward(g, idx.astype(">i8"), shape, backend=backend),
                                 {"indices"}, "max_pool2d_backward('>i8' indices)")
        if err is not None:
            assert isinstance(err, TypeError), f"a non-native byte order must be refused with TypeError: {err!r}"
            return
        check_output(out, shape, case.dtype, [g], "max_pool2d_backward")
        if shape[0]:
            assert_close(out, fc.reference.max_pool2d_backward(g, idx, shape), TOL[case.dtype],
                         "max_pool2d_backward('>i8' indices)")


# ============================================================================= absurd hyper-parameters

# Each runs in its own interpreter (time limit SUBPROCESS_S, address space limited) so that a hang
# or a runaway allocation fails its own test.  "expect": the error's names, or "result" for a call
# whose answer is checked (a 2**30 pool window fits int32: answer or refusal, but quickly).
_ABSURD_SETUP = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
import numpy as np
import fastconv as fc
x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)[..., ::-1].copy()
w = np.ones((1, 1, 3, 3), np.float32)
g1 = np.ones((1, 1, 1, 1), np.float32)
i1 = np.zeros((1, 1, 1, 1), np.int64)
if "numba" in sys.argv[1]:  # load the compiled kernel first: the time limit is for the call
    fc.max_pool2d(x, 2, backend="numba")
t0 = time.perf_counter()
try:
    out = eval(sys.argv[1])
    res = {"status": "returned", "out": repr(out)[:300]}
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], np.ndarray):
        res["values"] = out[0].tolist(); res["indices"] = out[1].tolist()
except BaseException as e:
    res = {"status": "raised", "type": type(e).__module__ + "." + type(e).__name__, "msg": str(e)[:500]}
res["elapsed"] = time.perf_counter() - t0
print("RESULT " + json.dumps(res))
"""

ABSURD = {
    "conv2d-stride-2**63": ("fc.conv2d(x, w, stride=2**63)", {"stride"}),
    "conv2d-stride-2**64-tuple": ("fc.conv2d(x, w, stride=(1, 2**64))", {"stride"}),
    "conv2d-dilation-2**63": ("fc.conv2d(x, w, dilation=2**63)", {"dilation"}),
    "conv2d-padding-2**30": ("fc.conv2d(x, w, padding=2**30)", {"padding", "output"}),
    "conv2d-padding-2**30-dilation-2**29": ("fc.conv2d(x, w, padding=2**30, dilation=2**29)",
                                            {"padding", "dilation", "output"}),
    "conv2d_backward-padding-2**30": ("fc.conv2d_backward(g1, x, w, padding=2**30)", {"padding", "output", "grad_y"}),
    "reference.conv2d-padding-2**30": ("fc.reference.conv2d(x, w, padding=2**30)", {"padding", "output"}),
    "max_pool2d-window-2**40": ("fc.max_pool2d(x, 2**40)", {"kernel_size"}),
    "max_pool2d-window-2**40-padding-2**39": ("fc.max_pool2d(x, 2**40, padding=2**39)", {"kernel_size", "padding"}),
    "max_pool2d-stride-2**63": ("fc.max_pool2d(x, 2, stride=2**63)", {"stride"}),
    "max_pool2d-window-2**30-padding-2**29-c": ("fc.max_pool2d(x, 2**30, padding=2**29, backend='c')", "result"),
    "max_pool2d-window-2**30-padding-2**29-numba": ("fc.max_pool2d(x, 2**30, padding=2**29, backend='numba')",
                                                    "result"),
    "max_pool2d-window-2**30-padding-2**29-reference": ("fc.reference.max_pool2d(x, 2**30, padding=2**29)", "result"),
    "max_pool2d-dilation-2**30": ("fc.max_pool2d(x, 3, dilation=2**30, padding=1)", {"dilation", "output"}),
    "max_pool2d_backward-input_shape-2**31-squared": ("fc.max_pool2d_backward(g1, i1, (1, 1, 2**31, 2**31))",
                                                      {"input_shape"}),
    # 4 TiB: a valid shape, too large for memory (numpy's MemoryError, at once)
    "max_pool2d_backward-input_shape-2**40": ("fc.max_pool2d_backward(g1, i1, (1, 1, 2**40, 1))", "MemoryError"),
    "explain-batch-2**40": ("fc.explain((2**40, 1, 5, 5), (1, 1, 3, 3))", "result"),
}


@pytest.fixture(scope="module")
def absurd_results(tmp_path_factory):
    """Run every ABSURD call in its own interpreter, all at once; {name: result dict}.  The cwd is
    away from the checkout, so they import the installed package (with its C extension)."""
    script = textwrap.dedent(_ABSURD_SETUP)
    env = dict(os.environ, FASTCONV_NUM_THREADS="1")
    cwd = tmp_path_factory.mktemp("absurd")
    procs = {name: subprocess.Popen([sys.executable, "-c", script, expr], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
             for name, (expr, _) in ABSURD.items()}
    results, deadline = {}, time.monotonic() + SUBPROCESS_S
    for name, p in procs.items():
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            results[name] = {"status": "timeout", "stderr": err[-1500:]}
            continue
        line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
        results[name] = json.loads(line[7:]) if line else {"status": f"crashed (exit {p.returncode})",
                                                           "stderr": err[-1500:]}
    return results


@pytest.mark.parametrize("name", list(ABSURD))
def test_absurd_hyper_parameters(name, absurd_results):
    """stride=2**63, a 2**40 window, padding=2**30, ...: a quick ValueError naming the parameter
    (or, for a window that fits, the right answer quickly; for a valid shape too large for memory,
    numpy's MemoryError at once), never a hang, a crash, OverflowError or numpy's unnamed 'array
    is too big'."""
    expr, expect = ABSURD[name]
    r = absurd_results[name]
    assert r["status"] in ("raised", "returned"), f"{expr}: {r['status']} after {SUBPROCESS_S} s\n{r.get('stderr', '')}"
    if expect == "MemoryError":
        assert r["status"] == "raised" and r["type"].endswith("MemoryError"), \
            f"{expr}: {r['status']} {r.get('type')}: {r.get('msg')}"
    elif expect == "result":
        if r["status"] == "raised":
            assert r["type"] == "builtins.ValueError" and any(names(r["msg"], n) for n in
                                                              ("kernel_size", "padding", "x", "input")), \
                f"{expr}: {r['type']}: {r['msg']}"
        elif "values" in r:  # the window covers the whole 5x5 plane: its maximum, first in scan order
            assert r["values"] == [[[[24.0]]]] and r["indices"] == [[[[20]]]], f"{expr}: returned {r['out']}"
    else:
        assert r["status"] == "raised", f"{expr}: accepted, returned {r.get('out')}"
        assert r["type"] == "builtins.ValueError", f"{expr}: {r['type']} escaped: {r['msg']}"
        assert any(names(r["msg"], n) for n in expect), f"{expr}: the message names none of {sorted(expect)}: {r['msg']}"
    assert r["elapsed"] < REFUSAL_S, f"{expr}: took {r['elapsed']:.2f} s"


# ============================================================================= explain


def _shape_form(draw, shape):
    form = draw(st.sampled_from(["tuple", "list", "numpy", "numpy-ints", "torch"] if torch is not None
                                else ["tuple", "list", "numpy", "numpy-ints"]))
    if form == "tuple":
        return tuple(shape)
    if form == "list":
        return list(shape)
    if form == "numpy":
        return np.array(shape, np.int64)
    if form == "numpy-ints":
        return tuple(np.int64(s) for s in shape)
    return torch.Size(shape)


@fuzz(2)
@given(data=st.data())
def test_explain_valid(data):
    """A Plan for every valid problem: the chosen kernel is registered for the op, matches the
    algo/backend filter and can serve the spec; str, to_dict and a runnable repro."""
    case = data.draw(conv_cases(readonly_ok=True, nonfinite=False), label="case")
    op = data.draw(st.sampled_from(CONV_OPS), label="op")
    ks = fc.kernels(op)
    algo = data.draw(st.sampled_from(["auto"] + sorted({k.family for k in ks} | {k.algo for k in ks})), label="algo")
    backend = data.draw(st.sampled_from(BACKENDS), label="backend")
    rtol = data.draw(st.sampled_from([None, 1e-2, 1e-6, math.inf]), label="rtol")
    rigor = data.draw(st.sampled_from([None, "estimate", "frozen"]), label="rigor")
    dtype = data.draw(st.sampled_from([case.dtype, np.dtype(case.dtype), np.dtype(case.dtype).type,
                                       np.dtype(case.dtype).str, np.dtype(case.dtype).newbyteorder(">")]),
                      label="dtype")
    with bounded():
        spec = case.spec()
        xs, ws = _shape_form(data.draw, case.x.values.shape), _shape_form(data.draw, case.w.values.shape)
        call = lambda: fc.explain(xs, ws, **case.hp, dtype=dtype, op=op, algo=algo, backend=backend,  # noqa: E731
                                  rtol=rtol, rigor=rigor)
        matching = [k for k in ks if (backend == "auto" or k.backend == backend)
                    and (algo == "auto" or algo in (k.algo, k.family))]
        ok = eligible(matching, spec, rtol) if matching else []
        if not ok:
            refused(call, {"algo", "backend", "rtol", algo}, f"explain(op={op}, algo={algo})")
            return
        plan = call()
        assert isinstance(plan, fc.Plan)
        assert plan.op == op and plan.spec == spec, f"explain: plan for {plan.op} {plan.spec}, expected {op} {spec}"
        assert plan.chosen in {k.name for k in ok}, f"explain chose {plan.chosen}, not one of {[k.name for k in ok]}"
        assert {c.name for c in plan.candidates} <= {k.name for k in ks}
        assert str(plan) and json.dumps(plan.to_dict(), default=str)
        snippet = plan.repro()
        compile(snippet, "<repro>", "exec")
        if spec.n > 0:
            exec(snippet, {})  # the snippet runs the chosen kernel by name


_HUGE_DIMS = (2**31 - 1, 2**31, 2**40, 2**62, 2**62 + 1, 2**63, 2**64)


@fuzz(1)
@given(data=st.data())
def test_explain_huge_shapes(data):
    """Shapes no array could hold: a Plan (explain allocates nothing), or a ValueError naming the
    shape when a dimension is past what the kernels' index arithmetic holds; quickly, and never
    an OverflowError."""
    dims = [1, 3, 5, 5]
    where = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True), label="dims")
    for i in where:
        dims[i] = data.draw(st.sampled_from(_HUGE_DIMS), label=f"dim {i}")
    cout = data.draw(st.sampled_from([1, 2**31, 2**62, 2**63]), label="c_out")
    ws = (cout, dims[1], 3, 3)
    op = data.draw(st.sampled_from(CONV_OPS), label="op")
    with bounded():
        t0 = time.perf_counter()
        try:
            plan = fc.explain(tuple(dims), ws, padding=1, op=op)
        except Exception as e:  # noqa: BLE001
            assert _clean(e) and isinstance(e, ValueError), f"explain{tuple(dims), ws}: {type(e).__name__}: {e}"
            assert any(names(str(e), n) for n in ("x", "weight", "shape", "too large", "padding")), str(e)
        else:
            assert max(dims + [cout]) < 2**63, f"explain{tuple(dims), ws}: accepted a dimension no int64 holds"
            assert isinstance(plan, fc.Plan) and plan.chosen in {k.name for k in fc.kernels(op)}
            str(plan)
        assert time.perf_counter() - t0 < REFUSAL_S


@fuzz(3)
@given(data=st.data())
def test_explain_invalid(data):
    case = data.draw(conv_cases(readonly_ok=True, nonfinite=False), label="case")
    kw = dict(x_shape=case.x.values.shape, w_shape=case.w.values.shape, **case.hp, dtype=case.dtype)
    kinds = data.draw(st.lists(st.sampled_from(["op", "rigor", "dtype", "x_shape", "w_shape", "stride", "padding",
                                                "dilation", "groups", "algo", "backend", "rtol"]),
                               min_size=1, max_size=2, unique=True), label="corrupted")
    expect = set()
    for kind in kinds:
        if kind == "op":
            kw["op"] = data.draw(st.sampled_from(["conv2d", "maxpool2d.fwd", "", None, 1, "CONV2D.FWD"]))
            expect |= {"op"}
        elif kind == "rigor":
            kw["rigor"] = data.draw(st.sampled_from(["fast", "", "MEASURE", 1, "wisdom"]))
            expect |= {"rigor"}
        elif kind == "dtype":
            kw["dtype"] = data.draw(st.sampled_from(list(BAD_DTYPES) + ["nonsense", np.int32, "float128", 42]))
            expect |= {"dtype"}
        elif kind in ("x_shape", "w_shape"):
            s = list(kw[kind])
            kw[kind] = data.draw(st.sampled_from([tuple(s[:3]), tuple(s) + (1,), (s[0], s[1], -1, s[3]),
                                                  (s[0], s[1], 1.5, s[3]), None, 5, "1,1,5,5",
                                                  (s[0], s[1], None, s[3]), (s[0], s[1], True, s[3])]))
            expect |= {"x", "input", "shape"} if kind == "x_shape" else {"weight", "shape"}
        elif kind in ("stride", "dilation"):
            kw[kind] = data.draw(bad_int_param(positive=True))
            expect |= {kind}
        elif kind == "padding":
            kw["padding"] = data.draw(st.one_of(bad_int_param(positive=False), st.sampled_from(["full", "SAME"])))
            expect |= {"padding"}
        elif kind == "groups":
            kw["groups"] = data.draw(st.sampled_from([0, -1, 2**63, 1.0, None, "1", True]))
            expect |= {"groups"}
        elif kind == "algo":
            kw["algo"] = data.draw(st.sampled_from(["fast", "", None, 3, ["im2col"]]))
            expect |= {"algo"}
        elif kind == "backend":
            kw["backend"] = data.draw(st.sampled_from(["gpu", "", None, 1]))
            expect |= {"backend"}
        elif kind == "rtol":
            kw["rtol"] = data.draw(st.sampled_from([0, -1.0, math.nan, "1e-3", True]))
            expect |= {"rtol"}
    with bounded():
        xs, ws = kw.pop("x_shape"), kw.pop("w_shape")
        refused(lambda: fc.explain(xs, ws, **kw), expect, f"explain with bad {kinds}")


# ============================================================================= kernels / refusal


@fuzz(2)
@given(op=st.one_of(st.none(), st.sampled_from(list(fc.registry.OPS)), st.sampled_from([np.str_("conv2d.fwd")])),
       conv=conv_cases(readonly_ok=True, nonfinite=False), pool=pool_cases(readonly_ok=True, nonfinite=False))
def test_kernels_and_their_refusals(op, conv, pool):
    """fc.kernels(op): Kernel records of that op, reference last, names backend.algo; every
    kernel's refusal(spec) is None or a reason starting with its name, and never raises."""
    with bounded():
        ks = fc.kernels(op)
        assert isinstance(ks, tuple) and ks and all(isinstance(k, fc.Kernel) for k in ks)
        ops = list(fc.registry.OPS) if op is None else [str(op)]
        for o in ops:
            mine = [k for k in ks if k.op == o]
            assert mine and mine[-1].backend == "numpy", f"{o}: the reference must come last"
            assert len({k.name for k in mine}) == len(mine), f"{o}: duplicate kernel names"
        cspec = conv.spec()
        pspec = PoolSpec.from_shape(pool.x.values.shape, **pool.plain_hp, dtype=pool.dtype)
        for k in ks:
            assert k.op in ops and k.backend in ("c", "numba", "numpy") and k.name == f"{k.backend}.{k.algo}"
            assert set(FLOATS) <= set(k.rtol) and all(0 < k.rtol[d] < 1 for d in FLOATS)
            spec = cspec if k.op.startswith("conv2d") else (pspec if k.op == "maxpool2d.fwd" else pspec.backward_spec())
            reason = k.refusal(spec)
            assert reason is None or (isinstance(reason, str) and reason.startswith(k.name + ":")), reason
            repr(k)


@fuzz(1)
@given(op=st.sampled_from(["conv2d", "", "CONV2D.FWD", "maxpool", 42, 1.0, b"conv2d.fwd", ["conv2d.fwd"],
                           ("conv2d.fwd",), True]))
def test_kernels_invalid(op):
    with bounded():
        refused(lambda: fc.kernels(op), {"op"}, f"kernels({op!r})")


# ============================================================================= set_num_threads


@fuzz(1)
@given(n=st.one_of(st.integers(1, MAX_THREADS), st.sampled_from([np.int64(1), np.int32(MAX_THREADS)])),
       bad=st.sampled_from([0, -1, MAX_THREADS + 1, 2**31, 2**63, 2**64, -(2**63), 1.0, 2.5, math.nan, None,
                            "2", True, False, np.bool_(True), [1], (1,)]),
       conv=conv_cases(readonly_ok=False, max_n=1), seed=st.integers(0, 2**32 - 1))
def test_set_num_threads(n, bad, conv, seed):
    """A valid count is kept (also by an invalid call after it) and results stay right, for a
    tiny problem and one big enough to run on every thread; an invalid count is refused naming n."""
    old = fc.get_num_threads()
    try:
        with bounded():
            out, err = run_or_refuse(lambda: fc.set_num_threads(n), {"n"}, f"set_num_threads({n!r})")
            if err is not None:  # numpy ints: accepted or refused, both named
                assert isinstance(n, np.integer), f"set_num_threads({n!r}) refused: {err}"
                return
            assert out is None and fc.get_num_threads() == int(n)
            refused(lambda: fc.set_num_threads(bad), {"n"}, f"set_num_threads({bad!r})")
            assert fc.get_num_threads() == int(n), "an invalid call changed the thread count"
            spec = conv.spec()
            if spec.n and not conv.swapped:
                y = fc.conv2d(conv.x.passed, conv.w.passed, None, **conv.hp)
                assert_close(y, fc.reference.conv2d(conv.x.values, conv.w.values, None, **conv.plain_hp),
                             max(k.rtol[conv.dtype] for k in fc.kernels("conv2d.fwd")), "conv2d after set_num_threads")
            rng = np.random.default_rng(seed)
            x = rng.standard_normal((2, 16, 16, 16)).astype(np.float32)  # ~1.8 MFLOP: over threads.SERIAL_WORK
            w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
            for backend in ("c", "numba"):
                y = fc.conv2d(x, w, padding=1, algo="im2col", backend=backend)
                assert_close(y, fc.reference.conv2d(x, w, padding=1), 1e-5, f"{backend}.im2col on {n} threads")
                py, pi = fc.max_pool2d(x, 3, 1, 1, backend=backend)
                ry, ri = fc.reference.max_pool2d(x, 3, 1, 1)
                assert np.array_equal(py, ry) and np.array_equal(pi, ri), f"{backend}.maxpool on {n} threads"
    finally:
        fc.set_num_threads(old)


# ============================================================================= tune


@st.composite
def tune_problems(draw):
    """1-2 cheap problems in every accepted form, and the (op, spec) pairs tune should plan."""
    problems, pairs = [], []
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["conv", "pool", "pair"]))
        if kind == "pool":
            case = draw(pool_cases(readonly_ok=True, nonfinite=False))
            spec = PoolSpec.from_shape(case.x.values.shape, **case.plain_hp, dtype=case.dtype)
        else:
            case = draw(conv_cases(readonly_ok=True, nonfinite=False))
            spec = case.spec()
        if kind == "pair":
            op = draw(st.sampled_from(CONV_OPS))
            problems.append((op, spec))
            pairs.append((op, spec, True))
        else:
            problems.append(spec)
            pairs.append((None, spec, False))
    return problems, pairs


@fuzz(0.25, deadline=timedelta(seconds=30))
@given(prob=tune_problems(), passes=st.sampled_from([("fwd",), ("fwd", "bwd"), "bwd", ["fwd"]]),
       budget=st.sampled_from([0.05, 0.2]), force=st.booleans(), rigor=st.sampled_from(["measure", "patient"]))
def test_tune_cheap(prob, passes, budget, force, rigor):
    """tune() on tiny problems: one Plan per distinct (op, spec), each choosing a kernel that can
    serve it, within its time budget; the tuned choice then gives right answers."""
    problems, pairs = prob
    ps = (passes,) if isinstance(passes, str) else tuple(passes)
    expected = []
    for op, spec, explicit in pairs:
        if explicit:
            ops = [op]
        elif isinstance(spec, ConvSpec):
            ops = [o for p in ps for o in (("conv2d.fwd",) if p == "fwd" else ("conv2d.bwd_data", "conv2d.bwd_weight"))]
        else:
            ops = [o for p in ps for o in (("maxpool2d.fwd",) if p == "fwd" else ("maxpool2d.bwd",))]
        for o in ops:
            s = spec.backward_spec() if o == "maxpool2d.bwd" else spec
            if (o, s) not in expected:
                expected.append((o, s))
    with bounded():
        t0 = time.perf_counter()
        plans = fc.tune(problems, passes=passes, budget_s=budget, force=force, rigor=rigor, progress=io.StringIO())
        elapsed = time.perf_counter() - t0
        assert isinstance(plans, list) and [(p.op, p.spec) for p in plans] == expected
        for plan in plans:
            k = kernel_named(plan.op, plan.chosen)
            assert k.refusal(plan.spec) is None, f"tune chose {k.name}, which refuses {plan.spec}"
            assert plan.source in ("measured now", "cache", "only candidate", "heuristic")
            str(plan)
        # the budget is per problem; compilation and the reference call are not counted (~1 s slack)
        assert elapsed <= len(plans) * (budget + 1.0) + 1.0, \
            f"tune took {elapsed:.2f} s for {len(plans)} problems at budget_s={budget}"
        rng = np.random.default_rng(0)
        for plan in plans:
            s = plan.spec
            if plan.op == "conv2d.fwd":
                x = rng.standard_normal(s.input_shape).astype(s.dtype)
                w = rng.standard_normal(s.weight_shape).astype(s.dtype)
                pad = (s.padding[0], s.padding[2]) if s.padding[0::2] == s.padding[1::2] else "same"
                k = kernel_named(plan.op, plan.chosen)
                y = fc.conv2d(x, w, None, s.stride, pad, s.dilation, s.groups, algo=k.algo, backend=k.backend)
                assert_close(y, fc.reference.conv2d(x, w, None, s.stride, pad, s.dilation, s.groups),
                             kernel_named(plan.op, plan.chosen).rtol[s.dtype], "conv2d after tune")


@fuzz(2, deadline=timedelta(seconds=30))
@given(data=st.data())
def test_tune_invalid(data):
    spec = ConvSpec.from_shapes((1, 2, 5, 5), (2, 2, 3, 3))
    kw = dict(problems=[spec], budget_s=0.05, progress=io.StringIO())
    kinds = data.draw(st.lists(st.sampled_from(["rigor", "budget_s", "batch", "passes", "net", "dtype", "problems"]),
                               min_size=1, max_size=2, unique=True), label="corrupted")
    expect = set()
    for kind in kinds:
        if kind == "rigor":
            kw["rigor"] = data.draw(st.sampled_from(["estimate", "frozen", "fast", "", None, 1]))
            expect |= {"rigor"}
        elif kind == "budget_s":
            kw["budget_s"] = data.draw(st.sampled_from([0, -1, math.inf, math.nan, "1", True, [1.0]]))
            expect |= {"budget_s"}
        elif kind == "batch":
            kw.update(net="lenet5", batch=data.draw(st.sampled_from([0, -1, 1.5, True, "1", None, 2**63])))
            expect |= {"batch"}
        elif kind == "passes":
            kw["passes"] = data.draw(st.sampled_from(["sideways", ("fwd", "back"), ("forward",), ["bwd", 1], 42, None]))
            expect |= {"pass", "passes"}
        elif kind == "net":
            kw["net"] = data.draw(st.sampled_from(["nosuchnet", "vgg17", 42, [42]]))
            expect |= {"net"}
        elif kind == "dtype":
            kw["dtype"] = data.draw(st.sampled_from(["int8", "float16", "complex64", "nonsense", np.int32, 42]))
            expect |= {"dtype"}
        elif kind == "problems":
            kw["problems"] = data.draw(st.sampled_from([
                [42], ["conv"], [("conv2d.fwd",)], [("nosuch.op", spec)], [("conv2d.fwd", 42)],
                [("maxpool2d.fwd", spec)], [("conv2d.fwd", PoolSpec.from_shape((1, 1, 4, 4), 2))], 42,
                [None], [{"op": "conv2d.fwd"}]]))
            expect |= {"problem", "spec", "op", "ConvSpec"}
    with bounded():
        refused(lambda: fc.tune(**kw), expect, f"tune with bad {kinds}", quick=False)


# ============================================================================= fastconv.torch


def _tensor_layout(t, layout):
    return _tensor_layout_view(t, layout).detach()


def _tensor_layout_view(t, layout):
    if layout == "contiguous":
        return t.clone()
    if layout == "channels_last" and t.dim() == 4:
        return t.clone().contiguous(memory_format=torch.channels_last)
    if layout == "transposed" and t.dim() >= 2:
        return t.clone().transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "sliced" and t.dim() >= 1:
        big = torch.zeros(t.shape[:-1] + (2 * t.shape[-1] + 1,), dtype=t.dtype)
        big[..., 1::2] = t
        return big[..., 1::2]
    return t.clone()


_TORCH_LAYOUTS = ("contiguous", "contiguous", "channels_last", "transposed", "sliced")


@needs_torch
@fuzz(2)
@given(data=st.data(), case=conv_cases(backward=True, readonly_ok=False),
       needs=st.tuples(st.booleans(), st.booleans(), st.booleans()), double=st.booleans())
def test_torch_conv2d(data, case, needs, double):
    """fastconv.torch.conv2d forward and backward against torch.nn.functional.conv2d on the same
    tensors (any memory layout), NaN/inf included; with double=True the second derivative too."""
    if case.swapped:
        return  # torch tensors are native
    with bounded():
        tol_f = chosen_rtol("conv2d.fwd", case.spec(), "auto", "auto", None, list(fc.kernels("conv2d.fwd")))
        tol_b = max(chosen_rtol(o, case.spec(), "auto", "auto", None, list(fc.kernels(o)))
                    for o in ("conv2d.bwd_data", "conv2d.bwd_weight"))
        base = [torch.from_numpy(a.values.copy()) for a in (case.x, case.w)] + \
            [None if case.b is None else torch.from_numpy(case.b.values.copy())]
        lays = [data.draw(st.sampled_from(_TORCH_LAYOUTS), label=f"layout {i}") for i in range(3)]

        def leaves():
            return [None if t is None else _tensor_layout(t, lay).requires_grad_(need)
                    for t, lay, need in zip(base, lays, needs)]

        mine, ref = leaves(), leaves()
        before = snapshot(*[t for t in mine if t is not None])
        y = fct.conv2d(mine[0], mine[1], mine[2], **case.hp)
        with torch_oracle():
            yt = F.conv2d(ref[0], ref[1], ref[2], **case.plain_hp)
        assert isinstance(y, torch.Tensor) and y.dtype == yt.dtype and y.shape == yt.shape
        assert_close(y.detach().numpy(), yt.detach().numpy(), tol_f + TORCH_TOL[case.dtype], "fct.conv2d vs F.conv2d")
        assert y.requires_grad == yt.requires_grad
        if yt.requires_grad:
            gy = torch.from_numpy(case.grad_y.values.copy())
            if double and not any(np.isnan(a.values).any() or np.isinf(a.values).any()
                                  for a in (case.x, case.w, case.grad_y)):
                gy.requires_grad_()
                inputs = [t for t in mine if t is not None and t.requires_grad]
                inputs_t = [t for t in ref if t is not None and t.requires_grad]
                g1 = torch.autograd.grad(y, inputs, gy, create_graph=True)
                with torch_oracle():
                    g1t = torch.autograd.grad(yt, inputs_t, gy, create_graph=True)
                for a, b in zip(g1, g1t):
                    assert_close(a.detach().numpy(), b.detach().numpy(), tol_b + TORCH_TOL[case.dtype],
                                 "fct.conv2d first derivative (create_graph)")
                s = sum((a * a).sum() for a in g1)
                st_ = sum((b * b).sum() for b in g1t)
                targets = inputs + [gy]
                if s.requires_grad:
                    g2 = torch.autograd.grad(s, targets, allow_unused=True)
                    with torch_oracle():
                        g2t = torch.autograd.grad(st_, inputs_t + [gy], allow_unused=True)
                    for a, b in zip(g2, g2t):
                        if b is None:
                            continue
                        assert a is not None, "fct.conv2d: a second derivative is missing"
                        assert_close(a.detach().numpy(), b.detach().numpy(), 10 * (tol_b + TORCH_TOL[case.dtype]),
                                     "fct.conv2d second derivative")
                else:
                    assert not st_.requires_grad, "fct.conv2d: the first derivative is not differentiable"
            else:
                y.backward(gy)
                with torch_oracle():
                    yt.backward(gy)
                for i, (a, b) in enumerate(zip(mine, ref)):
                    if b is not None and b.requires_grad:
                        assert_close(a.grad.numpy(), b.grad.numpy(), tol_b + TORCH_TOL[case.dtype],
                                     f"fct.conv2d grad of argument {i}")
        assert_unchanged(before, [t for t in mine if t is not None], "fct.conv2d")


@needs_torch
@fuzz(2)
@given(data=st.data(), case=pool_cases(readonly_ok=False), return_indices=st.booleans())
def test_torch_max_pool2d(data, case, return_indices):
    if case.x.swapped:
        return
    with bounded():
        base = torch.from_numpy(case.x.values.copy())
        lay = data.draw(st.sampled_from(_TORCH_LAYOUTS), label="layout")
        mine = _tensor_layout(base, lay).requires_grad_()
        ref = _tensor_layout(base, lay).requires_grad_()
        hp = dict(case.hp, ceil_mode=bool(case.ceil_mode))  # torch takes a Python bool only
        out = fct.max_pool2d(mine, **hp, return_indices=return_indices)
        outt = F.max_pool2d(ref, **case.plain_hp, return_indices=True)
        y = out[0] if return_indices else out
        assert isinstance(y, torch.Tensor) and y.shape == outt[0].shape
        assert_close(y.detach().numpy(), outt[0].detach().numpy(), 0.0, "fct.max_pool2d vs F.max_pool2d")
        if return_indices:
            assert torch.equal(out[1], outt[1]), "fct.max_pool2d indices differ from torch's"
        g = torch.from_numpy(data.draw(values(case.out_shape, case.dtype), label="grad"))
        y.backward(g)
        outt[0].backward(g)
        assert_close(mine.grad.numpy(), ref.grad.numpy(), TOL[case.dtype] + TORCH_TOL[case.dtype],
                     "fct.max_pool2d gradient")


@needs_torch
@fuzz(1)
@given(case=conv_cases(readonly_ok=False, nonfinite=False), bias=st.booleans(),
       padding_mode=st.sampled_from(["zeros", "zeros", "zeros", "reflect", "replicate", "circular"]),
       pool=pool_cases(readonly_ok=False, nonfinite=False), return_indices=st.booleans())
def test_torch_modules(case, bias, padding_mode, pool, return_indices):
    """fct.Conv2d / fct.MaxPool2d: the constructors of torch.nn, the same outputs and gradients
    as torch.nn's with the same state; a padding_mode fastconv lacks is refused naming it."""
    with bounded():
        cin, cout = case.x.values.shape[1], case.w.values.shape[0]
        kh, kw = case.w.values.shape[2:]
        args = dict(in_channels=cin, out_channels=cout, kernel_size=(kh, kw), bias=bias,
                    dtype=getattr(torch, case.dtype), **{k: v for k, v in case.plain_hp.items()})
        if padding_mode != "zeros":
            try:
                torch.nn.Conv2d(**args, padding_mode=padding_mode)
            except Exception:  # noqa: BLE001 - torch refuses it too (e.g. 'same' with some modes)
                return
            refused(lambda: fct.Conv2d(**args, padding_mode=padding_mode), {"padding_mode"},
                    f"fct.Conv2d(padding_mode={padding_mode!r})", quick=False)
            return
        mine, ref = fct.Conv2d(**args), torch.nn.Conv2d(**args)
        mine.load_state_dict(ref.state_dict())
        x1 = torch.from_numpy(case.x.values.copy()).requires_grad_()
        x2 = torch.from_numpy(case.x.values.copy()).requires_grad_()
        y = mine(x1)
        with torch_oracle():
            yt = ref(x2)
        tol = max(chosen_rtol(o, case.spec(), "auto", "auto", None, list(fc.kernels(o))) for o in CONV_OPS)
        assert_close(y.detach().numpy(), yt.detach().numpy(), tol + TORCH_TOL[case.dtype], "fct.Conv2d forward")
        if case.x.values.shape[0]:
            y.sum().backward()
            with torch_oracle():
                yt.sum().backward()
            assert_close(x1.grad.numpy(), x2.grad.numpy(), tol + TORCH_TOL[case.dtype], "fct.Conv2d input grad")
            assert_close(mine.weight.grad.numpy(), ref.weight.grad.numpy(), tol + TORCH_TOL[case.dtype],
                         "fct.Conv2d weight grad")
        pm = fct.MaxPool2d(**pool.plain_hp, return_indices=return_indices)
        pr = torch.nn.MaxPool2d(**pool.plain_hp, return_indices=return_indices)
        t = torch.from_numpy(pool.x.values.copy())
        a, b = pm(t), pr(t)
        if return_indices:
            assert torch.equal(a[1], b[1])
            a, b = a[0], b[0]
        assert_close(a.numpy(), b.numpy(), 0.0, "fct.MaxPool2d forward")


@needs_torch
@fuzz(2)
@given(data=st.data())
def test_torch_invalid(data):
    """Tensors fastconv cannot take and broken hyper-parameters: ValueError/TypeError naming
    them; an unbatched (3-D) input either works as in torch or is refused naming the input."""
    case = data.draw(conv_cases(readonly_ok=False, nonfinite=False, max_n=1), label="case")
    x = torch.from_numpy(case.x.values.copy())
    w = torch.from_numpy(case.w.values.copy())
    kw = dict(case.plain_hp)
    kind = data.draw(st.sampled_from(["dtype-x", "dtype-w", "mixed", "device", "ndim", "unbatched", "stride",
                                      "padding", "groups", "pool-ceil_mode", "pool-kernel_size", "pool-dtype"]),
                     label="kind")
    with bounded():
        if kind == "unbatched":
            if case.x.values.shape[0] != 1:
                return
            out, err = run_or_refuse(lambda: fct.conv2d(x[0], w, None, **kw), {"input", "x"}, "fct.conv2d(3-D)")
            if err is None:
                assert_close(out.numpy(), F.conv2d(x[0], w, None, **kw).numpy(), 1e-3, "fct.conv2d(3-D)")
            return
        if kind.startswith("pool-"):
            hp = dict(kernel_size=1, stride=None, padding=0, dilation=1, ceil_mode=False)
            expect = {kind[5:], "input", "dtype"} if kind == "pool-dtype" else {kind[5:]}
            if kind == "pool-ceil_mode":
                hp["ceil_mode"] = data.draw(st.sampled_from(["yes", 1, None, 0.0]))
            elif kind == "pool-kernel_size":
                hp["kernel_size"] = data.draw(bad_int_param(positive=True))
            else:
                x = x.to(data.draw(st.sampled_from([torch.int64, torch.float16, torch.bfloat16, torch.bool])))
            refused(lambda: fct.max_pool2d(x, **hp), expect, f"fct.max_pool2d with bad {kind}")
            refused(lambda: fct.MaxPool2d(**hp)(x), expect, f"fct.MaxPool2d with bad {kind}", quick=False)
            return
        expect = set()
        if kind in ("dtype-x", "dtype-w"):
            dt = data.draw(st.sampled_from([torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.bool,
                                            torch.complex64, torch.uint8]))
            if kind == "dtype-x":
                x = x.to(dt)
                expect = {"input", "dtype"}
            else:
                w = w.to(dt)
                expect = {"weight", "dtype"}
        elif kind == "mixed":
            w = w.to(torch.float64 if case.dtype == "float32" else torch.float32)
            expect = {"mixed", "dtype", "weight", "input", "x"}
        elif kind == "device":
            x = x.to("meta")
            expect = {"input", "meta", "device", "cpu"}
        elif kind == "ndim":
            x = x.reshape(x.shape + (1,)) if data.draw(st.booleans()) else x.reshape(-1)
            expect = {"input", "x"}
        elif kind in ("stride", "padding"):
            kw[kind] = data.draw(st.sampled_from([0, -1, 2**63, 1.5, None, "x"]) if kind == "stride"
                                 else st.sampled_from([-1, 2**63, 1.5, "full"]))
            expect = {kind}
        elif kind == "groups":
            kw["groups"] = data.draw(st.sampled_from([0, -1, case.x.values.shape[1] + 1, 1.5, None]))
            expect = {"groups"}
        refused(lambda: fct.conv2d(x, w, None, **kw), expect, f"fct.conv2d with bad {kind}")
