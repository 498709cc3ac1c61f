"""Timing the eligible kernels of one problem, as the dispatcher's MEASURE and PATIENT modes do.

The contenders run on random inputs of the spec's shapes and dtype (never the caller's arrays,
which must not be modified or aliased).  Phases:

1. compile: one call per contender (the JIT compiles; the output is compared with the
   reference's on the same inputs: a kernel far over its error bound, or one that raises, is
   excluded with the reason);
2. probe: after a pause and a warm-up (untimed calls), two timed calls each.  In MEASURE mode a
   contender whose faster call is over 3x the fastest cannot win and is not timed further;
3. rounds: the remaining contenders run interleaved as fastconv.bench does -- in every round
   (in a shuffled order after the first, fastconv.timing.round_order, so no contender always
   follows the same one) each one gets a pause, a warm-up, then ``k`` timed calls (k makes a timed run last
   ~1 ms, so tiny problems are not timer noise).  A contender's figure is the median of its
   probe calls and its rounds.  In MEASURE mode, from the second round on, a contender whose
   median is over 1.5x the leader's stops (racing); the choice is made among those that finish;
4. runoff (MEASURE mode): when the two best medians are within 15% of each other, up to 4 more
   rounds of just those two (a near tie is where a few noisy samples decide wrongly; with it,
   re-timing on new inputs agreed with the stored choice within 10% on more layers).

Budget, in time.  Everything counts: drawing the inputs, the reference, the compile calls, the
probes, the pauses and the rounds (``cost_s`` is the wall time from the start, and ``budget_s`` is
measured on the same clock).  The budget is what was spent up to the end of the probes plus the
mode's rounds (4 for measure, 14 for patient, which neither drops nor races; plus a runoff's) at
the probed speeds -- so it scales with the problem: ~0.2 s for a tiny one, a few seconds for a VGG
layer -- but never more than ``cap_s`` (``FASTCONV_TUNE_BUDGET_S``, default 10 s per problem):
rounds stop when the next would not fit, down to none (then the probes decide).  Before that:

- the reference runs only when its estimated cost (its FLOPs at REFERENCE_FLOPS plus the bytes of
  its float64 arrays at REFERENCE_BYTES_S: a 1x1 convolution is memory-bound) is at most a quarter
  of what is left of the cap, and its memory fits (below); else errors are left unmeasured;
- a contender is not called at all when what is left of the cap is less than the fastest first
  call so far (the budget ran out); one whose first call took longer than what was left when it
  started is not called again; and one whose probe (a warm-up of two calls and two timed calls)
  would end more than the grace (PROBE_GRACE_S, or PROBE_GRACE of the cap) past the cap is not
  probed -- judged at its first call's speed, or, when that call took over JIT_RATIO x the fastest
  first call (a compilation), at the fastest's until its first warm-up call has been timed.  Those
  are excluded ("not timed: ...", in ``failed``; the probes go fastest first call first) -- when
  all are, nothing was timed and ``not_timed`` says why (the dispatcher's heuristic decides);
- a problem is not timed at all (``not_timed(...)``: the dispatcher's heuristic decides) when one
  call's memory is over the tuning limit, or when an optimistic estimate of the least timing that
  can decide (every contender's compile call and probe, at FAST_FLOPS and FAST_BYTES_S) is over
  the cap.

Budget, in memory.  A call's own memory (``call_bytes``) is its inputs and output.  Tuning holds
the inputs once and one contender's output at a time (a call's worth), plus the reference's
output when the reference runs; the reference runs only when its own peak (``reference_bytes``,
a conservative model of reference.py's float64 temporaries) is at most the larger of the call's
memory and REFERENCE_MIN_BYTES, and at most the tuning limit.  The error check works in chunks (no
float64 copy of an output).  The tuning limit (``MAX_BYTES``): FASTCONV_TUNE_MAX_MB, default 512 MiB;
a problem whose call moves more is not timed.

The pause lets the thread pools of the previous contender (OpenMP, Numba) stop spinning before
the next one runs; it scales with the problem (10 x the fastest probe, between 5 and 50 ms).
Nothing is timed right after a pause: every timed run follows a warm-up (fastconv/timing.py says
why, and holds the one way of timing a call that the tuner and the benchmarks share).  The first probe
waits until SPIN_S after the reference: the reference's GEMM runs on numpy's OpenBLAS, whose
threads busy-wait ~0.1 s after it returns, and an OpenMP team sharing the cores with them ran
20-50x slow (VGG-16-sized pauses were shorter than that, so a fast kernel could be dropped after
a ruined probe; GoogLeNet's 1x1 layers lost c.im2col that way).
"""
from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from .. import registry
from ..common import config
from ..reference import rel_error
from ..spec import ConvSpec, PoolBackwardSpec, PoolSpec
from ..timing import SPIN_S, TIMED_RUN_S, round_order, timed_run, warm_calls, warm_up

