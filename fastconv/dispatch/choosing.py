"""Choosing a kernel for a problem: FFTW's planner, keyed as PyTorch keys its benchmark cache.

The dispatcher never names a kernel: it filters the registry by the caller's ``algo``,
``backend`` and ``rtol`` and by each kernel's own refusal, then decides among what is eligible
(the NumPy reference only when nothing else is): by the tuning cache's entry for the problem,
by timing the candidates now (fastconv/dispatch/measure.py), or by the registry's preference
(``Kernel.preference``: the heuristic, which never times; it also breaks ties, medians within
TIE of the fastest).  The modes are in
fastconv/dispatch/__init__.py.  A decided key is a dict lookup from then on (``choose``).
"""
from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass
from typing import Optional

from .. import registry, threads
from ..common import config
from ..registry import Kernel
from ..spec import spec_to_json
from . import measure, settings, tuning_cache
from .tuning_cache import problem_key


def set_tuning(mode: Optional[str] = None, budget_s: Optional[float] = None) -> None:
    """Set the dispatcher's mode (estimate | measure | patient | frozen) and/or its time budget per
    problem in seconds (0: never time; the heuristic decides).  Forgets the choices made so far."""
    settings.check(mode, budget_s)
    with _lock:
        if mode is not None:
            settings.mode = mode
        if budget_s is not None:
            settings.budget_s = float(budget_s)
        forget()


def get_tuning() -> dict:
    """The dispatcher's settings and where its cache lives."""
    cache = tuning_cache.current(threads.get_num_threads())
    return {"mode": settings.mode, "budget_s": settings.budget_s, "cache_dir": cache.directory,
            "cache_file": cache.path, "env_key": cache.key}


# ----------------------------------------------------------------------------- eligibility

def _matches(kernel: Kernel, algo: str, backend: str) -> bool:
    return (backend == "auto" or kernel.backend == backend) and \
        (algo == "auto" or algo in (kernel.algo, kernel.family))


def eligible(op: str, spec, algo: str = "auto", backend: str = "auto", rtol: Optional[float] = None,
             *, caller: str) -> tuple[list, list]:
    """(kernels that may serve, reasons of those that may not), or ValueError when none may."""
    if not isinstance(backend, str) or (backend != "auto" and backend not in registry.BACKENDS):
        raise ValueError(f"{caller}: backend={backend!r} is not one of 'auto', " +
                         ", ".join(map(repr, registry.BACKENDS)))
    # the public function's own name for the argument (conv2d_backward: weight_algo)
    record = registry.OPS.get(op)
    algo_arg = (record.algo_arg if record is not None and caller == record.public else None) or "algo"
    if not isinstance(algo, str):
        raise TypeError(f"{caller}: {algo_arg}={algo!r} must be a string")
    if rtol is not None and (isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol > 0):
        raise ValueError(f"{caller}: rtol={rtol!r} must be a positive number or None")
    named = [k for k in registry.kernels(op) if _matches(k, algo, backend)]
    # A name that is both a variant's and a family's ("direct": c.direct, and the family of
    # direct_flat) names the variant: otherwise algo="direct" ran direct_flat wherever the heuristic
    # or the tuner preferred it, and no call could ask for direct itself.
    named = [k for k in named if k.algo == algo] or named
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
    if any(not k.is_reference for k in ok):
        refused += [f"{k.name}: the reference serves only when no other kernel can" for k in ok if k.is_reference]
        ok = [k for k in ok if not k.is_reference]
    return ok, refused


# ----------------------------------------------------------------------------- the heuristic

def heuristic(op: str, spec, candidates) -> Kernel:
    """The pick when nothing is timed, among eligible candidates (never empty): the lowest
    Kernel.preference (the registry's rule), ties in registry order."""
    position = {k.name: i for i, k in enumerate(registry.kernels(op))}
    return min(candidates, key=lambda k: (k.preference(spec), position.get(k.name, 0)))


# ----------------------------------------------------------------------------- deciding

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
_memo: dict = {}       # (op, spec, algo, backend, rtol, threads, weights_vary, act) -> Kernel: the hit path
_decisions: dict = {}  # same key -> Decision (explain)
# A Decision holds its candidates, refusals and cache entry (about 1 KB): a process meeting ever new
# shapes (variable image sizes) must not grow without end.  When full, both are emptied (as api's
# _SPECS): checked on the miss path only, so a hit stays one dict lookup; a forgotten choice is
# decided again from the tuning cache, never re-timed.
_MEMO_MAX = 4096
_seen = (None, None)   # registry.KERNELS and registry.BACKENDS the memo was filled under


_generation = 0        # how many times the choices were forgotten (state())


def forget() -> None:
    """Forget every choice made in this process (the cache files stay)."""
    global _generation
    with _lock:
        _memo.clear()
        _decisions.clear()
        _generation += 1


def state() -> tuple:
    """What a choice made now holds under, beside its problem: the choices not forgotten since
    (set_tuning, a full memo), the thread count, the kernel list and backends, whether weights vary.
    A caller keeping a kernel of choose()'s (api.Conv2dPlan) asks again when this changed."""
    return (_generation, threads._num_threads, registry.KERNELS, registry.BACKENDS, config.WEIGHTS_VARY.get())


def _sync() -> None:
    """Empty the memo when the kernel list or the backends changed (tests inject kernels)."""
    global _seen
    if _seen[0] is not registry.KERNELS or _seen[1] is not registry.BACKENDS:
        forget()
        _seen = (registry.KERNELS, registry.BACKENDS)


