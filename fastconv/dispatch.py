"""Choosing a kernel for a problem: FFTW's planner, keyed as PyTorch keys its benchmark cache.

The dispatcher never names a kernel: it filters the registry by the caller's ``algo``,
``backend`` and ``rtol`` and by each kernel's own refusal, then decides among what is eligible.
The NumPy reference is eligible only when nothing else is.

Modes (``FASTCONV_TUNING`` or ``set_tuning``), as FFTW's planner rigor:

- ``measure`` (default): the first time a problem key (op, spec incl. dtype, algo/backend/rtol,
  thread count) meets several eligible kernels, they are timed (fastconv/measure.py) on random
  inputs of the spec's shapes, the fastest is kept in memory and in the tuning cache on disk
  (fastconv/tuning_cache.py), and every later call is a dict lookup;
- ``patient``: more rounds, no early drop of slow contenders, and it trusts only patient entries;
- ``estimate`` (also ``FASTCONV_AUTOTUNE=0``): the heuristic below, no timing;
- ``frozen``: choices never change at run time: a cache entry when there is one (the file is read
  once), else the heuristic; nothing is timed or written.

A time budget of 0 (``FASTCONV_TUNE_BUDGET_S=0`` or ``set_tuning(budget_s=0)``) never times either:
a complete cache entry, else the heuristic.

The heuristic (``family_order``) ranks algorithm families; within a family it takes the largest
output tile its variants' names state (winograd_f4k3 before winograd_f2k3), then registry order
(the registry lists C before Numba):

- max-pool: registry order;
- forward and grad of input: Winograd first for 3x3, stride 1, dilation 1 with at least
  WINOGRAD_MIN_CHANNELS input and output channels per group (where its transforms amortize),
  then im2col, then direct;
- grad of weight: im2col, then direct -- but direct first for one input channel per group
  (depthwise), where im2col's GEMMs degenerate to dot products.

Measured on VGG-16, ResNet-18, GoogLeNet, AlexNet, LeNet-5 and MobileNet-v2's depthwise layers
(2-core AMD EPYC, forward and both backward passes): im2col beat direct on the median layer in
every group, small K and depthwise included (which is why there is no "direct for small K"
rule), except the depthwise weight gradient; Winograd won about half the layers with >= 64
channels and lost most of those with fewer.  ``fastconv tune`` and ``explain`` print the heuristic's pick beside the measured best, which is
how the rule is checked against this machine (README: "Choosing kernels").
"""
from __future__ import annotations

import datetime
import math
import os
import re
import sys
import threading
import warnings
from dataclasses import dataclass, field
from typing import Optional

from . import measure, nonfinite, registry, threads, tuning_cache
from .c import _lib as c_lib
from .registry import BACKENDS, Kernel
from .spec import PARAM_LIMIT, ConvSpec, PoolBackwardSpec, PoolSpec, float_dtype

MODES = ("estimate", "measure", "patient", "frozen")
DEFAULT_BUDGET_S = 10.0
WINOGRAD_MIN_CHANNELS = 64


# ----------------------------------------------------------------------------- settings

def _warn_env(name: str, value: str, expected: str) -> None:
    warnings.warn(f"fastconv: ignoring {name}={value!r}: expected {expected}", RuntimeWarning, stacklevel=3)


def _settings_from_environment() -> tuple[str, float]:
    mode, budget = "measure", DEFAULT_BUDGET_S
    value = os.environ.get("FASTCONV_TUNING")
    if value:
        if value.strip().lower() in MODES:
            mode = value.strip().lower()
        else:
            _warn_env("FASTCONV_TUNING", value, " | ".join(MODES))
    if os.environ.get("FASTCONV_AUTOTUNE", "").strip().lower() in ("0", "false", "no", "off") \
            and mode in ("measure", "patient"):
        mode = "estimate"
    value = os.environ.get("FASTCONV_TUNE_BUDGET_S")
    if value:
        try:
            budget = float(value)
            if not budget >= 0 or math.isinf(budget):
                raise ValueError
        except ValueError:
            _warn_env("FASTCONV_TUNE_BUDGET_S", value, "a non-negative number of seconds")
            budget = DEFAULT_BUDGET_S
    return mode, budget


_mode, _budget_s = _settings_from_environment()


def set_tuning(mode: Optional[str] = None, budget_s: Optional[float] = None) -> None:
    """Set the dispatcher's mode (estimate | measure | patient | frozen) and/or its time budget per
    problem in seconds (0: never time; the heuristic decides).  Forgets the choices made so far."""
    global _mode, _budget_s
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"set_tuning: mode={mode!r} is not one of {', '.join(map(repr, MODES))}")
    if budget_s is not None:
        if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)):
            raise TypeError(f"set_tuning: budget_s={budget_s!r} must be a number of seconds")
        if not 0 <= budget_s < math.inf:
            raise ValueError(f"set_tuning: budget_s={budget_s!r} must be finite and non-negative")
    with _lock:
        if mode is not None:
            _mode = mode
        if budget_s is not None:
            _budget_s = float(budget_s)
        forget()


