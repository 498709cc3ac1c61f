"""Side-by-side timing of kernels on network layers (``fastconv bench``).

The machine is shared and noisy, so contenders are timed *interleaved* (fastconv/timing.py): in
every round each one runs once, after a pause and a few milliseconds of untimed calls.  A
contender's figure is the median of its rounds; speed is quoted as ratios of medians from the
same run.  With pass "bwd" a row is one kernel name's input + weight + bias gradients,
and its forward runs in the same rounds, so bwd/fwd is such a ratio too.

Contenders per layer: every registered kernel that serves it; ``auto``, the public call
(``fastconv.conv2d(..., algo="auto")`` and friends) whose first, untimed call makes the
dispatcher's choice (tuning it in measure mode), its row naming the kernel chosen; optionally
``torch`` (its CPU conv2d / max_pool2d, and the formulas its autograd runs for the backward), for
the "vs torch" ratio; and the NumPy reference, for "vs ref".  ``totals`` sums a net's rows, each
layer weighted by how often its shape occurs; ``plot`` charts GFLOP/s per conv layer.
"""
from __future__ import annotations

import collections
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from . import api, dispatch, machine, registry
from .common import nonfinite
from .progress import Progress
from .reference import rel_error
from .spec import ConvSpec
from .threads import get_num_threads
from .timing import ONCE_S, PAUSE_S, interleaved, matmul_peak_gflops

AUTO, TORCH, ORT = "auto", "torch", "onnxruntime"  # contenders that are not registered kernels (no dot)
PEERS = (TORCH, ORT)  # the other libraries --compare can time beside fastconv (fastconv/peers.py)


# The ops one row times, per layer kind and pass.  A kernel name registered for every op of the
# pass (and, for "bwd", for the forward op too, whose time the row quotes) forms a row.
PASSES = registry.PASSES


@dataclass
class Row:
    layer: str
    shape: str
    kernel: str                  # a registered kernel, AUTO or one of PEERS
    ms: float
    gflops: float | None
    vs_reference: float | None
    error: float
    runs: int
    fwd_ms: float | None = None  # pass "bwd": the same kernel's forward, timed in the same rounds
    extra: dict = field(default_factory=dict)
    vs_torch: float | None = None  # torch's time / this row's, same rounds (--compare torch)
    vs_onnxruntime: float | None = None  # ONNX Runtime's time / this row's (--compare onnxruntime)
    chosen: dict | None = None     # AUTO: {op: the kernel the dispatcher chose}
    count: int = 1                 # how often the layer's shape occurs in the net (Layer.count)
    # calls of this kernel in this layer's timing that the inf/NaN guard handed to its backend's
    # im2col (fastconv/common/nonfinite.py; auto's calls count under the kernel it chose)
    rerouted: int = 0

    @property
    def label(self) -> str:
        """The kernel column: auto says what it chose, the input gradient's kernel first for
        "bwd" (the pass's own order): auto (c.winograd_f4k3), auto (c.winograd_f4k3 + c.im2col)."""
        return f"{self.kernel} ({' + '.join(dict.fromkeys(self.chosen.values()))})" if self.chosen else self.kernel


def problems(spec, rng) -> dict:
    """{op: (op's spec, arguments of kernel.run after the spec)} for every op of one layer, on
    shared random data (registry.layer_data: the backward ops see the forward's x and w)."""
    return _problems_of(spec, registry.layer_data(spec, rng))


def _problems_of(spec, data: dict) -> dict:
    kind = "conv" if isinstance(spec, ConvSpec) else "pool"
    return {op.name: (op.spec_of(spec), tuple(data[n] for n in op.args))
            for op in registry.OPS.values() if op.layer == kind}