# rigor -> (rounds after the probe, drop ratio after the probe, racing ratio after each round,
#           runoff rounds of the two best when they are within RUNOFF)
RIGOR = {"measure": (4, 3.0, 1.5, 4), "patient": (14, math.inf, math.inf, 0)}
RUNOFF = 1.15
PROBE_CALLS = 2
RACE_AFTER = 4  # samples (the probe's two and two rounds) before racing judges a median
PAUSE_MIN_S, PAUSE_MAX_S = 0.005, 0.05
ERROR_SLACK = 10.0  # excluded when the measured error exceeds this many times the kernel's bound
# The reference's speed, roughly: FLOP/s of its einsums, and bytes/s over the float64 arrays it
# allocates and fills (conservative: conversions, padding and page faults on a shared machine).
REFERENCE_FLOPS = 10e9
REFERENCE_BYTES_S = 1e9
REFERENCE_MIN_BYTES = 128 << 20  # the reference may always use this much (if under the limit)
# Optimistic speeds of any kernel (direct-algorithm FLOP/s, bytes/s of a call's inputs and
# output): a problem is not timed only when even at these speeds the least timing is over the cap.
FAST_FLOPS = 1e12
FAST_BYTES_S = 50e9
# A probe may end this far past the cap (so tiny problems under a tiny budget are still probed).
PROBE_GRACE_S, PROBE_GRACE = 0.5, 0.1  # max(seconds, fraction of the cap)
JIT_RATIO = 100.0  # a first call this many times the fastest first call was mostly a compilation
DEFAULT_MAX_BYTES = 512 << 20
MAX_BYTES = config.mb_from_environment("FASTCONV_TUNE_MAX_MB", DEFAULT_MAX_BYTES)


@dataclass
class Result:
    """What timing one problem found."""
    times: dict = field(default_factory=dict)   # name -> {"median", "q1", "q3", "min", "max", "runs", "dropped"}
    errors: dict = field(default_factory=dict)  # name -> max |out - ref| / max |ref|
    failed: dict = field(default_factory=dict)  # name -> reason it was excluded
    cost_s: float = 0.0                         # wall time of the whole measurement, everything included
    budget_s: float = 0.0
    first_s: dict = field(default_factory=dict)  # name -> wall time of its first (compile) call
    reference_s: float | None = None             # wall time of the reference, None: not run
    not_timed: str = ""                          # why nothing was timed ("not timed: ..."), or ""

    def best(self) -> str | None:
        """The contender with the lowest median among those timed to the end."""
        timed = {n: t["median"] for n, t in self.times.items() if not t["dropped"]} or \
            {n: t["median"] for n, t in self.times.items()}
        return min(timed, key=timed.get) if timed else None


def _prod(shape) -> int:
    return math.prod(int(s) for s in shape)


def call_bytes(op: str, spec) -> int:
    """A call's own memory: the bytes of its inputs and its output(s)."""
    item = np.dtype(spec.dtype).itemsize
    if isinstance(spec, ConvSpec):
        x, w, y = _prod(spec.input_shape), _prod(spec.weight_shape), _prod(spec.output_shape)
        extra = spec.c_out if op == "conv2d.fwd" else 0  # the bias
        return item * (x + w + y + extra)
    if isinstance(spec, PoolSpec):  # x -> values and int64 indices
        return item * _prod(spec.input_shape) + (item + 8) * _prod(spec.output_shape)
    if isinstance(spec, PoolBackwardSpec):  # grad_y and int64 indices -> grad_x
        return (item + 8) * spec.n * spec.c * spec.out_h * spec.out_w + item * _prod(spec.input_shape)
    raise TypeError(f"measure: {type(spec).__name__} is not a problem spec")