def get_tuning() -> dict:
    """The dispatcher's settings and where its cache lives."""
    cache = tuning_cache.current(threads.get_num_threads())
    return {"mode": _mode, "budget_s": _budget_s, "cache_dir": cache.directory, "cache_file": cache.path,
            "env_key": cache.key}


# ----------------------------------------------------------------------------- eligibility

def _matches(kernel: Kernel, algo: str, backend: str) -> bool:
    return (backend == "auto" or kernel.backend == backend) and \
        (algo == "auto" or algo in (kernel.algo, kernel.family))


def _is_reference(kernel: Kernel) -> bool:
    return kernel.backend == "numpy"


def eligible(op: str, spec, algo: str = "auto", backend: str = "auto", rtol: Optional[float] = None,
             *, caller: str) -> tuple[list, list]:
    """(kernels that may serve, reasons of those that may not), or ValueError when none may."""
    if not isinstance(backend, str) or backend not in ("auto",) + BACKENDS:
        raise ValueError(f"{caller}: backend={backend!r} is not one of 'auto', " + ", ".join(map(repr, BACKENDS)))
    # conv2d_backward takes the weight gradient's kernel as weight_algo
    algo_arg = "weight_algo" if op == "conv2d.bwd_weight" and caller == "conv2d_backward" else "algo"
    if not isinstance(algo, str):
        raise TypeError(f"{caller}: {algo_arg}={algo!r} must be a string")
    if rtol is not None and (isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol > 0):
        raise ValueError(f"{caller}: rtol={rtol!r} must be a positive number or None")
    named = [k for k in registry.kernels(op) if _matches(k, algo, backend)]
    if not named:
        known = sorted({k.algo for k in registry.kernels(op)} | {k.family for k in registry.kernels(op)})
        raise ValueError(f"{caller}: no {op} kernel matches {algo_arg}={algo!r}, backend={backend!r} "
                         f"(algos: 'auto', {', '.join(map(repr, known))})")
    ok, refused = [], []
    for kernel in named:
        reason = kernel.refusal(spec)
        if reason is None and rtol is not None and kernel.rtol[spec.dtype] > rtol:
            reason = f"{kernel.name}: error bound {kernel.rtol[spec.dtype]:.0e} is over the rtol={rtol:g} budget"
        (refused if reason else ok).append(reason or kernel)
    if not ok:
        raise ValueError(f"{caller}: no kernel can serve this problem: " + "; ".join(refused))
    if any(not _is_reference(k) for k in ok):
        refused += [f"{k.name}: the reference serves only when no other kernel can" for k in ok if _is_reference(k)]
        ok = [k for k in ok if not _is_reference(k)]
    return ok, refused


# ----------------------------------------------------------------------------- the heuristic

def family_order(op: str, spec) -> tuple[str, ...]:
    """The heuristic's preferred algorithm families for op on spec, best first; families not
    listed come after, in registry order.  See the module docstring for the rule."""
    if not isinstance(spec, ConvSpec):
        return ()
    per_group_in, per_group_out = spec.c_in // spec.groups, spec.c_out // spec.groups
    if op == "conv2d.bwd_weight":
        return ("direct", "im2col") if per_group_in == 1 else ("im2col", "direct")
    winograd = (spec.kh, spec.kw) == (3, 3) and spec.stride == (1, 1) and spec.dilation == (1, 1) \
        and min(per_group_in, per_group_out) >= WINOGRAD_MIN_CHANNELS
    return (("winograd",) if winograd else ()) + ("im2col", "direct")


_TILE = re.compile(r"_f(\d+)k\d+")


def output_tile(kernel: Kernel) -> int:
    """The output tile a variant's name states (winograd_f4k3 -> 4; DESIGN's naming grammar), or 0."""
    m = _TILE.search(kernel.algo)
    return int(m.group(1)) if m else 0


def heuristic(op: str, spec, candidates) -> Kernel:
    """The ESTIMATE mode's pick among eligible candidates (never empty): the first family of
    family_order, within it the largest output tile (fewest multiplies; the rtol filter has
    already removed variants too inaccurate for the caller), then registry order."""
    order = family_order(op, spec)
    rank = {family: i for i, family in enumerate(order)}
    position = {k.name: i for i, k in enumerate(registry.kernels(op))}
    return min(candidates, key=lambda k: (rank.get(k.family, len(order)), -output_tile(k), position.get(k.name, 0)))