def _job(name: str, ops, probs):
    """A call running kernel `name` for each of ops (returning their outputs), or None when the
    name is missing from an op or refuses the shape."""
    calls = []
    for op in ops:
        spec, args = probs[op]
        kernel = registry.kernel(op, name)
        if kernel is None or kernel.refusal(spec) is not None:
            return None
        calls.append(partial(kernel.run, spec, *args))
    if "conv2d.bwd_weight" in ops:  # the bias gradient, computed as api.conv2d_backward does
        grad_y = probs["conv2d.bwd_weight"][1][0]
        calls.append(lambda: api.grad_bias(grad_y))
    return lambda: [call() for call in calls]


def _auto_job(spec, data, ops):
    """The public functions that run ops with ``algo="auto"`` (api.op_call; conv2d_backward runs
    both gradients in one call), returning what the kernel jobs of those ops return."""
    calls, seen = [], set()
    for op in map(registry.OPS.get, ops):
        if op.public not in seen:
            seen.add(op.public)
            calls.append((api.op_call(op.name, op.spec_of(spec), data), op.output is not None))
    return lambda: [out for call, several in calls for out in (call() if several else [call()])]


def _torch_job(spec, tensors, ops):
    """torch's CPU functions for ops on the same data (tensors sharing the arrays' memory), as its
    autograd runs them (registry.Op.torch), and for the weight gradient torch's bias sum."""
    calls = [registry.OPS[op].torch(spec, tensors) for op in ops]
    if "conv2d.bwd_weight" in ops:
        grad_y = tensors["grad_y"]
        calls.append(lambda: grad_y.sum((0, 2, 3)))
    return lambda: [_numpy(call()) for call in calls]


def _numpy(out):
    return tuple(t.numpy() for t in out) if isinstance(out, tuple) else out.numpy()


def _onnxruntime_job(spec, data, ops):
    """ONNX Runtime's CPU provider on a one-node model per op (registry.Op.onnxruntime), or None
    where it has no such op (the backward passes) or dtype (float64)."""
    calls = [registry.OPS[op].onnxruntime for op in ops]
    if None in calls:
        return None
    calls = [make(spec, data, get_num_threads()) for make in calls]
    return None if None in calls else (lambda: [call() for call in calls])


def bench_layer(layer, batch: int, dtype: str, kernel_names, repeats: int, with_reference: bool, rng,
                pass_: str = "fwd", with_torch: bool = False, compare=()):
    """The layer's rows.  kernel_names: registered names and/or AUTO (empty: every kernel and AUTO);
    compare: PEERS to time beside them (with_torch: the same as TORCH in compare)."""
    compare = set(compare) | ({TORCH} if with_torch else set())
    spec = layer.spec(batch, dtype)
    data = registry.layer_data(spec, rng)
    probs = _problems_of(spec, data)
    ops = PASSES[pass_][layer.kind]
    passes = {"fwd": PASSES["fwd"][layer.kind], pass_: ops}  # a "bwd" row also times its forward
    ref_name = registry.kernels(ops[0])[-1].name
    names = [k.name for k in registry.kernels(ops[0]) if not k.is_reference
             and (not kernel_names or k.name in kernel_names)]
    jobs = {name: {p: _job(name, o, probs) for p, o in passes.items()} for name in names}
    if not kernel_names or AUTO in kernel_names:
        jobs[AUTO] = {p: _auto_job(spec, data, o) for p, o in passes.items()}
    if TORCH in compare:
        import torch
        tensors = {name: torch.from_numpy(a) for name, a in data.items()}
        jobs[TORCH] = {p: _torch_job(spec, tensors, o) for p, o in passes.items()}
    if ORT in compare:
        jobs[ORT] = {p: _onnxruntime_job(spec, data, o) for p, o in passes.items()}
    if with_reference:
        jobs[ref_name] = {p: _job(ref_name, o, probs) for p, o in passes.items()}
    contenders = {(name, p): job[p] for name, job in jobs.items() if all(job[p] for p in passes) for p in passes}
    rerouted_before = collections.Counter(nonfinite.REROUTED)
    expected = _job(ref_name, ops, probs)()  # also the correctness check of every contender
    outputs = {key: fn() for key, fn in contenders.items()}  # compiles the JIT kernels; auto chooses
    # what auto's first call chose: the dispatcher's memo, under the key api's call used
    chosen = {op: dispatch.choose(op, probs[op][0], caller="bench").name for op in ops} if AUTO in jobs else None
    times = interleaved(contenders, repeats)
    medians = {key: statistics.median(t) for key, t in times.items()}
    rerouted = collections.Counter(nonfinite.REROUTED) - rerouted_before  # this layer's, not the process's
    ref_time, torch_time, ort_time = (medians.get((name, pass_)) for name in (ref_name, TORCH, ORT))
    # the row's ops' FLOPs (both backward ops do the forward's multiply-adds; the bias gradient is negligible)
    flops = sum(registry.OPS[op].flops(probs[op][0]) or 0 for op in ops) or None
    rows = []
    for (name, p), t in medians.items():
        if p != pass_:
            continue
        fwd_ms = medians[(name, "fwd")] * 1e3 if pass_ != "fwd" else None
        rows.append(Row(layer.name, _describe(spec), name, t * 1e3, flops / t / 1e9 if flops else None,
                        ref_time / t if ref_time else None, rel_error(outputs[(name, p)], expected),
                        len(times[(name, p)]), fwd_ms, vs_torch=torch_time / t if torch_time else None,
                        vs_onnxruntime=ort_time / t if ort_time else None,
                        chosen=chosen if name == AUTO else None, count=layer.count, rerouted=rerouted[name]))
    return rows


