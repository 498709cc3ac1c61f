"""Where a C forward call's time goes: the phase profiles of csrc/fastconv.h (FC_PHASE_*).

Each C forward kernel adds, when handed a ``profile`` array, the thread-seconds of its phases:

  input   packing (c.direct's panels), unfolding (c.im2col) or transforming (Winograd) the input;
  weight  packing (c.direct) or transforming (Winograd, on a filter-cache miss) the weights;
  gemm    the multiply-adds: c.direct's microkernel with its stores, OpenBLAS's GEMM, Winograd's
          batched GEMMs;
  output  the epilogue: c.im2col's bias, Winograd's output transform.

``profile`` times a kernel's steady state (after a warm-up call, so a Winograd filter comes from
its cache as in a network's later calls) and gives per call the wall time and each phase's share
of the threads' time.  ``gemm_flops`` counts the multiply-adds the gemm phase does (Winograd's
are alpha^2 per tile, not the direct algorithm's 9 m^2), so its rate can be set against the
machine's GEMM peak.  benchmarks/profile.py lays it out per network.
"""
from __future__ import annotations

import math
import time

import numpy as np

from . import direct, im2col, winograd

PHASES = ("input", "weight", "gemm", "output")  # the order of fastconv.h's FC_PHASE_*
FORWARD = {"c.direct": direct.conv2d_forward, "c.im2col": im2col.conv2d_forward,
           "c.winograd_f2k3": winograd.conv2d_forward_f2k3, "c.winograd_f4k3": winograd.conv2d_forward_f4k3}


def gemm_flops(spec, m: int = 0) -> int:
    """The multiply-adds (x2) of the gemm phase on spec: the direct algorithm's for c.direct and
    c.im2col (m = 0); for Winograd F(m x m, 3 x 3) (a kernel's output_tile), alpha^2 GEMMs over
    the tiles that hold output pixels."""
    cg = spec.c_in // spec.groups
    if not m:
        return 2 * spec.n * spec.c_out * spec.out_h * spec.out_w * cg * spec.kh * spec.kw
    tiles = spec.n * math.ceil(spec.out_h / m) * math.ceil(spec.out_w / m)
    return 2 * (m + 2) ** 2 * tiles * spec.c_out * cg


def profile(name: str, spec, x, w, bias, seconds: float = 0.3) -> dict:
    """{"wall_s": seconds per call, "phases": {phase: thread-seconds per call}} of kernel `name`
    on these arrays, over calls lasting at least `seconds` after one untimed call."""
    run = FORWARD[name]
    run(spec, x, w, bias)
    acc, calls = np.zeros(len(PHASES)), 0
    t0 = time.perf_counter()
    while not calls or time.perf_counter() - t0 < seconds:
        run(spec, x, w, bias, profile=acc)
        calls += 1
    wall = (time.perf_counter() - t0) / calls
    return {"wall_s": wall, "phases": dict(zip(PHASES, (acc / calls).tolist()))}


__all__ = ["PHASES", "FORWARD", "gemm_flops", "profile"]