# ----------------------------------------------------------------------------- deciding

def problem_key(op: str, spec) -> str:
    """The cache's key of a problem (the thread count is part of the file's environment)."""
    return f"{op} {spec!r}"


_SPEC_TYPES = {t.__name__: t for t in (ConvSpec, PoolSpec, PoolBackwardSpec)}


def spec_to_json(spec) -> dict:
    return {"type": type(spec).__name__, **{f: getattr(spec, f) for f in spec.__dataclass_fields__}}


def spec_from_json(data: dict):
    """The spec an entry was measured on, or None when it cannot be rebuilt."""
    try:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "type"}
        return _SPEC_TYPES[data["type"]](**fields)
    except (KeyError, TypeError, AttributeError):
        return None


@dataclass
class Decision:
    kernel: Kernel
    source: str                   # "measured now" | "cache" | "heuristic" | "only candidate"
    mode: str
    candidates: list
    refused: list
    heuristic: Kernel
    entry: Optional[dict] = None  # the cache entry the decision read or wrote
    cache: Optional[tuning_cache.TuningCache] = None
    why_heuristic: str = ""       # when the heuristic decided in a measuring mode: why


_lock = threading.RLock()
_memo: dict = {}       # (op, spec, algo, backend, rtol, threads) -> Kernel: the hit path
_decisions: dict = {}  # same key -> Decision (explain)
# A Decision holds its candidates, refusals and cache entry (about 1 KB): a process meeting ever new
# shapes (variable image sizes) must not grow without end.  When full, both are emptied (as api's
# _SPECS): checked on the miss path only, so a hit stays one dict lookup; a forgotten choice is
# decided again from the tuning cache, never re-timed.
_MEMO_MAX = 4096
_seen = (None, None)   # registry.KERNELS and c_lib.UNAVAILABLE the memo was filled under


def forget() -> None:
    """Forget every choice made in this process (the cache files stay)."""
    with _lock:
        _memo.clear()
        _decisions.clear()


def _sync() -> None:
    """Empty the memo when the kernel list changed (tests inject kernels; C may be unavailable)."""
    global _seen
    if _seen[0] is not registry.KERNELS or _seen[1] is not c_lib.UNAVAILABLE:
        forget()
        _seen = (registry.KERNELS, c_lib.UNAVAILABLE)


def choose(op: str, spec, algo: str = "auto", backend: str = "auto", rtol: Optional[float] = None,
           *, caller: str) -> Kernel:
    """The kernel that will run op on spec, or ValueError naming every refusal."""
    key = (op, spec, algo, backend, rtol, threads._num_threads)
    if _seen[0] is registry.KERNELS and _seen[1] is c_lib.UNAVAILABLE:
        try:
            kernel = _memo.get(key)
        except TypeError:  # an unhashable argument: let eligible() say what is wrong with it
            kernel = None
        if kernel is not None:
            return kernel
    return decide(key, caller=caller).kernel


def _pick(entry: Optional[dict], candidates, rigor: str, partial: bool = False) -> Optional[Kernel]:
    """The fastest candidate by a cache entry's medians, or None when the entry cannot decide
    (missing, less patient than asked, or missing a candidate unless partial)."""
    if entry is None or tuning_cache.RIGOR_RANK.get(entry.get("rigor"), 0) < tuning_cache.RIGOR_RANK.get(rigor, 0):
        return None
    times, failed = entry["times"], entry.get("failed", {})
    if not partial and any(k.name not in times and k.name not in failed for k in candidates):
        return None
    usable = [k for k in candidates if k.name in times and k.name not in failed]
    # those timed to the end, unless the query's candidates were all dropped early (a narrower query)
    usable = [k for k in usable if not times[k.name].get("dropped")] or usable
    return min(usable, key=lambda k: times[k.name]["median"]) if usable else None