def _describe(spec) -> str:
    n, c, h, w = spec.input_shape
    if isinstance(spec, ConvSpec):
        return f"{n}x{c}x{h}x{w} -> {spec.c_out} k{spec.kh}x{spec.kw} s{spec.stride[0]}" + \
            (f" g{spec.groups}" if spec.groups > 1 else "")
    return f"{n}x{c}x{h}x{w} pool{spec.kernel[0]}x{spec.kernel[1]} s{spec.stride[0]}"


def machine_line(peak: float | None) -> str:
    """The machine (fastconv/machine.py) and every backend's status (its record), in one line."""
    peak_s = f", numpy float32 matmul peak {peak:.0f} GFLOP/s (2048^2)" if peak else ""
    return (f"{machine.describe()}, fastconv threads {get_num_threads()}{peak_s}; " +
            "; ".join(b.status() for b in registry.BACKENDS.values()))


def format_table(rows, peak: float | None) -> str:
    bwd = any(r.fwd_ms is not None for r in rows)
    vs_torch = any(r.vs_torch is not None for r in rows)
    vs_ort = any(r.vs_onnxruntime is not None for r in rows)
    width = max([16] + [len(r.label) for r in rows])
    times = f"{'fwd ms':>9s} {'bwd ms':>9s} {'bwd/fwd':>7s}" if bwd else f"{'ms':>9s}"
    head = (f"{'layer':10s} {'shape':34s} {'kernel':{width}s} {times} {'GFLOP/s':>8s} {'%peak':>6s} "
            f"{'vs ref':>7s} " + (f"{'vs torch':>8s} " if vs_torch else "") + (f"{'vs ort':>8s} " if vs_ort else "")
            + f"{'max err':>8s}")
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        first = r.layer != last
        last = r.layer
        ms = f"{r.fwd_ms:9.2f} {r.ms:9.2f} {r.ms / r.fwd_ms:6.2f}x" if bwd else f"{r.ms:9.2f}"
        gf = f"{r.gflops:8.1f}" if r.gflops is not None else f"{'':8s}"
        pk = f"{100 * r.gflops / peak:5.0f}%" if (r.gflops is not None and peak) else f"{'':6s}"
        vs = f"{r.vs_reference:6.2f}x" if r.vs_reference is not None else f"{'':7s}"
        vt = (f"{r.vs_torch:7.2f}x " if r.vs_torch is not None else f"{'':9s}") if vs_torch else ""
        vt += (f"{r.vs_onnxruntime:7.2f}x " if r.vs_onnxruntime is not None else f"{'':9s}") if vs_ort else ""
        note = "  (1 run: over the time box)" if r.runs == 1 and r.ms > ONCE_S * 1e3 else ""
        lines.append(f"{r.layer if first else '':10s} {r.shape if first else '':34s} {r.label:{width}s} "
                     f"{ms} {gf} {pk} {vs} {vt}{r.error:8.1e}{note}")
    rerouted = collections.Counter()
    for r in rows:
        rerouted[r.kernel] += r.rerouted
    rerouted = {name: n for name, n in rerouted.items() if n}
    if rerouted:  # calls holding inf/NaN ran on another kernel (fastconv/common/nonfinite.py)
        lines.append("inf/NaN guard rerouted calls to the backend's im2col: " +
                     ", ".join(f"{name} {n}" for name, n in sorted(rerouted.items())))
    return "\n".join(lines)


