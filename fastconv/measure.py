"""Timing the eligible kernels of one problem, as the dispatcher's MEASURE and PATIENT modes do.

The contenders run on random inputs of the spec's shapes (never the caller's arrays, which must
not be modified or aliased).  Phases:

1. compile: one untimed call per contender (the JIT compiles; the output is compared with the
   reference's on the same inputs: a kernel far over its error bound, or one that raises, is
   excluded with the reason);
2. probe: after a pause and a warm-up (untimed calls), two timed calls each.  In MEASURE mode a
   contender whose faster call is over 3x the fastest cannot win and is not timed further;
3. rounds: the remaining contenders run interleaved as fastconv.bench does -- in every round
   each one gets a pause, a warm-up, then ``k`` timed calls (k makes a timed run last
   ~1 ms, so tiny problems are not timer noise).  A contender's figure is the median of its
   probe calls and its rounds.  In MEASURE mode, from the second round on, a contender whose
   median is over 1.5x the leader's stops (racing); the choice is made among those that finish;
4. runoff (MEASURE mode): when the two best medians are within 15% of each other, up to 4 more
   rounds of just those two (a near tie is where a few noisy samples decide wrongly; with it,
   re-timing on new inputs agreed with the stored choice within 10% on more layers).

Budget: what the probes plus the mode's rounds (4 for measure, 14 for patient, which neither
drops nor races; plus a runoff's) cost at the probed speeds -- so it scales with the problem:
~0.1 s for a tiny one, a few seconds for a VGG layer -- but never more than ``cap_s``
(``FASTCONV_TUNE_BUDGET_S``, default 10 s per problem): rounds stop when the next would not fit,
down to none (then the probes decide).  Compilation and the reference
call are not counted (the first call pays the JIT anyway); the reference is skipped, and errors
left unmeasured, when it would take more than a quarter of the cap.
The pause lets the thread pools of the previous contender (OpenMP, Numba) stop spinning before
the next one runs; it scales with the problem (10 x the fastest probe, between 5 and 50 ms).
Nothing is timed right after a pause (warm_up): on this kind of machine (a VM whose idle cores
halt) the first two calls after 0.1 s of idleness took a whole scheduler tick or two (4-8 ms)
whatever the kernel (a 0.25 ms one included), and only a few milliseconds of work brought it back
to speed, so every timed run follows WARM_S of untimed calls.  And the first probe
waits until SPIN_S after the reference: the reference's GEMM runs on numpy's OpenBLAS, whose
threads busy-wait ~0.1 s after it returns, and an OpenMP team sharing the cores with them ran
20-50x slow (VGG-16-sized pauses were shorter than that, so a fast kernel could be dropped after
a ruined probe; GoogLeNet's 1x1 layers lost c.im2col that way).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from .spec import ConvSpec

# rigor -> (rounds after the probe, drop ratio after the probe, racing ratio after each round,
#           runoff rounds of the two best when they are within RUNOFF)
RIGOR = {"measure": (4, 3.0, 1.5, 4), "patient": (14, math.inf, math.inf, 0)}
RUNOFF = 1.15
PROBE_CALLS = 2
WARM_S = 0.005  # untimed calls before timing, at least this long (and at least two calls)
SPIN_S = 0.15  # how long OpenBLAS's threads busy-wait after a call (~0.1 s), with a margin
RACE_AFTER = 4  # samples (the probe's two and two rounds) before racing judges a median
PAUSE_MIN_S, PAUSE_MAX_S = 0.005, 0.05
TIMED_RUN_S = 1e-3  # a timed run repeats the call until it lasts about this long
ERROR_SLACK = 10.0  # excluded when the measured error exceeds this many times the kernel's bound
REFERENCE_FLOPS = 10e9  # the reference's speed, roughly (FLOP/s), to decide whether to run it


@dataclass
class Result:
    """What timing one problem found."""
    times: dict = field(default_factory=dict)   # name -> {"median", "q1", "q3", "min", "max", "runs", "dropped"}
    errors: dict = field(default_factory=dict)  # name -> max |out - ref| / max |ref|
    failed: dict = field(default_factory=dict)  # name -> reason it was excluded
    cost_s: float = 0.0                         # wall time of the whole measurement, compilation included
    budget_s: float = 0.0

    def best(self) -> str | None:
        """The contender with the lowest median among those timed to the end."""
        timed = {n: t["median"] for n, t in self.times.items() if not t["dropped"]} or \
            {n: t["median"] for n, t in self.times.items()}
        return min(timed, key=timed.get) if timed else None


def inputs(op: str, spec, rng) -> tuple:
    """Random arguments of kernel.run after the spec, for op on spec."""
    def rand(shape):
        return rng.standard_normal(shape, dtype=np.float64).astype(spec.dtype)

    if op == "conv2d.fwd":
        return rand(spec.input_shape), rand(spec.weight_shape), rand(spec.c_out)
    if op == "conv2d.bwd_data":
        return rand(spec.output_shape), rand(spec.weight_shape)
    if op == "conv2d.bwd_weight":
        return rand(spec.output_shape), rand(spec.input_shape)
    if op == "maxpool2d.fwd":
        return (rand(spec.input_shape),)
    if op == "maxpool2d.bwd":
        shape = (spec.n, spec.c, spec.out_h, spec.out_w)
        return rand(shape), rng.integers(0, spec.h * spec.w, size=shape, dtype=np.int64)
    raise ValueError(f"measure: unknown op {op!r}")


def flops(op: str, spec) -> int | None:
    """FLOPs of one call (the direct algorithm's multiply-adds; both backward passes do as many)."""
    return spec.flops if isinstance(spec, ConvSpec) and op.startswith("conv2d.") else None


def rel_error(out, ref) -> float:
    out, ref = (out[0], ref[0]) if isinstance(out, tuple) else (out, ref)
    if out.shape != ref.shape:
        return math.inf
    diff = np.abs(out.astype(np.float64) - ref)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    err = float(diff.max()) if diff.size else 0.0
    if math.isnan(err):
        return math.inf
    return err / scale if scale > 0 else err


def _summary(samples: list, dropped: bool) -> dict:
    q = np.percentile(samples, [25, 50, 75]) if len(samples) > 1 else [samples[0]] * 3
    return {"median": float(statistics.median(samples)), "q1": float(q[0]), "q3": float(q[2]),
            "min": float(min(samples)), "max": float(max(samples)), "runs": len(samples),
            "dropped": dropped}


def run(op: str, spec, contenders, reference, *, rigor: str = "measure", cap_s: float = 10.0,
        seed: int = 0, clock=time.perf_counter, sleep=time.sleep) -> Result:
    """Time contenders (registry kernels, all eligible for spec) on random inputs; see the module
    docstring for the phases and the budget.  reference: the kernel that defines the result."""
    max_rounds, drop, race, runoff_rounds = RIGOR[rigor]
    t_start = clock()
    args = inputs(op, spec, np.random.default_rng(seed))
    res = Result()
    work = flops(op, spec)
    ref_out = reference.run(spec, *args) if work is None or work / REFERENCE_FLOPS < cap_s / 4 else None
    t_reference = clock()

    # 1. compile (untimed) and check the result against the reference
    live, out = [], None
    for k in contenders:
        try:
            out = k.run(spec, *args)
        except Exception as exc:  # noqa: BLE001 - a failing kernel is excluded, never fatal
            res.failed[k.name] = f"{k.name}: failed on the tuning inputs ({type(exc).__name__}: {exc})"
            continue
        if ref_out is not None:
            err = rel_error(out, ref_out)
            res.errors[k.name] = err
            bound = k.rtol.get(spec.dtype, 0.0)
            if not err <= ERROR_SLACK * bound:
                res.failed[k.name] = (f"{k.name}: measured error {err:.1e} is over {ERROR_SLACK:g}x its bound "
                                      f"{bound:.0e}")
                continue
        live.append(k)
    spinning = ref_out is not None  # numpy's OpenBLAS ran the reference's GEMM
    del ref_out, out

    # 2. probe: two timed calls each, after a pause and a warm-up; the faster one judges
    #    (noise only adds).  The first waits out the reference's spinning OpenBLAS threads.
    samples, probe = {}, {}
    if spinning:
        sleep(max(0.0, SPIN_S - (clock() - t_reference)))
    for k in live:
        sleep(_pause(min(probe.values())) if probe else PAUSE_MAX_S)
        warm_up(lambda: k.run(spec, *args), clock=clock)
        samples[k.name] = []
        for _ in range(PROBE_CALLS):
            t0 = clock()
            k.run(spec, *args)
            samples[k.name].append(clock() - t0)
        probe[k.name] = min(samples[k.name])
    if samples:
        fastest = min(probe.values())
        pause = _pause(fastest)
        kept = [k for k in live if probe[k.name] <= drop * fastest]
        # the probes, each contender's warm-up and the pauses
        spent = sum(sum(s) + warm_calls(probe[n]) * probe[n] for n, s in samples.items()) + pause * len(probe)

        # 3. interleaved rounds while the budget lasts (at most max_rounds); once there are
        #    RACE_AFTER samples, a contender whose median is over race x the leader's stops
        reps = {k.name: max(1, math.ceil(TIMED_RUN_S / max(probe[k.name], 1e-9))) for k in kept}

        def round_cost(ks):
            return sum(pause + (warm_calls(probe[k.name]) + reps[k.name]) * probe[k.name] for k in ks)
        def one_round(ks) -> float:
            t_round = clock()
            for k in ks:
                sleep(pause)
                warm_up(lambda: k.run(spec, *args), clock=clock)
                n = reps[k.name]
                t0 = clock()
                for _ in range(n):
                    k.run(spec, *args)
                samples[k.name].append((clock() - t0) / n)
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


def warm_up(fn, seconds: float = WARM_S, clock=time.perf_counter) -> None:
    """Untimed calls of fn for at least `seconds`, and at least two.  GoogLeNet's 3a_1x1 by
    c.im2col (0.27 ms steady) after a 0.1 s pause: with one untimed call the timed one took
    4.0 ms, with three 0.44, with ten 0.28."""
    t0, n = clock(), 0
    while n < 2 or clock() - t0 < seconds:
        fn()
        n += 1


def warm_calls(call_s: float) -> int:
    """How many calls warm_up makes of a call taking call_s, one more (a budget errs long)."""
    return max(2, math.ceil(WARM_S / max(call_s, 1e-9))) + 1


def _pause(fastest_s: float) -> float:
    return min(PAUSE_MAX_S, max(PAUSE_MIN_S, 10.0 * fastest_s))


__all__ = ["Result", "run", "inputs", "flops", "rel_error", "RIGOR"]