def _measure(op, spec, candidates, rigor, cache, pkey, old: Optional[dict], budget_s: float) -> dict:
    result = measure.run(op, spec, candidates, registry.kernels(op)[-1], rigor=rigor, cap_s=budget_s)
    entry = {"op": op, "spec": spec_to_json(spec), "rigor": rigor, "times": {}, "errors": {}, "failed": {},
             "cost_s": 0.0}
    if old is not None and {k.name for k in candidates} < set(old["times"]) | set(old.get("failed", {})):
        # a narrower query (one backend, an rtol) re-timed some kernels: keep the others' figures
        entry.update({f: dict(old.get(f, {})) for f in ("times", "errors", "failed")})
        entry["cost_s"] = old.get("cost_s", 0.0)
        entry["rigor"] = min(rigor, old.get("rigor", "measure"), key=lambda r: tuning_cache.RIGOR_RANK.get(r, 0))
    for name in [k.name for k in candidates]:
        for f in ("times", "errors", "failed"):
            entry[f].pop(name, None)
    entry["times"].update(result.times)
    entry["errors"].update(result.errors)
    entry["failed"].update(result.failed)
    entry["cost_s"] += result.cost_s
    entry["budget_s"] = result.budget_s
    if result.not_timed:  # nothing was timed: why (explain's detail when the heuristic decides)
        entry["not_timed"] = result.not_timed
    best = _pick(entry, [k for k in registry.kernels(op) if k.name in entry["times"]], entry["rigor"], partial=True)
    entry["best"] = best.name if best is not None else None
    entry["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    # Budget exclusions ("not timed: ...": e.g. a first call that was a JIT compilation on a fresh
    # machine) say nothing lasting about a kernel: this process's explain shows them, the file does
    # not keep them, so the next process times those kernels again.
    lasting = {name: why for name, why in entry["failed"].items() if ": not timed:" not in why}
    if entry["times"]:
        cache.put(pkey, {**entry, "failed": lasting})
    return entry


def decide(key: tuple, *, caller: str, rigor: Optional[str] = None, force: bool = False,
           remember: bool = True, budget_s: Optional[float] = None) -> Decision:
    """Decide for key = (op, spec, algo, backend, rtol, threads).  rigor overrides the mode (tune,
    explain); force re-measures whatever the cache holds."""
    op, spec, algo, backend, rtol, n_threads = key
    with _lock:
        _sync()
        candidates, refused = eligible(op, spec, algo, backend, rtol, caller=caller)
        guess = heuristic(op, spec, candidates)
        mode = rigor or _mode
        budget = _budget_s if budget_s is None else budget_s
        d = Decision(guess, "heuristic", mode, candidates, refused, guess)
        if len(candidates) == 1:
            d.source = "only candidate"
        elif mode == "estimate":
            d.why_heuristic = "mode estimate"
        elif spec.n == 0:  # the api answers an empty batch itself: nothing to time
            d.why_heuristic = "an empty batch (N = 0) runs no kernel"
        else:
            cache = d.cache = tuning_cache.current(n_threads)
            pkey = problem_key(op, spec)
            need = "patient" if mode == "patient" else "measure"
            entry = cache.get(pkey)
            source = "cache"
            if mode == "frozen" or budget == 0:  # never time: the cache, else the heuristic
                pick = _pick(entry, candidates, need, partial=mode == "frozen")
            else:
                pick = None if force else _pick(entry, candidates, need)
                if pick is None and not force:  # another process may have tuned it meanwhile
                    cache.reload()
                    entry = cache.get(pkey)
                    pick = _pick(entry, candidates, need)
                # too large to time (its call's memory, or no probe can fit the budget): the heuristic
                too_large = measure.not_timed(op, spec, candidates, budget) if pick is None else ""
                if pick is None and not too_large:
                    entry = _measure(op, spec, candidates, need, cache, pkey, entry, budget)
                    pick = _pick(entry, candidates, need, partial=True)
                    source = "measured now"
            d.entry = entry
            if pick is not None:
                d.kernel, d.source = pick, source
            elif mode == "frozen" or budget == 0:
                d.why_heuristic = ("mode frozen" if mode == "frozen" else "tuning budget 0") + \
                    ", no cache entry for it"
            else:
                d.why_heuristic = too_large or (entry or {}).get("not_timed") or \
                    "every candidate failed on the tuning inputs"
        if remember:
            if len(_memo) >= _MEMO_MAX and key not in _memo:
                forget()
            _memo[key] = d.kernel
            _decisions[key] = d
        return d


# ----------------------------------------------------------------------------- explain

@dataclass
class Candidate:
    name: str
    median_s: Optional[float]     # None: not timed (heuristic, or not in the cache entry)
    spread_s: Optional[tuple]     # (q1, q3) of the timed rounds; (probe, probe) for a probe only
    gflops: Optional[float]
    bound: float                  # the registry's error bound for this dtype (the tests hold it to it)
    error: Optional[float]        # measured max rel. error vs the reference on the tuning inputs
    runs: int = 0
    note: str = ""


@dataclass
class Plan:
    """The dispatcher's decision for one problem, and why (``str(plan)`` prints a table)."""
    op: str
    spec: object
    chosen: str
    source: str                   # "measured now" | "cache" | "heuristic" | "only candidate"
    detail: str                   # where and how: cache file + key, mode, budget
    heuristic: str                # what the heuristic would pick
    threads: int
    candidates: list = field(default_factory=list)
    refused: list = field(default_factory=list)   # "<name>: <reason>" of every kernel that was not a candidate
    key: str = ""
    cache_file: Optional[str] = None
    tuning_cost_s: Optional[float] = None
    saving_per_call_s: Optional[float] = None     # the heuristic's pick minus the chosen kernel, per call
    label: str = ""                               # tune: the layer's name

    def candidate(self, name: str) -> Optional[Candidate]:
        return next((c for c in self.candidates if c.name == name), None)

    @property
    def heuristic_ratio(self) -> Optional[float]:
        """Time of the heuristic's pick / time of the chosen kernel (1.0: the heuristic agrees)."""
        h, c = self.candidate(self.heuristic), self.candidate(self.chosen)
        if h is None or c is None or h.median_s is None or not c.median_s:
            return None
        return h.median_s / c.median_s

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("spec", "candidates")}
        d["spec"] = {f: getattr(self.spec, f) for f in self.spec.__dataclass_fields__}
        d["candidates"] = [c.__dict__ for c in self.candidates]
        d["heuristic_ratio"] = self.heuristic_ratio
        return d

    def describe(self) -> str:
        return _describe(self.op, self.spec)

    def __str__(self) -> str:
        lines = [f"{self.op} {self.describe()}, {self.spec.dtype}, {self.threads} threads",
                 f"chosen: {self.chosen}  ({self.source}{': ' + self.detail if self.detail else ''})"]
        ratio = self.heuristic_ratio
        if self.heuristic != self.chosen or ratio is not None:
            times = f" ({ratio:.2f}x the chosen kernel's time)" if ratio else ""
            lines.append(f"heuristic: {self.heuristic}{times}")
        head = f"  {'kernel':20s} {'median ms':>10s} {'IQR ms':>17s} {'GFLOP/s':>8s} {'error':>8s} {'bound':>6s}  note"
        lines += [head, "  " + "-" * (len(head) - 2)]
        for c in self.candidates:
            star = "*" if c.name == self.chosen else " "
            med = _ms(c.median_s) if c.median_s is not None else "-"
            iqr = f"{_ms(c.spread_s[0])}-{_ms(c.spread_s[1])}" if c.spread_s else "-"
            gf = f"{c.gflops:8.1f}" if c.gflops is not None else f"{'':8s}"
            err = f"{c.error:8.1e}" if c.error is not None else f"{'-':>8s}"
            lines.append(f"{star} {c.name:20s} {med:>10s} {iqr:>17s} {gf} {err} {c.bound:6.0e}  {c.note}".rstrip())
        if self.refused:
            lines.append("not candidates:")
            lines += [f"  {r}" for r in self.refused]
        if self.tuning_cost_s is not None:
            cost = f"tuning cost {self.tuning_cost_s:.2f} s"
            if self.saving_per_call_s:
                calls = self.tuning_cost_s / self.saving_per_call_s
                cost += (f"; saves {self.saving_per_call_s * 1e3:.3g} ms per call against the heuristic's pick "
                         f"(repaid after {calls:,.0f} calls)")
            elif self.saving_per_call_s is not None:
                cost += "; the heuristic picks the same kernel: no saving per call"
            lines.append(cost)
        return "\n".join(lines)

    def repro(self) -> str:
        """A runnable snippet making the same call with the chosen kernel named."""
        s = self.spec
        kernel = next(k for k in registry.kernels(self.op) if k.name == self.chosen)
        pick = f'backend="{kernel.backend}"'
        lines = ["import numpy as np", "import fastconv as fc", "rng = np.random.default_rng(0)"]
        if isinstance(s, ConvSpec):
            pad = (s.padding[0], s.padding[2]) if s.padding[0::2] == s.padding[1::2] else '"same"'
            args = f"stride={s.stride}, padding={pad}, dilation={s.dilation}, groups={s.groups}"
            lines += [f'x = rng.standard_normal({s.input_shape}).astype("{s.dtype}")',
                      f'w = rng.standard_normal({s.weight_shape}).astype("{s.dtype}")']
            if self.op == "conv2d.fwd":
                lines.append(f'y = fc.conv2d(x, w, {args}, algo="{kernel.algo}", {pick})')
            else:
                which = "algo" if self.op == "conv2d.bwd_data" else "weight_algo"
                lines += [f'gy = rng.standard_normal({s.output_shape}).astype("{s.dtype}")',
                          f'gx, gw, gb = fc.conv2d_backward(gy, x, w, {args}, {which}="{kernel.algo}", {pick})']
        elif isinstance(s, PoolSpec):
            lines += [f'x = rng.standard_normal({s.input_shape}).astype("{s.dtype}")',
                      f"y, idx = fc.max_pool2d(x, {s.kernel}, {s.stride}, {s.padding}, {s.dilation}, "
                      f"{s.ceil_mode}, {pick})"]
        return "\n".join(lines)