def _geomean(pairs) -> float | None:
    """The geometric mean of values weighted by counts, [(value, count)]; None when a value is missing."""
    if not pairs or any(v is None for v, _ in pairs):
        return None
    return math.exp(sum(c * math.log(v) for v, c in pairs) / sum(c for _, c in pairs))


def totals(rows) -> dict:
    """A net's figures from its rows, each layer weighted by its count: for the fastest registered
    kernel of every layer ("best", the reference aside), for auto and for each peer, the summed ms
    and the geometric means of "vs ref" and "vs <peer>".  A contender missing from a layer gets no
    entry, and a ratio missing from a layer is None."""
    by_layer = {}
    for r in rows:
        by_layer.setdefault(r.layer, []).append(r)
    fast = {k.name for k in registry.kernels() if not k.is_reference}
    picks = {"best": [], AUTO: [], **{peer: [] for peer in PEERS}}
    for layer_rows in by_layer.values():
        kernels = [r for r in layer_rows if r.kernel in fast]
        picks["best"].append(min(kernels, key=lambda r: r.ms, default=None))
        for name in (AUTO, *PEERS):
            picks[name].append(next((r for r in layer_rows if r.kernel == name), None))
    out = {"layers": len(by_layer), "occurrences": sum(rs[0].count for rs in by_layer.values())}
    for what, chosen in picks.items():
        if chosen and None not in chosen:
            out[what] = {"ms": sum(r.count * r.ms for r in chosen),
                         "vs_reference": _geomean([(r.vs_reference, r.count) for r in chosen]),
                         **{f"vs_{peer}": _geomean([(getattr(r, f"vs_{peer}"), r.count) for r in chosen])
                            if what != peer else None for peer in PEERS}}
    return out


def format_totals(tot: dict) -> str:
    shapes = f"{tot['layers']} layer shape" + ("s" if tot["layers"] != 1 else "")
    lines = [f"totals over {shapes} = {tot['occurrences']} layers of the net (each shape "
             f"weighted by its count); ratios are geometric means over those layers"]
    for what, name in (("best", "best kernel per layer"), (AUTO, "auto"), (TORCH, "torch"), (ORT, "onnxruntime")):
        if what in tot:
            t = tot[what]
            ratios = "".join(f"  {title} {t[key]:6.2f}x" for key, title in (("vs_reference", "vs ref"),
                                                                           ("vs_torch", "vs torch"),
                                                                           ("vs_onnxruntime", "vs ort"))
                             if t[key] is not None)
            lines.append(f"  {name:22s} {t['ms']:10.2f} ms{ratios}")
    return "\n".join(lines)