def reference_bytes(op: str, spec) -> int:
    """A conservative estimate of the reference's peak memory on op/spec (fastconv/reference.py
    computes in float64: padded float64 inputs, receptive-field windows that einsum copies, up to
    twice, float64 results, and the result cast to the spec's dtype)."""
    item = np.dtype(spec.dtype).itemsize
    if isinstance(spec, ConvSpec):
        t, b, l, r = spec.padding
        padded = spec.n * spec.c_in * (spec.h + t + b) * (spec.w + l + r)
        x, w, y = _prod(spec.input_shape), _prod(spec.weight_shape), _prod(spec.output_shape)
        windows = spec.n * spec.c_in * spec.out_h * spec.out_w * spec.kh * spec.kw
        if op == "conv2d.fwd":
            peak = 8 * (padded + 2 * windows + w + 2 * y) + item * y
        elif op == "conv2d.bwd_data":  # a float64 grad of the padded input and a tap's contribution
            peak = 8 * (y + w + padded + 3 * x) + item * x
        else:
            peak = 8 * (y + padded + 2 * windows + 2 * w) + item * w
    elif isinstance(spec, PoolSpec):
        (kh, kw), (ph, pw) = spec.kernel, spec.padding
        padded = spec.n * spec.c * (spec.h + 2 * ph + kh) * (spec.w + 2 * pw + kw)
        out = _prod(spec.output_shape)
        windows = out * kh * kw
        peak = 8 * padded + 12 * windows + (64 + item + 8) * out  # masks, argmaxes, values, indices
    elif isinstance(spec, PoolBackwardSpec):
        x, out = _prod(spec.input_shape), spec.n * spec.c * spec.out_h * spec.out_w
        peak = 8 * x + 16 * out + item * x
    else:
        raise TypeError(f"measure: {type(spec).__name__} is not a problem spec")
    return int(peak * 1.25)  # and a margin: numpy's own temporaries


def reference_seconds(op: str, spec) -> float:
    """A conservative estimate of the reference's time: its FLOPs plus its arrays' bytes."""
    work = registry.OPS[op].flops(spec) or 0
    return work / REFERENCE_FLOPS + reference_bytes(op, spec) / REFERENCE_BYTES_S


def reference_limit(op: str, spec, max_bytes: int | None = None) -> int:
    """The most memory the reference may take on this problem."""
    limit = MAX_BYTES if max_bytes is None else max_bytes
    return min(limit, max(call_bytes(op, spec), REFERENCE_MIN_BYTES))


def call_seconds_at_least(op: str, spec) -> float:
    """An optimistic estimate of one call (a lower bound on the machines this runs on)."""
    return max((registry.OPS[op].flops(spec) or 0) / FAST_FLOPS, call_bytes(op, spec) / FAST_BYTES_S)