def describe(op: str, spec) -> str:
    """A spec in one line: x 1x64x56x56 * w 64x64x3x3 stride 1 pad 1 dil 1 groups 1."""
    return _describe(op, spec)


def _describe(op: str, spec) -> str:
    if isinstance(spec, ConvSpec):
        pads = spec.padding[0::2] if spec.padding[0::2] == spec.padding[1::2] else spec.padding
        return (f"x {'x'.join(map(str, spec.input_shape))} * w {'x'.join(map(str, spec.weight_shape))} "
                f"stride {_hw(spec.stride)} pad {_hw(pads)} dil {_hw(spec.dilation)} groups {spec.groups}")
    if isinstance(spec, PoolSpec):
        return (f"x {'x'.join(map(str, spec.input_shape))} window {_hw(spec.kernel)} stride {_hw(spec.stride)} "
                f"pad {_hw(spec.padding)} dil {_hw(spec.dilation)}" + (" ceil" if spec.ceil_mode else ""))
    return f"x {'x'.join(map(str, spec.input_shape))} from {spec.out_h}x{spec.out_w}"


def _ms(seconds: float) -> str:
    """Milliseconds to 4 significant digits, trailing zeros kept: 24.00, 9.552, 0.01230."""
    return f"{seconds * 1e3:#.4g}".rstrip(".")