def plot(rows, peak: float | None, path: str, title: str) -> None:
    """A PNG of GFLOP/s per conv layer, grouped bars per contender, with the matmul peak as a line.
    matplotlib's Figure without pyplot renders on Agg: no display, no global backend switch."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    conv = [r for r in rows if r.gflops is not None]
    layers = list(dict.fromkeys(r.layer for r in conv))
    # one order (so one colour per contender) in every chart: the registry's kernels, auto, torch,
    # the reference last -- not the order of first appearance, which depends on the first layer
    order = [k.name for k in registry.kernels() if not k.is_reference] + [AUTO, TORCH]
    names = sorted(dict.fromkeys(r.kernel for r in conv), key=lambda n: order.index(n) if n in order else len(order))
    width = 0.8 / max(len(names), 1)
    colors = colormaps["tab20"]  # the default cycle has 10 colours; bench can have 11 contenders
    bars = len(layers) * len(names)  # ~0.12 in a bar, legend aside; GoogLeNet's ~600 stay under 30 in
    fig = Figure(figsize=(min(30.0, max(8.0, 2 + 0.12 * bars)), 4.8), layout="constrained")
    ax = fig.subplots()
    for i, name in enumerate(names):
        got = {r.layer: r.gflops for r in conv if r.kernel == name}
        at = [j for j, layer in enumerate(layers) if layer in got]
        ax.bar([j + (i - (len(names) - 1) / 2) * width for j in at], [got[layers[j]] for j in at], width,
               label=name, color=colors(i % 20))
    if peak:
        ax.axhline(peak, color="black", linestyle="--", linewidth=1, label=f"float32 matmul peak ({peak:.0f})")
    slanted = len(layers) > 6  # VGG-16's 13 names side by side would overlap
    ax.set_xticks(range(len(layers)), layers, rotation=45 if slanted else 0, ha="right" if slanted else "center")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("\n".join([title, *machine_line(peak).split("; ", 1)]), fontsize=8)  # hardware; software
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, not over them
    fig.savefig(path, dpi=120)


def run(net_layers, batch=1, dtype="float32", kernel_names=(), repeats=5, with_reference=True,
        measure_peak=True, progress=None, pass_="fwd", with_torch=False, compare=()):
    """(rows, peak).  progress: a stream (default stderr): a one-line bar on a terminal, a line per
    layer otherwise; False for silence.  compare: PEERS to time too, with fastconv's thread count
    (with_torch: torch among them); ONNX Runtime's pool threads do not spin (fastconv/peers.py)."""
    if pass_ not in PASSES:
        raise ValueError(f"bench: pass_={pass_!r} must be one of {', '.join(PASSES)}")
    unknown = set(compare) - set(PEERS)
    if unknown:
        raise ValueError(f"bench: compare={tuple(compare)!r}: {', '.join(sorted(unknown))} is not one of {', '.join(PEERS)}")
    compare = tuple(dict.fromkeys(((TORCH,) if with_torch else ()) + tuple(compare)))
    with_torch = TORCH in compare
    if progress is None:
        progress = sys.stderr
    # dispatch.tune's bar on a terminal; plain lines in a log, where "\r" would garble the file
    bar = Progress(progress, len(net_layers)) if progress and getattr(progress, "isatty", bool)() else None
    if with_torch:
        import torch
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(get_num_threads())
    try:
        t0 = time.perf_counter()
        peak = matmul_peak_gflops() if measure_peak else None
        rng = np.random.default_rng(0)
        rows = []
        for i, layer in enumerate(net_layers, 1):
            if bar:
                bar.step(f"{layer.name} ({time.perf_counter() - t0:.0f} s)")
            elif progress:
                print(f"[{i}/{len(net_layers)}] {layer.name} ...", file=progress, flush=True)
            rows += bench_layer(layer, batch, dtype, kernel_names, repeats, with_reference, rng, pass_,
                                compare=compare)
        if bar:
            bar.done()
    finally:
        if with_torch:
            torch.set_num_threads(torch_threads)
    return rows, peak


__all__ = ["run", "format_table", "format_totals", "totals", "plot", "machine_line", "matmul_peak_gflops",
           "problems", "PASSES", "PAUSE_S", "AUTO", "TORCH", "ORT", "PEERS"]
