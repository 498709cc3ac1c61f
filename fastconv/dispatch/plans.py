"""The dispatcher's decisions, explained: ``Plan`` (every candidate with its measured median,
spread, GFLOP/s and error, every refusal with its reason, where the choice came from and what
tuning cost against what it saves), ``explain`` for a conv2d shape, and one-line descriptions of
problems."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .. import registry, threads
from ..common import config, nonfinite
from ..spec import ConvSpec, PoolSpec, activation_arg
from . import choosing, settings
from .choosing import Decision
from .tuning_cache import problem_key


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
    isa: str = ""                                 # the vector ISA the chosen kernel runs (its backend's)
    activation: Optional[tuple] = None            # a forward's: activation_arg's (name, slope)

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
        lines = [f"{self.op} {self.describe()}{_then(self.activation)}, {self.spec.dtype}, {self.threads} threads",
                 f"chosen: {self.chosen}  ({self.source}{': ' + self.detail if self.detail else ''})"
                 + (f"; ISA {self.isa}" if self.isa else "")]
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
        """A runnable snippet making the same call with the chosen kernel named (the op's public
        function, its arguments drawn at random in the spec's shapes)."""
        op, s = registry.OPS[self.op], self.spec
        kernel = registry.kernel(self.op, self.chosen)
        lines = ["import numpy as np", "import fastconv as fc", "rng = np.random.default_rng(0)"]
        shapes = registry.shapes(s)
        for name in op.public_args:
            shape, dtype = shapes[name]
            lines.append(f"{name} = rng.integers(0, {s.h * s.w}, size={shape})" if name == "indices" else
                         f'{name} = rng.standard_normal({shape}).astype("{dtype}")')
        pick = {op.algo_arg: kernel.algo} if op.algo_arg else {}
        act = self.activation
        activation = {} if act is None else {"activation": act[0] if act[0] != "leaky_relu" else act}
        kwargs = {**op.hyper(s), **activation, **pick, "backend": kernel.backend}
        args = [*op.public_args, *(f"{k}={v!r}" for k, v in kwargs.items())]
        lines.append(f"out = fc.{op.public}({', '.join(args)})")
        return "\n".join(lines)


def _then(act) -> str:
    """', then relu' (a forward's activation), '' without one."""
    if act is None:
        return ""
    return f", then {act[0]}" + (f" (slope {act[1]:g})" if act[0] == "leaky_relu" else "")


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
    work = registry.OPS[op].flops(spec)
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
        if k.nonfinite:  # the guard of fastconv/common/nonfinite.py
            rerouted = nonfinite.REROUTED[k.name]
            c.note = (c.note + "; " if c.note else "") + f"inf/NaN calls go to {k.nonfinite}" + \
                (f" ({rerouted} so far)" if rerouted else "")
        cands.append(c)
    if d.source == "cache" and d.cache is not None:
        # frozen, an activated problem without an entry of its own: the entry without it (choosing.decide)
        own = key[7] is None or "activation" in entry
        detail = f"{d.cache.path} [{problem_key(op, spec, key[6], key[7] if own else None)}], rigor " + \
            f"{entry.get('rigor')}" + ("" if own else f"; timed without the {key[7][0]}")
    elif d.source == "measured now":
        detail = f"rigor {entry.get('rigor')}, budget {entry.get('budget_s', 0):.2g} s, stored in {d.cache.path}"
    if d.source in ("cache", "measured now"):
        detail += _tie_note(d.kernel.name, cands)
    elif d.source == "heuristic":
        detail = d.why_heuristic
    else:
        detail = ""
    backend = registry.BACKENDS.get(d.kernel.backend)
    plan = Plan(op, spec, d.kernel.name, d.source, detail, d.heuristic.name, key[5], cands, list(d.refused),
                problem_key(op, spec, key[6], key[7]), d.cache.path if d.cache is not None else None,
                isa=backend.isa() if backend is not None else "", activation=key[7])
    if entry and d.source in ("cache", "measured now"):
        plan.tuning_cost_s = entry.get("cost_s")
        h, c = plan.candidate(d.heuristic.name), plan.candidate(d.kernel.name)
        if h is not None and c is not None and h.median_s is not None and c.median_s is not None:
            plan.saving_per_call_s = max(0.0, h.median_s - c.median_s)
    return plan


def _tie_note(chosen: str, cands) -> str:
    """Why the choice is not the fastest median, when the tie rule (choosing.TIE) made it."""
    timed = [c for c in cands if c.median_s is not None and not c.note.startswith("excluded")]
    mine = next((c for c in timed if c.name == chosen), None)
    if mine is None:
        return ""
    fastest = min(timed, key=lambda c: c.median_s)
    if fastest.name == chosen:
        return ""
    return (f"; {fastest.name} timed {mine.median_s / fastest.median_s - 1:.0%} faster, within the "
            f"{choosing.TIE:.0%} of a tie, which the heuristic's order decides")


def explain_spec(op: str, spec, algo: str = "auto", backend: str = "auto", rtol: Optional[float] = None,
                 rigor: Optional[str] = None, caller: str = "explain", activation=None) -> Plan:
    """The plan for op on a spec: the decision this process made or would make for it (activation:
    conv2d's argument, a forward's)."""
    if not isinstance(op, str) or op not in registry.OPS:
        raise ValueError(f"{caller}: op={op!r} is not one of {', '.join(registry.OPS)}")
    if rigor is not None and rigor not in settings.MODES:
        raise ValueError(f"{caller}: rigor={rigor!r} is not one of {', '.join(map(repr, settings.MODES))}")
    act = activation_arg(caller, activation)
    if act is not None and op != "conv2d.fwd":
        raise ValueError(f"{caller}: activation={activation!r}: only the forward (op='conv2d.fwd') applies one")
    choosing.eligible(op, spec, algo, backend, rtol, caller=caller)  # its errors name a bad argument (an unhashable algo)
    key = (op, spec, algo, backend, rtol, threads.get_num_threads(), config.WEIGHTS_VARY.get(), act)
    with choosing._lock:
        choosing._sync()
        d = choosing._decisions.get(key) if rigor is None or rigor == settings.mode else None
        if d is None:
            d = choosing.decide(key, caller=caller, rigor=rigor, remember=rigor is None or rigor == settings.mode)
    return plan_of(key, d)


CONV_OPS = registry.PASSES["fwd"]["conv"] + registry.PASSES["bwd"]["conv"]


def explain(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, dtype="float32", *,
            op: str = "conv2d.fwd", algo: str = "auto", backend: str = "auto", rtol: Optional[float] = None,
            rigor: Optional[str] = None, activation=None) -> Plan:
    """What ``algo="auto"`` picks for a conv2d problem and why: every candidate with its measured
    median, spread, GFLOP/s and error, every refusal with its reason, where the choice came from
    and what tuning cost against what it saves.  ``rigor`` overrides the mode for this question
    (e.g. "measure" while the process runs in "estimate"); op: conv2d.fwd | conv2d.bwd_data |
    conv2d.bwd_weight; activation: conv2d's (the forward is timed with it, a problem of its own)."""
    if op not in CONV_OPS:
        raise ValueError(f"explain: op={op!r} is not one of {', '.join(CONV_OPS)}")
    spec = ConvSpec.from_shapes(x_shape, w_shape, stride, padding, dilation, groups, dtype, op="explain")
    return explain_spec(op, spec, algo, backend, rtol, rigor, activation=activation)