def _hw(pair) -> str:
    return str(pair[0]) if len(set(pair)) == 1 else ",".join(map(str, pair))


def plan_of(key: tuple, d: Decision) -> Plan:
    op, spec = key[0], key[1]
    entry = d.entry or {}
    times, errors, failed = entry.get("times", {}), entry.get("errors", {}), entry.get("failed", {})
    work = measure.flops(op, spec)
    cands = []
    for k in d.candidates:
        t = times.get(k.name)
        c = Candidate(k.name, None, None, None, k.rtol.get(spec.dtype, math.nan), errors.get(k.name))
        if t is not None:
            c.median_s, c.runs = t["median"], t["runs"]
            c.spread_s = (t["q1"], t["q3"])
            c.gflops = work / t["median"] / 1e9 if work and t["median"] > 0 else None
            if t.get("dropped"):
                c.note = "dropped early: too slow to win"
        if k.name in failed:
            c.note = "excluded: " + failed[k.name].split(": ", 1)[1]
        if k is d.heuristic:
            c.note = (c.note + "; " if c.note else "") + "heuristic's pick"
        if k.nonfinite:  # the guard of fastconv/nonfinite.py
            rerouted = nonfinite.REROUTED[k.name]
            c.note = (c.note + "; " if c.note else "") + f"inf/NaN calls go to {k.nonfinite}" + \
                (f" ({rerouted} so far)" if rerouted else "")
        cands.append(c)
    if d.source == "cache" and d.cache is not None:
        detail = f"{d.cache.path} [{problem_key(op, spec)}], rigor {entry.get('rigor')}"
    elif d.source == "measured now":
        detail = f"rigor {entry.get('rigor')}, budget {entry.get('budget_s', 0):.2g} s, stored in {d.cache.path}"
    elif d.source == "heuristic":
        detail = d.why_heuristic
    else:
        detail = ""
    plan = Plan(op, spec, d.kernel.name, d.source, detail, d.heuristic.name, key[5], cands, list(d.refused),
                problem_key(op, spec), d.cache.path if d.cache is not None else None)
    if entry and d.source in ("cache", "measured now"):
        plan.tuning_cost_s = entry.get("cost_s")
        h, c = plan.candidate(d.heuristic.name), plan.candidate(d.kernel.name)
        if h is not None and c is not None and h.median_s is not None and c.median_s is not None:
            plan.saving_per_call_s = max(0.0, h.median_s - c.median_s)
    return plan


def explain_spec(op: str, spec, algo: str = "auto", backend: str = "auto", rtol: Optional[float] = None,
                 rigor: Optional[str] = None, caller: str = "explain") -> Plan:
    """The plan for op on a spec: the decision this process made or would make for it."""
    if op not in registry.OPS:
        raise ValueError(f"{caller}: op={op!r} is not one of {', '.join(registry.OPS)}")
    if rigor is not None and rigor not in MODES:
        raise ValueError(f"{caller}: rigor={rigor!r} is not one of {', '.join(map(repr, MODES))}")
    eligible(op, spec, algo, backend, rtol, caller=caller)  # its errors name a bad argument (an unhashable algo)
    key = (op, spec, algo, backend, rtol, threads.get_num_threads())
    with _lock:
        _sync()
        d = _decisions.get(key) if rigor is None or rigor == _mode else None
        if d is None:
            d = decide(key, caller=caller, rigor=rigor, remember=rigor is None or rigor == _mode)
    return plan_of(key, d)


