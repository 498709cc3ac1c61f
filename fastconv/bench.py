"""Side-by-side timing of kernels on network layers (``fastconv bench``).

The machine is shared and noisy, so contenders are timed *interleaved*: in every round each one
runs once, after a short pause and one untimed call (OpenBLAS, OpenMP and Numba keep separate
thread pools that spin for ~0.1 s after a call; without the pause the next contender pays for
them).  A contender's figure is the median of its rounds; speed is quoted as ratios of medians
from the same run.  With pass "bwd" a row is one kernel name's input + weight + bias gradients,
and its forward runs in the same rounds, so bwd/fwd is such a ratio too.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from . import api, reference, registry
from .c import _lib
from .spec import ConvSpec, PoolBackwardSpec
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


# The ops one row times, per layer kind and pass.  A kernel name registered for every op of the
# pass (and, for "bwd", for the forward op too, whose time the row quotes) forms a row.
PASSES = {
    "fwd": {"conv": ("conv2d.fwd",), "pool": ("maxpool2d.fwd",)},
    "bwd": {"conv": ("conv2d.bwd_data", "conv2d.bwd_weight"), "pool": ("maxpool2d.bwd",)},
}


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
    fwd_ms: float | None = None  # pass "bwd": the same kernel's forward, timed in the same rounds
    extra: dict = field(default_factory=dict)


def problems(spec, rng) -> dict:
    """{op: (spec, arguments of kernel.run after the spec)} for every op of one layer, on shared
    random data (the backward ops see the forward's x and w)."""
    def rand(shape):
        return rng.standard_normal(shape).astype(spec.dtype)
    x, grad_y = rand(spec.input_shape), rand(spec.output_shape)
    if isinstance(spec, ConvSpec):
        w = rand(spec.weight_shape)
        return {"conv2d.fwd": (spec, (x, w, rand(spec.c_out))),
                "conv2d.bwd_data": (spec, (grad_y, w)), "conv2d.bwd_weight": (spec, (grad_y, x))}
    _, indices = reference._max_pool2d(spec, x)
    return {"maxpool2d.fwd": (spec, (x,)),
            "maxpool2d.bwd": (PoolBackwardSpec.from_args(grad_y, indices, spec.input_shape), (grad_y, indices))}


def _job(name: str, ops, probs):
    """A call running kernel `name` for each of ops (returning their outputs), or None when the
    name is missing from an op or refuses the shape."""
    calls = []
    for op in ops:
        spec, args = probs[op]
        kernel = next((k for k in registry.kernels(op) if k.name == name), None)
        if kernel is None or kernel.refusal(spec) is not None:
            return None
        calls.append(partial(kernel.run, spec, *args))
    if "conv2d.bwd_weight" in ops:  # the bias gradient, computed as api.conv2d_backward does
        grad_y = probs["conv2d.bwd_weight"][1][0]
        calls.append(lambda: api.grad_bias(grad_y))
    return lambda: [call() for call in calls]


def _rel_error(outputs, expected) -> float:
    """The largest max |out - exp| / max |exp| over a job's outputs (pool values, not indices)."""
    errors = [0.0]
    for out, exp in zip(outputs, expected):
        out, exp = (out[0], exp[0]) if isinstance(out, tuple) else (out, exp)
        scale = float(np.abs(exp).max()) or 1.0
        errors.append(float(np.nanmax(np.abs(out.astype(np.float64) - exp))) / scale)
    return max(errors)


def bench_layer(layer, batch: int, dtype: str, kernel_names, repeats: int, with_reference: bool, rng,
                pass_: str = "fwd"):
    spec = layer.spec(batch, dtype)
    probs = problems(spec, rng)
    ops, fwd_ops = PASSES[pass_][layer.kind], PASSES["fwd"][layer.kind]
    ref_name = registry.kernels(ops[0])[-1].name
    names = [k.name for k in registry.kernels(ops[0]) if k.backend != "numpy"
             and (not kernel_names or k.name in kernel_names)] + ([ref_name] if with_reference else [])
    contenders = {}  # (name, pass) -> call; a "bwd" row also times its forward in the same rounds
    for name in names:
        jobs = {p: _job(name, o, probs) for p, o in {"fwd": fwd_ops, pass_: ops}.items()}
        if all(jobs.values()):
            contenders.update(((name, p), job) for p, job in jobs.items())
    expected = _job(ref_name, ops, probs)()  # also the correctness check of every contender
    outputs = {key: fn() for key, fn in contenders.items()}  # compiles the JIT kernels
    times = time_interleaved(contenders, repeats)
    medians = {key: statistics.median(t) for key, t in times.items()}
    ref_time = medians.get((ref_name, pass_))
    # Both backward ops do the forward's multiply-adds (the bias gradient is negligible).
    flops = spec.flops * len(ops) if layer.kind == "conv" else None
    rows = []
    for (name, p), t in medians.items():
        if p != pass_:
            continue
        fwd_ms = medians[(name, "fwd")] * 1e3 if pass_ != "fwd" else None
        rows.append(Row(layer.name, _describe(spec), name, t * 1e3, flops / t / 1e9 if flops else None,
                        ref_time / t if ref_time else None, _rel_error(outputs[(name, p)], expected),
                        len(times[(name, p)]), fwd_ms))
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
    bwd = any(r.fwd_ms is not None for r in rows)
    times = f"{'fwd ms':>9s} {'bwd ms':>9s} {'bwd/fwd':>7s}" if bwd else f"{'ms':>9s}"
    head = (f"{'layer':10s} {'shape':34s} {'kernel':16s} {times} {'GFLOP/s':>8s} {'%peak':>6s} "
            f"{'vs ref':>7s} {'max err':>8s}")
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        first = r.layer != last
        last = r.layer
        ms = f"{r.fwd_ms:9.2f} {r.ms:9.2f} {r.ms / r.fwd_ms:6.2f}x" if bwd else f"{r.ms:9.2f}"
        gf = f"{r.gflops:8.1f}" if r.gflops is not None else f"{'':8s}"
        pk = f"{100 * r.gflops / peak:5.0f}%" if (r.gflops is not None and peak) else f"{'':6s}"
        vs = f"{r.vs_reference:6.2f}x" if r.vs_reference is not None else f"{'':7s}"
        note = "  (1 run: over the time box)" if r.runs == 1 and r.ms > REFERENCE_BUDGET_S * 1e3 else ""
        lines.append(f"{r.layer if first else '':10s} {r.shape if first else '':34s} {r.kernel:16s} "
                     f"{ms} {gf} {pk} {vs} {r.error:8.1e}{note}")
    return "\n".join(lines)


def run(net_layers, batch=1, dtype="float32", kernel_names=(), repeats=5, with_reference=True,
        measure_peak=True, progress=sys.stderr, pass_="fwd"):
    if pass_ not in PASSES:
        raise ValueError(f"bench: pass_={pass_!r} must be one of {', '.join(PASSES)}")
    peak = matmul_peak_gflops() if measure_peak else None
    rng = np.random.default_rng(0)
    rows = []
    for i, layer in enumerate(net_layers, 1):
        if progress:
            print(f"[{i}/{len(net_layers)}] {layer.name} ...", file=progress, flush=True)
        rows += bench_layer(layer, batch, dtype, kernel_names, repeats, with_reference, rng, pass_)
    return rows, peak


__all__ = ["run", "format_table", "machine_line", "time_interleaved", "matmul_peak_gflops", "problems",
           "PASSES"]
