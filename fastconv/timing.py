"""How fastconv times a call, in one place: the dispatcher's tuner (fastconv/dispatch/measure.py),
``fastconv bench``, the pytest-benchmark suite and the tests all time through these functions.

The machine is shared and noisy, and three effects decide whether a figure means anything:

- **thread pools spin.**  OpenBLAS, OpenMP and Numba keep separate pools whose threads busy-wait
  after a call (OpenBLAS ~0.1 s: SPIN_S with a margin); a contender timed right after another's
  call shares the cores with them.  So every timed run follows a pause.
- **idle cores halt.**  On this kind of machine (a VM whose idle cores halt) the first two calls
  after 0.1 s of idleness took a whole scheduler tick or two (4-8 ms) whatever the kernel (a
  0.25 ms one included), and only a few milliseconds of work brought it back to speed: so every
  timed run follows WARM_S of untimed calls (``warm_up``).
- **short calls are timer noise, and stalls hit single calls.**  A timed run repeats a call until
  it lasts TIMED_RUN_S (or a count fixed from a probe), and its figure is the median of its calls'
  times (``timed_run``), so a stall of the VM costs one call, not the run.

``interleaved`` puts them together for side-by-side figures: every round times every contender
once, so drifts of the machine hit all of them alike, and ratios of medians are what we quote.
"""
from __future__ import annotations

import math
import random
import statistics
import time

import numpy as np

WARM_S = 0.005  # untimed calls before timing, at least this long (and at least two calls)
SPIN_S = 0.15  # how long OpenBLAS's threads busy-wait after a call (~0.1 s), with a margin
TIMED_RUN_S = 1e-3  # a timed run repeats the call until it lasts about this long (the tuner's)
SIDE_BY_SIDE_RUN_S = 5e-3  # interleaved's timed runs: more calls to take the median of, next to its pause
PAUSE_S = 0.1  # the pause between contenders of a side-by-side run (their pools stop spinning)
ONCE_S = 3.0  # interleaved: a contender whose first timed call took longer runs only once


def warm_up(fn, seconds: float = WARM_S, clock=time.perf_counter, keep_on=None) -> bool:
    """Untimed calls of fn for at least `seconds`, and at least two.  GoogLeNet's 3a_1x1 by
    c.im2col (0.27 ms steady) after a 0.1 s pause: with one untimed call the timed one took
    4.0 ms, with three 0.44, with ten 0.28.  keep_on(first call's seconds) -> False stops after
    the first call (the budget cannot hold the rest); the return says whether it went on."""
    t0, n = clock(), 0
    while n < 2 or clock() - t0 < seconds:
        fn()
        n += 1
        if n == 1 and keep_on is not None and not keep_on(clock() - t0):
            return False
    return True


def warm_calls(call_s: float) -> int:
    """How many calls warm_up makes of a call taking call_s, one more (a budget errs long)."""
    return max(2, math.ceil(WARM_S / max(call_s, 1e-9))) + 1


def timed_run(fn, calls: int | None = None, clock=time.perf_counter, seconds: float = TIMED_RUN_S) -> float:
    """Seconds per call of one timed run of fn: `calls` calls, or (None) as many as make the run
    last `seconds`, each timed on its own; the figure is their median.  A run's mean carried every
    stall that fell into it: on this shared VM calls of 0.3-0.6 ms (GoogLeNet's 3b_pool_proj, by
    torch, c.im2col, numba.im2col) took 2-19 ms in a third of the rounds, which moved medians of
    nine rounds by up to 2x; the median of the calls inside a run keeps a stall to the call it hit."""
    times, t_end = [], clock() + seconds
    if calls is None:
        while not times or clock() < t_end:
            t0 = clock()
            fn()
            times.append(clock() - t0)
    else:
        for _ in range(calls):
            t0 = clock()
            fn()
            times.append(clock() - t0)
    return statistics.median(times)


def round_order(names, round_: int, rng: random.Random) -> list:
    """The order in which round `round_` of an interleaved timing runs its contenders: as given in
    the first round, shuffled by rng (seeded by the caller, so a run repeats) in every later one."""
    order = list(names)
    if round_:
        rng.shuffle(order)
    return order


def interleaved(contenders: dict, repeats: int, pause: float = PAUSE_S) -> dict:
    """{name: [seconds per call, one per round]}: every round times every contender once, each
    after a pause and a warm-up, the rounds in different orders (a fixed-seed shuffle after the
    first), so no contender always follows the same one: on VGG conv4_2, c.winograd_f4k3 right
    after a Numba kernel ran 13% slower than after a C kernel in one run of three (the median
    of a contender that always came next would carry that).  A contender whose single call
    exceeds ONCE_S runs only once."""
    times = {name: [] for name in contenders}
    rng = random.Random(0)
    for round_ in range(repeats):
        for name in round_order(contenders, round_, rng):
            fn = contenders[name]
            if round_ and times[name] and times[name][0] > ONCE_S:
                continue
            time.sleep(pause)
            warm_up(fn)
            times[name].append(timed_run(fn, seconds=SIDE_BY_SIDE_RUN_S))
    return times


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's practical float32 peak: numpy's own n x n matmul, median of repeats."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    for _ in range(3):  # wake OpenBLAS's threads and bring the clocks up before timing
        a @ a
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    time.sleep(PAUSE_S)
    return 2 * n ** 3 / statistics.median(times) / 1e9


__all__ = ["warm_up", "warm_calls", "timed_run", "round_order", "interleaved", "matmul_peak_gflops",
           "WARM_S", "SPIN_S", "TIMED_RUN_S", "SIDE_BY_SIDE_RUN_S", "PAUSE_S", "ONCE_S"]