CONV_OPS = ("conv2d.fwd", "conv2d.bwd_data", "conv2d.bwd_weight")


def explain(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, dtype="float32", *,
            op: str = "conv2d.fwd", algo: str = "auto", backend: str = "auto", rtol: Optional[float] = None,
            rigor: Optional[str] = None) -> Plan:
    """What ``algo="auto"`` picks for a conv2d problem and why: every candidate with its measured
    median, spread, GFLOP/s and error, every refusal with its reason, where the choice came from
    and what tuning cost against what it saves.  ``rigor`` overrides the mode for this question
    (e.g. "measure" while the process runs in "estimate"); op: conv2d.fwd | conv2d.bwd_data |
    conv2d.bwd_weight."""
    if op not in CONV_OPS:
        raise ValueError(f"explain: op={op!r} is not one of {', '.join(CONV_OPS)}")
    spec = ConvSpec.from_shapes(x_shape, w_shape, stride, padding, dilation, groups, dtype, op="explain")
    return explain_spec(op, spec, algo, backend, rtol, rigor)


# ----------------------------------------------------------------------------- tune

# The ops of each pass, per layer kind (tune's passes, bench's rows).
PASS_OPS = {"fwd": {"conv": ("conv2d.fwd",), "pool": ("maxpool2d.fwd",)},
            "bwd": {"conv": ("conv2d.bwd_data", "conv2d.bwd_weight"), "pool": ("maxpool2d.bwd",)}}


# The spec type each op's kernels take: a tune() (op, spec) pair is checked against it.
OP_SPEC = {"conv2d.fwd": ConvSpec, "conv2d.bwd_data": ConvSpec, "conv2d.bwd_weight": ConvSpec,
           "maxpool2d.fwd": PoolSpec, "maxpool2d.bwd": PoolBackwardSpec}


def _problems(problems, net, batch, dtype, passes) -> list:
    """[(label, op, spec)] without duplicates; TypeError/ValueError naming what cannot be tuned."""
    from . import nets

    for p in passes:
        if p not in PASS_OPS:
            raise ValueError(f"tune: pass {p!r} is not one of {', '.join(PASS_OPS)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= PARAM_LIMIT:
        raise ValueError(f"tune: batch={batch!r} must be a positive int (at most {PARAM_LIMIT})")
    if net is not None and not isinstance(net, (str, tuple, list)):
        raise TypeError(f"tune: net={net!r} must be a name, a comma-separated string or a sequence of names")
    if problems is not None and not isinstance(problems, (tuple, list)):
        raise TypeError(f"tune: problems={problems!r} must be a sequence of problems (a list of one, for one)")
    float_dtype("tune", dtype)  # applies to net layers; checked even without them, so a typo never passes
    items = []
    names = [] if net is None else net.split(",") if isinstance(net, str) else list(net)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"tune: net={net!r} must be a name, a comma-separated string or a sequence of names")
    names = [n.strip() for n in names if n.strip()]
    if net is not None and not names:
        raise ValueError(f"tune: net={net!r} names no network; nothing to tune")
    for name in names:
        label = f"{name}." if len(names) > 1 else ""
        items += [(label + layer.name, layer) for layer in nets.get(name)]
    for p in problems or ():
        items.append((None, p))
    if not items:
        raise ValueError(f"tune: nothing to tune (problems={problems!r}, net={net!r})")
    out, seen = [], set()
    for label, p in items:
        if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
            op, spec = p
            if op not in registry.OPS:
                raise ValueError(f"tune: op={op!r} is not one of {', '.join(registry.OPS)}")
            if not isinstance(spec, OP_SPEC[op]):
                raise TypeError(f"tune: problem {p!r} is not a valid (op, spec) pair: "
                                f"{op} takes a {OP_SPEC[op].__name__}, got {type(spec).__name__}")
            pairs = [(op, spec)]
        else:
            spec = p.spec(batch, dtype) if isinstance(p, nets.Layer) else p
            kind = "conv" if isinstance(spec, ConvSpec) else "pool" if isinstance(spec, PoolSpec) else None
            if kind is None:
                raise TypeError(f"tune: {p!r} is not a ConvSpec, PoolSpec, nets.Layer or (op, spec) pair")
            pairs = [(op, spec if op != "maxpool2d.bwd" else spec.backward_spec())
                     for ps in passes for op in PASS_OPS[ps][kind]]
        for op, spec in pairs:
            if (op, spec) not in seen:
                seen.add((op, spec))
                out.append((label or _describe(op, spec), op, spec))
    return out