def choose(op: str, spec, algo: str = "auto", backend: str = "auto", rtol: Optional[float] = None,
           *, caller: str, act=None) -> Kernel:
    """The kernel that will run op on spec, or ValueError naming every refusal.  act: the forward's
    activation (activation_arg's (name, slope)), with which the candidates are timed."""
    key = (op, spec, algo, backend, rtol, threads._num_threads, config.WEIGHTS_VARY.get(), act)
    if _seen[0] is registry.KERNELS and _seen[1] is registry.BACKENDS:
        try:
            kernel = _memo.get(key)
        except TypeError:  # an unhashable argument: let eligible() say what is wrong with it
            kernel = None
        if kernel is not None:
            return kernel
    return decide(key, caller=caller).kernel


# Medians this close are a tie, which the timing's noise decides: the heuristic's order breaks it.
# On ResNet-18's 64-channel 3x3 layer (AMD EPYC Zen 5, avx512) the tuner timed numba.winograd_f4k3
# 2% faster than c.winograd_f4k3 in one bench run of five and 3-17% slower in the others; inside a
# network-like sequence (each call after another layer's) c.winograd_f4k3 ran 13-15% faster, and
# the heuristic prefers it.  A tie costs at most TIE (within the 10% that "auto picks the fastest" allows).
TIE = 0.05


def _pick(entry: Optional[dict], candidates, rigor: str, spec, partial: bool = False) -> Optional[Kernel]:
    """The fastest candidate by a cache entry's medians (among those within TIE of the fastest, the
    one the heuristic ranks first), or None when the entry cannot decide (missing, less patient
    than asked, or missing a candidate unless partial)."""
    if entry is None or tuning_cache.RIGOR_RANK.get(entry.get("rigor"), 0) < tuning_cache.RIGOR_RANK.get(rigor, 0):
        return None
    times, failed = entry["times"], entry.get("failed", {})
    if not partial and any(k.name not in times and k.name not in failed for k in candidates):
        return None
    usable = [k for k in candidates if k.name in times and k.name not in failed]
    # those timed to the end, unless the query's candidates were all dropped early (a narrower query)
    usable = [k for k in usable if not times[k.name].get("dropped")] or usable
    if not usable:
        return None
    fastest = min(usable, key=lambda k: times[k.name]["median"])
    tied = [k for k in usable if times[k.name]["median"] <= (1 + TIE) * times[fastest.name]["median"]]
    return heuristic(fastest.op, spec, tied)


def _measure(op, spec, candidates, rigor, cache, pkey, old: Optional[dict], budget_s: float,
             weights_vary: bool = False, act=None) -> dict:
    result = measure.run(op, spec, candidates, registry.kernels(op)[-1], rigor=rigor, cap_s=budget_s, act=act)
    entry = {"op": op, "spec": spec_to_json(spec), "rigor": rigor, "times": {}, "errors": {}, "failed": {},
             "cost_s": 0.0}
    if weights_vary:
        entry["weights_vary"] = True
    if act is not None:
        entry["activation"] = act[0]
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
    best = _pick(entry, [k for k in registry.kernels(op) if k.name in entry["times"]], entry["rigor"], spec,
                 partial=True)
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
    """Decide for key = (op, spec, algo, backend, rtol, threads, weights_vary, act).  rigor overrides
    the mode (tune, explain); force re-measures whatever the cache holds.  weights_vary: timed (and
    kept) as a problem of its own, with config.WEIGHTS_VARY set while timing; act (a forward's
    activation) too, timed with it.  Where nothing may be timed (frozen, budget 0), a problem with an
    activation that has no entry of its own takes the entry without one (``fastconv tune`` fills
    those): the same kernels, timed without the activation's cost."""
    op, spec, algo, backend, rtol, n_threads, weights_vary, act = key
    with _lock:
        _sync()
        candidates, refused = eligible(op, spec, algo, backend, rtol, caller=caller)
        guess = heuristic(op, spec, candidates)
        mode = rigor or settings.mode
        budget = settings.budget_s if budget_s is None else budget_s
        d = Decision(guess, "heuristic", mode, candidates, refused, guess)
        if len(candidates) == 1:
            d.source = "only candidate"
        elif mode == "estimate":
            d.why_heuristic = "mode estimate"
        elif spec.n == 0:  # the api answers an empty batch itself: nothing to time
            d.why_heuristic = "an empty batch (N = 0) runs no kernel"
        else:
            cache = d.cache = tuning_cache.current(n_threads)
            pkey = problem_key(op, spec, weights_vary, act)
            need = "patient" if mode == "patient" else "measure"
            entry = cache.get(pkey)
            source = "cache"
            if mode == "frozen" or budget == 0:  # never time: the cache, else the heuristic
                if entry is None and act is not None:
                    entry = cache.get(problem_key(op, spec, weights_vary))
                pick = _pick(entry, candidates, need, spec, partial=mode == "frozen")
            else:
                pick = None if force else _pick(entry, candidates, need, spec)
                if pick is None and not force:  # another process may have tuned it meanwhile
                    cache.reload()
                    entry = cache.get(pkey)
                    pick = _pick(entry, candidates, need, spec)
                # too large to time (its call's memory, or no probe can fit the budget): the heuristic
                too_large = measure.not_timed(op, spec, candidates, budget) if pick is None else ""
                if pick is None and not too_large:
                    vary = config.WEIGHTS_VARY.set(weights_vary)
                    try:
                        entry = _measure(op, spec, candidates, need, cache, pkey, entry, budget, weights_vary, act)
                    finally:
                        config.WEIGHTS_VARY.reset(vary)
                    pick = _pick(entry, candidates, need, spec, partial=True)
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