def _size(n: float) -> str:
    """Bytes in binary units: 512 MiB, 1.07 GiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def not_timed(op: str, spec, contenders, cap_s: float, max_bytes: int | None = None) -> str:
    """Why this problem is too large to time ("not timed: ..."), or "" when it may be timed."""
    limit = MAX_BYTES if max_bytes is None else max_bytes
    moved = call_bytes(op, spec)
    if moved > limit:
        return (f"not timed: one call moves {_size(moved)} (inputs and output), over the {_size(limit)} "
                f"tuning limit (FASTCONV_TUNE_MAX_MB)")
    one = call_seconds_at_least(op, spec)
    calls = max(1, len(contenders)) * (1 + 2 + PROBE_CALLS)  # compile, warm-up, probe
    if calls * one > cap_s:
        return (f"not timed: one call takes at least {one:.3g} s, and timing {len(contenders)} kernels "
                f"takes at least {calls} calls ({calls * one:.3g} s), over the {cap_s:g} s tuning budget")
    return ""


def _summary(samples: list, dropped: bool) -> dict:
    q = np.percentile(samples, [25, 50, 75]) if len(samples) > 1 else [samples[0]] * 3
    return {"median": float(statistics.median(samples)), "q1": float(q[0]), "q3": float(q[2]),
            "min": float(min(samples)), "max": float(max(samples)), "runs": len(samples),
            "dropped": dropped}


def run(op: str, spec, contenders, reference, *, rigor: str = "measure", cap_s: float = 10.0,
        seed: int = 0, clock=time.perf_counter, sleep=time.sleep, max_bytes: int | None = None,
        act=None) -> Result:
    """Time contenders (registry kernels, all eligible for spec) on random inputs; see the module
    docstring for the phases and the budget.  reference: the kernel that defines the result.
    act: the forward's activation, which every call (the reference's too) applies."""
    max_rounds, drop, race, runoff_rounds = RIGOR[rigor]
    t_start = clock()
    res = Result(budget_s=cap_s)
    res.not_timed = not_timed(op, spec, contenders, cap_s, max_bytes)
    if res.not_timed:
        res.cost_s = clock() - t_start
        return res

    def left() -> float:
        return cap_s - (clock() - t_start)

    args = registry.OPS[op].arguments(spec, np.random.default_rng(seed))
    kw = {} if act is None else {"act": act}
    ref_out = None
    if reference_seconds(op, spec) <= left() / 4 and reference_bytes(op, spec) <= reference_limit(op, spec, max_bytes):
        t0 = clock()
        ref_out = reference.run(spec, *args, **kw)
        res.reference_s = clock() - t0
    t_reference = clock()

    # 1. compile and check the result against the reference; one output at a time.  No first
    #    call once what is left of the cap is less than the fastest first call so far (or is
    #    gone); one whose first call took longer than what was left is not called again.
    live = []
    for k in contenders:
        before = left()
        fastest_first = min(res.first_s.values(), default=0.0)
        if before <= fastest_first:
            res.failed[k.name] = (f"{k.name}: not timed: the {cap_s:g} s tuning budget ran out before its first "
                                  f"call ({max(0.0, before):.3g} s left" +
                                  (f", the fastest first call took {fastest_first:.3g} s)" if res.first_s else ")"))
            continue
        t0 = clock()
        try:
            out = k.run(spec, *args, **kw)
        except Exception as exc:  # noqa: BLE001 - a failing kernel is excluded, never fatal
            res.failed[k.name] = f"{k.name}: failed on the tuning inputs ({type(exc).__name__}: {exc})"
            continue
        res.first_s[k.name] = clock() - t0
        if ref_out is not None:
            err = rel_error(out, ref_out)
            res.errors[k.name] = err
            bound = k.rtol.get(spec.dtype, 0.0)
            if not err <= ERROR_SLACK * bound:
                res.failed[k.name] = (f"{k.name}: measured error {err:.1e} is over {ERROR_SLACK:g}x its bound "
                                      f"{bound:.0e}")
                out = None
                continue
        out = None  # before the next contender's call allocates its own
        if res.first_s[k.name] > before:
            res.failed[k.name] = (f"{k.name}: not timed: its first call took {res.first_s[k.name]:.3g} s, over "
                                  f"the {before:.3g} s left of the {cap_s:g} s tuning budget")
            continue
        live.append(k)
    spinning = ref_out is not None  # numpy's OpenBLAS ran the reference's GEMM
    ref_out = None

    # 2. probe: two timed calls each, after a pause and a warm-up; the faster one judges
    #    (noise only adds).  The first waits out the reference's spinning OpenBLAS threads.
    #    Fastest first call first; one whose probe would end more than the grace past the cap is
    #    not probed (see the module docstring).
    samples, probe = {}, {}
    if spinning and live:
        sleep(max(0.0, SPIN_S - (clock() - t_reference)))
    grace = max(PROBE_GRACE_S, PROBE_GRACE * cap_s)
    fastest_first = min(res.first_s.values(), default=0.0)

    def fits(calls: int, call_s: float, pause_s: float = 0.0) -> bool:
        return pause_s + calls * call_s <= left() + grace

    for k in sorted(live, key=lambda k: res.first_s[k.name]):
        pause = _pause(min(probe.values())) if probe else PAUSE_MAX_S
        first = res.first_s[k.name]
        guess = fastest_first if first > JIT_RATIO * fastest_first else first
        if not fits(2 + PROBE_CALLS, guess, pause):
            res.failed[k.name] = (f"{k.name}: not timed: its probe ({2 + PROBE_CALLS} calls of ~{guess:.2g} s) "
                                  f"would end past the {cap_s:g} s tuning budget")
            continue
        sleep(pause)
        # the warm-up's first call checks the estimate: the probe's calls must still fit
        t_warm = clock()
        if not warm_up(lambda: k.run(spec, *args, **kw), clock=clock,
                       keep_on=lambda first_s: fits(1 + PROBE_CALLS, first_s)):
            res.failed[k.name] = (f"{k.name}: not timed: its probe ({1 + PROBE_CALLS} more calls of "
                                  f"~{clock() - t_warm:.2g} s) would end past the {cap_s:g} s tuning budget")
            continue
        samples[k.name] = [timed_run(lambda: k.run(spec, *args, **kw), calls=1, clock=clock) for _ in range(PROBE_CALLS)]
        probe[k.name] = min(samples[k.name])
    live = [k for k in live if k.name in probe]
    if not samples:
        excluded = [n for n, why in res.failed.items() if ": not timed: " in why]
        if excluded and len(res.failed) == len(contenders):
            if res.first_s:
                res.not_timed = (f"not timed: no kernel's probe fit in the {cap_s:g} s tuning budget (the "
                                 f"fastest first call took {min(res.first_s.values()):.2g} s)")
            else:
                what = "the inputs and the reference" if res.reference_s is not None else "the inputs"
                res.not_timed = (f"not timed: the {cap_s:g} s tuning budget ran out before the first call "
                                 f"({what} took {clock() - t_start:.2g} s)")
    else:
        fastest = min(probe.values())
        pause = _pause(fastest)
        kept = [k for k in live if probe[k.name] <= drop * fastest]
        spent = clock() - t_start  # everything so far: inputs, reference, compile calls, probes

        # 3. interleaved rounds while the budget lasts (at most max_rounds); once there are
        #    RACE_AFTER samples, a contender whose median is over race x the leader's stops
        reps = {k.name: max(1, math.ceil(TIMED_RUN_S / max(probe[k.name], 1e-9))) for k in kept}

        def round_cost(ks):
            return sum(pause + (warm_calls(probe[k.name]) + reps[k.name]) * probe[k.name] for k in ks)

        rng, rounds_run = random.Random(seed), [0]

        def one_round(ks) -> float:
            t_round = clock()
            for k in round_order(ks, rounds_run[0], rng):
                sleep(pause)
                warm_up(lambda: k.run(spec, *args, **kw), clock=clock)
                samples[k.name].append(timed_run(lambda: k.run(spec, *args, **kw), calls=reps[k.name], clock=clock))
            rounds_run[0] += 1
            return clock() - t_round

        def medians(ks) -> dict:
            return {k.name: statistics.median(samples[k.name]) for k in ks}

        res.budget_s = min(cap_s, spent + max_rounds * round_cost(kept))
        for _ in range(max_rounds):
            if spent + round_cost(kept) > res.budget_s:
                break
            spent += one_round(kept)
            if len(samples[kept[0].name]) >= RACE_AFTER:
                med = medians(kept)
                leader = min(med.values())
                kept = [k for k in kept if med[k.name] <= race * leader]

        # 4. runoff: when the two best medians are within RUNOFF of each other, rounds of just
        #    those two decide (a near tie is where a few noisy samples pick wrong)
        med = medians(kept)
        top = sorted(kept, key=lambda k: med[k.name])[:2]
        if runoff_rounds and len(top) == 2 and med[top[1].name] <= RUNOFF * med[top[0].name]:
            res.budget_s = min(cap_s, max(res.budget_s, spent) + runoff_rounds * round_cost(top))
            for _ in range(runoff_rounds):
                if spent + round_cost(top) > res.budget_s:
                    break
                spent += one_round(top)
        finished = {k.name for k in kept}
        res.times = {name: _summary(s, name not in finished) for name, s in samples.items()}
    res.cost_s = clock() - t_start
    return res


def _pause(fastest_s: float) -> float:
    return min(PAUSE_MAX_S, max(PAUSE_MIN_S, 10.0 * fastest_s))


__all__ = ["Result", "run", "RIGOR", "call_bytes", "reference_bytes", "reference_seconds", "not_timed",
           "MAX_BYTES"]