def tune(problems=None, *, net: Optional[str] = None, batch: int = 1, dtype: str = "float32",
         passes=("fwd",), rigor: str = "measure", force: bool = False, budget_s: Optional[float] = None,
         progress=None) -> list:
    """Time the eligible kernels of every problem and store the winners in the tuning cache, like
    FFTW's wisdom; returns a Plan per distinct problem.  problems: ConvSpec / PoolSpec / nets.Layer
    objects or (op, spec) pairs; net: layer tables of fastconv.nets, a name, a comma-separated
    list or a sequence of names (their layers at ``batch``);
    passes: "fwd" and/or "bwd" (grad of input and of weight, tuned separately); force: re-measure
    what the cache already holds.  progress: a stream for a progress bar (default: stderr when it
    is a terminal).  A problem that is not one of these, a dtype other than float32/float64, or
    nothing to tune at all (no problems, a net string of only commas) raise TypeError/ValueError."""
    if rigor not in ("measure", "patient"):
        raise ValueError(f"tune: rigor={rigor!r} must be 'measure' or 'patient'")
    if budget_s is not None and (isinstance(budget_s, bool) or not isinstance(budget_s, (int, float))
                                 or not 0 < budget_s < math.inf):
        raise ValueError(f"tune: budget_s={budget_s!r} must be a positive number of seconds")
    if isinstance(passes, str):
        passes = (passes,)
    elif not isinstance(passes, (tuple, list)) or not all(isinstance(p, str) for p in passes):
        raise TypeError(f"tune: passes={passes!r} must be 'fwd', 'bwd' or a sequence of them")
    todo = _problems(problems, net, batch, dtype, tuple(passes))
    if progress is None:
        progress = sys.stderr if sys.stderr is not None and sys.stderr.isatty() else False
    bar = Progress(progress, len(todo))
    n_threads = threads.get_num_threads()
    plans = []
    budget = budget_s if budget_s is not None else (_budget_s or DEFAULT_BUDGET_S)
    for label, op, spec in todo:
        bar.step(label)
        key = (op, spec, "auto", "auto", None, n_threads)
        with _lock:
            # frozen: the choices of this process do not change, but the cache is filled
            remember = _mode != "frozen" or key not in _decisions
            d = decide(key, caller="tune", rigor=rigor, force=force, remember=remember, budget_s=budget)
        plan = plan_of(key, d)
        plan.label = label
        plans.append(plan)
    bar.done()
    return plans


def verify(plans, seed: int = 1, progress=None) -> list:
    """Re-time every plan's candidates afresh (new random inputs, PATIENT rigor: every candidate
    timed to the end, 14 rounds, so the yardstick is steadier than the choice) and report, per
    plan, how its choice holds up: {"fastest": name, "ratio": time of the choice / time of the
    fastest} by medians, and the same by best times ("fastest_min", "ratio_min"), which a busy
    machine's stalls spoil least.  Stores nothing."""
    if progress is None:
        progress = sys.stderr if sys.stderr is not None and sys.stderr.isatty() else False
    bar = Progress(progress, len(plans))
    out = []
    for plan in plans:
        bar.step(plan.label or plan.describe())
        names = {c.name for c in plan.candidates}
        kernels = [k for k in registry.kernels(plan.op) if k.name in names]
        res = measure.run(plan.op, plan.spec, kernels, registry.kernels(plan.op)[-1], rigor="patient",
                          cap_s=_budget_s or DEFAULT_BUDGET_S, seed=seed)
        row = {"fastest": None, "ratio": None, "fastest_min": None, "ratio_min": None}
        mine = res.times.get(plan.chosen)
        if mine is not None:
            for stat, suffix in (("median", ""), ("min", "_min")):
                best = min(res.times, key=lambda n: res.times[n][stat])
                row["fastest" + suffix] = best
                row["ratio" + suffix] = mine[stat] / res.times[best][stat]
        out.append(row)
    bar.done()
    return out


class Progress:
    """A one-line progress bar on a terminal: [#####.....] 7/18 conv3_2."""

    def __init__(self, stream, total: int):
        self.stream, self.total, self.i = stream, total, 0

    def step(self, label: str) -> None:
        if self.stream:
            filled = 20 * self.i // max(self.total, 1)
            self.stream.write(f"\r[{'#' * filled}{'.' * (20 - filled)}] {self.i + 1}/{self.total} {label[:40]:40s}")
            self.stream.flush()
        self.i += 1

    def done(self) -> None:
        if self.stream:
            self.stream.write(f"\r[{'#' * 20}] {self.total}/{self.total} {'done':40s}\n")
            self.stream.flush()


__all__ = ["choose", "decide", "eligible", "heuristic", "family_order", "explain", "explain_spec", "tune", "Progress",
           "Plan", "Candidate", "set_tuning", "get_tuning", "forget", "problem_key", "verify", "MODES"]
