"""Side-by-side timing of kernels on network layers (``fastconv bench``).

The machine is shared and noisy, so contenders are timed *interleaved*: in every round each one
runs once, after a short pause and one untimed call (OpenBLAS, OpenMP and Numba keep separate
thread pools that spin for ~0.1 s after a call; without the pause the next contender pays for
them).  A contender's figure is the median of its rounds; speed is quoted as ratios of medians
from the same run.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import registry
from .c import _lib
from .spec import ConvSpec
from .threads import get_num_threads

PAUSE_S = 0.1
REFERENCE_BUDGET_S = 3.0  # the reference is timed once only when a call takes longer than this


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def time_interleaved(contenders: dict, repeats: int, pause: float = PAUSE_S) -> dict:
    """{name: [seconds per round]}: every round runs every contender once, each after a pause and
    an untimed call.  A contender whose single call exceeds REFERENCE_BUDGET_S runs only once."""
    times = {name: [] for name in contenders}
    for round_ in range(repeats):
        for name, fn in contenders.items():
            if round_ and times[name] and times[name][0] > REFERENCE_BUDGET_S:
                continue
            time.sleep(pause)
            fn()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


@dataclass
class Row:
    layer: str
    shape: str
    kernel: str
    ms: float
    gflops: float | None
    vs_reference: float | None
    error: float
    runs: int
    extra: dict = field(default_factory=dict)


def _inputs(spec, rng):
    if isinstance(spec, ConvSpec):
        x = rng.standard_normal(spec.input_shape).astype(spec.dtype)
        w = rng.standard_normal(spec.weight_shape).astype(spec.dtype)
        b = rng.standard_normal(spec.c_out).astype(spec.dtype)
        return "conv2d.fwd", (x, w, b), lambda k: (lambda: k.run(spec, x, w, b))
    x = rng.standard_normal(spec.input_shape).astype(spec.dtype)
    return "maxpool2d.fwd", (x,), lambda k: (lambda: k.run(spec, x))


def bench_layer(layer, batch: int, dtype: str, kernel_names, repeats: int, with_reference: bool, rng):
    spec = layer.spec(batch, dtype)
    op, arrays, runner = _inputs(spec, rng)
    kernels = [k for k in registry.kernels(op) if k.refusal(spec) is None
               and k.backend != "numpy" and (not kernel_names or k.name in kernel_names)]
    contenders = {k.name: runner(k) for k in kernels}
    ref_kernel = registry.kernels(op)[-1]
    expected = runner(ref_kernel)()  # also the correctness check of every contender
    if with_reference:
        contenders[ref_kernel.name] = runner(ref_kernel)
    outputs = {name: fn() for name, fn in contenders.items()}  # compiles the JIT kernels
    times = time_interleaved(contenders, repeats)
    medians = {name: statistics.median(t) for name, t in times.items()}
    ref_time = medians.get(ref_kernel.name)
    rows = []
    for name, t in medians.items():
        out, exp = (outputs[name], expected) if op == "conv2d.fwd" else (outputs[name][0], expected[0])
        scale = float(np.abs(exp).max()) or 1.0
        error = float(np.nanmax(np.abs(out.astype(np.float64) - exp))) / scale
        gflops = spec.flops / t / 1e9 if op == "conv2d.fwd" else None
        rows.append(Row(layer.name, _describe(spec), name, t * 1e3, gflops,
                        ref_time / t if ref_time else None, error, len(times[name])))
    return rows


def _describe(spec) -> str:
    n, c, h, w = spec.input_shape
    if isinstance(spec, ConvSpec):
        return f"{n}x{c}x{h}x{w} -> {spec.c_out} k{spec.kh}x{spec.kw} s{spec.stride[0]}" + \
            (f" g{spec.groups}" if spec.groups > 1 else "")
    return f"{n}x{c}x{h}x{w} pool{spec.kernel[0]}x{spec.kernel[1]} s{spec.stride[0]}"


def machine_line(peak: float | None) -> str:
    c_state = f"C: {'OpenMP' if _lib.has_openmp() else 'serial'}" if _lib.lib is not None else "C: not built"
    peak_s = f", numpy float32 matmul peak {peak:.0f} GFLOP/s (2048^2)" if peak else ""
    return (f"{cpu_model()}, {os.cpu_count()} CPUs, fastconv threads {get_num_threads()}{peak_s}; "
            f"python {platform.python_version()}, numpy {np.__version__}, {c_state}")


def format_table(rows, peak: float | None) -> str:
    head = f"{'layer':10s} {'shape':34s} {'kernel':16s} {'ms':>9s} {'GFLOP/s':>8s} {'%peak':>6s} {'vs ref':>7s} {'max err':>8s}"
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        first = r.layer != last
        last = r.layer
        gf = f"{r.gflops:8.1f}" if r.gflops is not None else f"{'':8s}"
        pk = f"{100 * r.gflops / peak:5.0f}%" if (r.gflops is not None and peak) else f"{'':6s}"
        vs = f"{r.vs_reference:6.2f}x" if r.vs_reference is not None else f"{'':7s}"
        note = "  (1 run: over the time box)" if r.runs == 1 else ""
        lines.append(f"{r.layer if first else '':10s} {r.shape if first else '':34s} {r.kernel:16s} "
                     f"{r.ms:9.2f} {gf} {pk} {vs} {r.error:8.1e}{note}")
    return "\n".join(lines)


def run(net_layers, batch=1, dtype="float32", kernel_names=(), repeats=5, with_reference=True,
        measure_peak=True, progress=sys.stderr):
    peak = matmul_peak_gflops() if measure_peak else None
    rng = np.random.default_rng(0)
    rows = []
    for i, layer in enumerate(net_layers, 1):
        if progress:
            print(f"[{i}/{len(net_layers)}] {layer.name} ...", file=progress, flush=True)
        rows += bench_layer(layer, batch, dtype, kernel_names, repeats, with_reference, rng)
    return rows, peak


__all__ = ["run", "format_table", "machine_line", "time_interleaved", "matmul_peak_gflops"]
