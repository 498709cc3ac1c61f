"""``fastconv`` command line: kernels, bench, nets, explain, tune, cache.

Bad arguments print one line ``fastconv: error: ...`` and exit with status 2, never a traceback;
every message names the option and its value.  Any other exception is a bug and keeps its
traceback (``main``).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time

import numpy as np

from . import __version__, bench, dispatch, machine, nets, registry, threads
from .dispatch import tuning_cache
from .spec import INDEX_LIMIT, PARAM_LIMIT, spec_from_json


class UsageError(Exception):
    """A bad command-line argument found by the CLI itself: one line, exit 2."""


def _names(text: str, option: str, what: str) -> list:
    """A comma-separated option: its names, blanks dropped; one at least ("," names nothing)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UsageError(f"{option}={text!r} names no {what}")
    return names


def _net(name: str, option: str) -> tuple:
    """The layers of a built-in network, or a UsageError naming the option."""
    try:
        return nets.get(name)
    except ValueError as exc:  # nets.get's one refusal: an unknown name (it lists the known ones)
        raise UsageError(f"{option}: {exc}") from None


def _count(text: str) -> int:
    """argparse type of --batch, --repeats, --groups: a positive int (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= INDEX_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (1..{INDEX_LIMIT})")
    return value


def _bitwise(row: dict) -> str:
    """The kernels table's reproducibility column: "any nt" (the same bits at any thread count),
    "same nt" (run to run at one thread count) or "no"."""
    return ("any nt" if row["thread_invariant"] else "same nt") if row["deterministic"] else "no"


def _kernels(args) -> int:
    rows = []
    for k in registry.kernels():
        unavailable = registry.BACKENDS[k.backend].unavailable if k.backend in registry.BACKENDS else None
        rows.append({"name": k.name, "op": k.op, "backend": k.backend, "algo": k.algo,
                     "rtol_float32": k.rtol["float32"], "rtol_float64": k.rtol["float64"],
                     "deterministic": k.deterministic, "thread_invariant": k.thread_invariant,
                     "nonfinite_to": k.nonfinite, "status": unavailable or "ok"})
    force = threads.in_force()
    info = {"version": __version__, "machine": machine.describe(), "isa": machine.isa_path(),
            "backends": {b.name: {"status": b.status(), "unavailable": b.unavailable, **b.fingerprint()}
                         for b in registry.BACKENDS.values()},
            "threads": force["fastconv"], "thread_pool": force["pool"],
            "openblas_threads_per_task": force["openblas_per_task"], "serial_only": force["serial_only"]}
    if args.json:
        print(json.dumps({"build": info, "kernels": rows}, indent=2))
        return 0
    print(f"fastconv {__version__} on {info['machine']}")
    for b in registry.BACKENDS.values():
        print(f"  {b.status()}")
    print(f"threads: {info['threads']} per call (pool {info['thread_pool']}; OpenBLAS "
          f"{info['openblas_threads_per_task']} inside each task)"
          + ("; serial: forked after the parent ran kernels" if info["serial_only"] else ""))
    print(f"{'kernel':20s} {'op':18s} {'rtol f32':>9s} {'rtol f64':>9s} {'bitwise':>8s}  {'inf/NaN to':14s} status")
    for r in rows:
        print(f"{r['name']:20s} {r['op']:18s} {r['rtol_float32']:9.0e} {r['rtol_float64']:9.0e} "
              f"{_bitwise(r):>8s}  {r['nonfinite_to'] or '-':14s} {r['status']}")
    return 0


def _require(module: str, why: str):
    """An optional dependency, imported only when asked for, or a one-line error saying how to
    install it (``import fastconv`` never imports torch or matplotlib)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(why) from None


def _bench_model(args) -> int:
    _require("torch", "--model needs torch: pip install torch")
    from .torch_models import MODELS
    if args.model not in MODELS:
        raise UsageError(f"--model: {args.model!r} is not one of {', '.join(MODELS)}")
    clash = [o for o, v in (("--layers", args.layers), ("--kernels", args.kernels), ("--plot", args.plot))
             if v is not None] + (["--pass"] if args.pass_ != "fwd" else []) + \
        (["--dtype"] if args.dtype != "float32" else [])
    if clash:
        raise UsageError(f"--model times a whole model (float32; --train for a training step): "
                         f"{', '.join(clash)} apply to --net only")
    compare = tuple(_names(args.compare, "--compare", "library")) if args.compare is not None else ()
    unknown = [c for c in compare if c not in bench.PEERS]
    if unknown:
        raise UsageError(f"--compare: {', '.join(unknown)} is not one of {', '.join(bench.PEERS)}")
    if bench.ORT in compare:
        if args.train:
            raise UsageError("--compare onnxruntime: ONNX Runtime runs inference only (drop --train)")
        _require("onnx", '--compare onnxruntime needs onnx and onnxruntime: pip install "fastconv[onnx]"')
        _require("onnxruntime", '--compare onnxruntime needs onnx and onnxruntime: pip install "fastconv[onnx]"')
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise UsageError(f"{args.json}: no such directory")
    from . import bench_models
    report = bench_models.run(args.model, args.batch, args.train, compare, args.repeats,
                              progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(bench_models.format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: v for k, v in report.items()}, f, indent=2)
    return 0


def _bench(args) -> int:
    if args.model is not None:
        return _bench_model(args)
    if args.train:
        raise UsageError("--train applies to --model (a whole model's training step)")
    layers = _net(args.net, "--net")
    if args.layers is not None:
        wanted = _names(args.layers, "--layers", "layer")
        unknown = [w for w in wanted if w not in {l.name for l in layers}]
        if unknown:
            raise UsageError(f"--layers: {', '.join(unknown)} not in {args.net} "
                             f"(layers: {', '.join(l.name for l in layers)})")
        layers = tuple(l for l in layers if l.name in wanted)
    kernel_names = tuple(_names(args.kernels, "--kernels", "kernel")) if args.kernels is not None else ()
    known = {k.name for k in registry.kernels()} | {bench.AUTO}
    if set(kernel_names) - known:
        raise UsageError(f"--kernels: {', '.join(sorted(set(kernel_names) - known))} not registered "
                         f"(see `fastconv kernels`; 'auto' is fastconv's own choice)")
    if args.pass_ not in bench.PASSES:  # checked here, not by argparse, for a one-line error
        raise UsageError(f"--pass={args.pass_!r} must be one of {', '.join(bench.PASSES)}")
    # Everything that can fail is checked before the timing starts, which may take minutes.
    compare = tuple(_names(args.compare, "--compare", "library")) if args.compare is not None else ()
    unknown = [c for c in compare if c not in bench.PEERS]
    if unknown:
        raise UsageError(f"--compare: {', '.join(unknown)} is not one of {', '.join(bench.PEERS)}")
    torch = _require("torch", "--compare torch needs torch: pip install torch") if bench.TORCH in compare else None
    ort = None
    if bench.ORT in compare:
        _require("onnx", '--compare onnxruntime needs onnx and onnxruntime: pip install "fastconv[onnx]"')
        ort = _require("onnxruntime", '--compare onnxruntime needs onnx and onnxruntime: pip install "fastconv[onnx]"')
    if args.plot:
        _require("matplotlib", '--plot needs matplotlib: pip install "fastconv[plot]"')
    for path in (args.json, args.plot):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UsageError(f"{path}: no such directory")
    rows, peak = bench.run(layers, args.batch, args.dtype, kernel_names, args.repeats,
                           with_reference=not args.no_reference, pass_=args.pass_, compare=compare)
    title = f"net {args.net}, batch {args.batch}, {args.dtype}, pass {args.pass_}"
    print(bench.machine_line(peak))
    print(f"{title}; median of {args.repeats} interleaved runs; 'vs ref' = NumPy reference time / kernel time"
          + (f"; 'vs torch' = torch {torch.__version__} time / kernel time" if torch else "")
          + (f"; 'vs ort' = ONNX Runtime {ort.__version__} time / kernel time (CPU provider, one node per "
             f"layer, forward only, its pool threads not spinning)" if ort else ""))
    if args.pass_ == "bwd":
        print("bwd = grad input + grad weight + grad bias (pool: max_pool2d_backward); "
              "'bwd/fwd' = bwd time / the same kernel's forward time in the same rounds")
    print(bench.format_table(rows, peak))
    totals = bench.totals(rows)
    print()
    print(bench.format_totals(totals))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": bench.machine_line(peak), "peak_gflops": peak, "net": args.net,
                       "batch": args.batch, "dtype": args.dtype, "pass": args.pass_,
                       "torch": torch.__version__ if torch else None,
                       "onnxruntime": ort.__version__ if ort else None,
                       "rows": [dict(r.__dict__, label=r.label) for r in rows], "totals": totals}, f, indent=2)
    if args.plot:
        bench.plot(rows, peak, args.plot, f"fastconv bench: {title}")
        print(f"chart: {args.plot}")
    return 0


def _nets(args) -> int:
    if args.name:
        _net(args.name, "nets NAME")
        rows, totals = nets.table(args.name)
        if args.json:
            print(json.dumps({"net": args.name, "dtype": args.dtype, "rows": [dataclasses.asdict(r) for r in rows],
                              "totals": totals}, indent=2))
        else:
            print(nets.format_table(args.name, args.dtype))
        return 0
    summary = []
    for name, layers in nets.NETS.items():
        _, totals = nets.table(name)
        summary.append(dict(net=name, shapes=len(layers), layers=sum(l.count for l in layers), **totals))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    size = np.dtype(args.dtype).itemsize
    print(f"per image, {args.dtype}; 'layers' counts every occurrence of a row's shape; activations include the "
          f"input; weights exclude biases, params add them and BatchNorms; the fully connected layers count; FLOPs "
          f"count 2 per multiply-add (the table: fastconv nets NAME)")
    head = (f"{'net':12s} {'shapes':>6s} {'layers':>6s} {'activations':>13s} {'MB':>7s} {'weights':>12s} "
            f"{'params':>12s} {'FLOPs':>16s}")
    print(head)
    print("-" * len(head))
    for s in summary:
        print(f"{s['net']:12s} {s['shapes']:6d} {s['layers']:6d} {s['activations']:13,d} "
              f"{s['activations'] * size / 1e6:7.1f} {s['weights']:12,d} {s['params']:12,d} {s['flops']:16,d}")
    return 0


def _ints(text: str, name: str, count=None, low: int = 0, high: int = INDEX_LIMIT) -> tuple:
    """'1,64,56,56' -> (1, 64, 56, 56); count: the number of values required (a tuple: allowed).
    Each value in [low, high] (the spec's own bounds), so that an error names the option: past
    here, the spec would name its field ("x shape") instead."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{name}={text!r} must be comma-separated integers") from None
    allowed = (count,) if isinstance(count, int) else count
    if allowed and len(values) not in allowed:
        raise UsageError(f"{name}={text!r} must have {' or '.join(map(str, allowed))} values, got {len(values)}")
    bad = [v for v in values if not low <= v <= high]
    if bad:
        raise UsageError(f"{name}={text!r}: {bad[0]} is out of range ({low}..{high})")
    return values


def _hw(text: str, name: str, low: int):
    values = _ints(text, name, (1, 2), low, PARAM_LIMIT)
    return values[0] if len(values) == 1 else values


def _activation(value):
    """--activation: relu | relu6 | leaky_relu | leaky_relu:SLOPE, as conv2d's activation argument."""
    if value is None or not value.startswith("leaky_relu:"):
        return value
    slope = value.split(":", 1)[1]
    try:
        return ("leaky_relu", float(slope))
    except ValueError:
        raise ValueError(f"explain: --activation {value}: the slope {slope!r} is not a number") from None


def _explain(args) -> int:
    padding = args.padding if args.padding in ("same", "valid") else _hw(args.padding, "--padding", 0)
    # N may be 0 (an empty batch); every other size, stride and dilation at least 1
    plan = dispatch.explain(_ints(args.input, "--input", 4, 0), _ints(args.weight, "--weight", 4, 1),
                            _hw(args.stride, "--stride", 1), padding, _hw(args.dilation, "--dilation", 1), args.groups,
                            args.dtype, op=args.op, algo=args.algo, backend=args.backend, rtol=args.rtol,
                            rigor=args.rigor, activation=_activation(args.activation))
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2, default=str))
    else:
        print(plan)
        if args.repro:
            print("\n# reproduce:\n" + plan.repro())
    return 0


def _tune(args) -> int:
    if args.pass_ not in ("fwd", "bwd", "all"):
        raise UsageError(f"--pass={args.pass_!r} must be one of fwd, bwd, all")
    passes = ("fwd", "bwd") if args.pass_ == "all" else (args.pass_,)
    names = _names(args.net, "--net", "network")
    for name in names:
        _net(name, "--net")
    t0 = time.perf_counter()
    plans = dispatch.tune(net=names, batch=args.batch, dtype=args.dtype, passes=passes, rigor=args.rigor,
                          force=args.force, budget_s=args.budget, progress=None if not args.json else False)
    elapsed = time.perf_counter() - t0
    ratios = [p.heuristic_ratio for p in plans if p.heuristic_ratio is not None]
    agree = sum(r <= 1.10 for r in ratios)
    summary = {"net": args.net, "batch": args.batch, "dtype": args.dtype, "passes": list(passes),
               "seconds": elapsed, "problems": len(plans), "cache_file": plans[0].cache_file if plans else None,
               "heuristic_within_10pct": agree, "heuristic_checked": len(ratios)}
    checks = dispatch.verify(plans, progress=None if not args.json else False) if args.verify else None
    if checks is not None:
        held = [c for c in checks if c["ratio"] is not None]
        summary.update(verified=len(held), choice_within_10pct=sum(c["ratio"] <= 1.10 for c in held),
                       choice_within_10pct_by_min=sum(c["ratio_min"] <= 1.10 for c in held))
    if args.json:
        rows = [dict(p.to_dict(), verify=c) for p, c in zip(plans, checks or [None] * len(plans))]
        print(json.dumps({"summary": summary, "plans": rows}, indent=2, default=str))
        return 0
    head = (f"{'layer':14s} {'op':17s} {'shape':48s} {'chosen':18s} {'ms':>9s} {'GFLOP/s':>8s} "
            f"{'heuristic':18s} {'h/best':>6s}" + (f" {'re-timed':>8s}" if checks else "") + "  source")
    print(head)
    print("-" * len(head))
    for i, p in enumerate(plans):
        c = p.candidate(p.chosen)
        ms = f"{c.median_s * 1e3:9.3f}" if c and c.median_s is not None else f"{'-':>9s}"
        gf = f"{c.gflops:8.1f}" if c and c.gflops is not None else f"{'':8s}"
        ratio = f"{p.heuristic_ratio:5.2f}x" if p.heuristic_ratio is not None else f"{'':6s}"
        label = p.label if len(p.label) <= 14 else p.label[:13] + "~"
        again = ""
        if checks:
            r = checks[i]["ratio"]
            again = f" {r:7.2f}x" if r is not None else f" {'':8s}"
        print(f"{label:14s} {p.op:17s} {p.describe()[:48]:48s} {p.chosen:18s} {ms} {gf} "
              f"{p.heuristic:18s} {ratio}{again}  {p.source}")
    print(f"{len(plans)} problems in {elapsed:.1f} s; the heuristic's pick is within 10% of the measured best "
          f"on {agree}/{len(ratios)}; cache: {summary['cache_file']}")
    if checks:
        n = max(1, summary["verified"])
        print(f"re-timed afterwards (new inputs): the cached choice is within 10% of the fastest on "
              f"{summary['choice_within_10pct']}/{summary['verified']} "
              f"({100 * summary['choice_within_10pct'] / n:.0f}%) by medians ('re-timed' = choice / fastest), "
              f"{summary['choice_within_10pct_by_min']}/{summary['verified']} "
              f"({100 * summary['choice_within_10pct_by_min'] / n:.0f}%) by best times")
    return 0


def _cache(args) -> int:
    cache = tuning_cache.current(threads.get_num_threads())
    if args.action == "path":
        print(cache.path)
        return 0
    if args.action == "clear":
        removed = tuning_cache.clear()
        dispatch.forget()
        print(f"removed {len(removed)} tuning file(s) from {cache.directory}")
        return 0
    if args.action in ("export", "import") and not args.file:
        raise UsageError(f"cache {args.action} needs a FILE")
    if args.action == "export":
        directory = os.path.dirname(os.path.abspath(args.file))
        if not os.path.isdir(directory):
            raise UsageError(f"cache export: cannot write {args.file}: directory {directory} does not exist")
        if not os.access(directory, os.W_OK):
            raise UsageError(f"cache export: cannot write {args.file}: directory {directory} is not writable")
        n = cache.export(args.file)  # a failure past these checks is an OSError naming args.file
        print(f"exported {n} entries to {args.file}")
        return 0
    if args.action == "import":
        n = cache.import_(args.file, force=args.force)
        dispatch.forget()
        print(f"imported {n} entries into {cache.path}")
        return 0
    cache.reload()
    rows = []
    # the entries were validated on load (tuning_cache._entry_problem): every field read here is there
    for key, e in sorted(cache.entries.items()):
        t = e["times"].get(e.get("best"), {})
        rows.append({"key": key, "op": e["op"], "shape": _describe_entry(key, e), "best": e.get("best"),
                     "median_ms": t["median"] * 1e3 if t else None, "rigor": e["rigor"], "kernels": len(e["times"])})
    others = [f for f in tuning_cache.files(cache.directory) if f != cache.path]
    if args.json:
        print(json.dumps({"path": cache.path, "env_key": cache.key, "environment": cache.env,
                          "writable": cache.writable, "entries": rows, "other_environments": others}, indent=2))
        return 0
    print(f"tuning cache {cache.path} ({len(rows)} entries; mode {dispatch.get_tuning()['mode']})")
    print("environment: " + ", ".join(f"{k}={v}" for k, v in cache.env.items()))
    if rows:
        head = f"{'op':17s} {'shape':60s} {'best':18s} {'ms':>9s} {'rigor':8s} {'timed':>5s}"
        print(head)
        print("-" * len(head))
        for r in rows:
            ms = f"{r['median_ms']:9.3f}" if r["median_ms"] is not None else f"{'-':>9s}"
            print(f"{r['op']:17s} {r['shape'][:60]:60s} {str(r['best']):18s} {ms} {str(r['rigor']):8s} "
                  f"{r['kernels']:5d}")
    if others:
        print(f"{len(others)} file(s) of other environments (machines, builds, thread counts) in {cache.directory}")
    return 0


def _describe_entry(key: str, entry: dict) -> str:
    """An entry's problem in one line; the key's text for a spec of the right fields and types whose
    values make no sense (a hand-edited groups=0): the spec's properties divide by them."""
    try:
        return dispatch.describe(entry["op"], spec_from_json(entry["spec"]))
    except (ArithmeticError, LookupError, TypeError, ValueError):
        return key.split(" ", 1)[-1]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``fastconv: error: ...``, exit status 2."""

    def error(self, message):
        self.exit(2, f"fastconv: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastconv", description="Fast CPU conv2d and max-pool kernels.")
    parser.add_argument("--version", action="version", version=f"fastconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("kernels", help="the kernel table and the build")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_kernels)
    p = sub.add_parser("bench", help="time every kernel on a network's layers against the NumPy reference")
    p.add_argument("--net", default="vgg16", help="network layer table (default vgg16)")
    p.add_argument("--model", help="time a whole torch model end to end instead (needs torch): "
                   "resnet18, resnet50, mobilenet_v2, vgg16, vgg16_bn, googlenet")
    p.add_argument("--train", action="store_true", help="--model: one training step instead of inference")
    p.add_argument("--layers", help="comma-separated layer names (default: all)")
    p.add_argument("--batch", type=_count, default=1)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--kernels", help="comma-separated kernel names, 'auto' among them for fastconv's own "
                                     "choice (default: every eligible kernel and auto)")
    p.add_argument("--repeats", type=_count, default=5, help="interleaved timed runs per kernel (median)")
    p.add_argument("--pass", dest="pass_", default="fwd", metavar="{fwd,bwd}",
                   help="fwd: the forward kernels; bwd: backward (input + weight + bias gradients) beside "
                        "the same kernel's forward (default fwd)")
    p.add_argument("--no-reference", action="store_true", help="do not time the NumPy reference")
    p.add_argument("--compare", metavar="torch,onnxruntime",
                   help="also time these libraries in the same rounds: torch's CPU conv2d / max_pool2d ('vs "
                        "torch'), ONNX Runtime's CPU provider ('vs ort', forward only)")
    p.add_argument("--json", metavar="PATH", help="also write the rows and totals as JSON")
    p.add_argument("--plot", metavar="PATH",
                   help="also write a PNG chart of GFLOP/s per conv layer and kernel (needs matplotlib)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("nets", help="the built-in networks, or one network's layer table")
    p.add_argument("name", nargs="?", help=f"a network ({', '.join(nets.NETS)}); none: list them")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="for activation bytes")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_nets)

    p = sub.add_parser("explain", help="which kernel algo='auto' picks for a conv2d shape, and why")
    p.add_argument("--input", required=True, metavar="N,C,H,W", help="input shape")
    p.add_argument("--weight", required=True, metavar="O,C,kH,kW", help="weight shape (C = in_channels/groups)")
    p.add_argument("--stride", default="1", metavar="S|SH,SW")
    p.add_argument("--padding", default="0", metavar="P|PH,PW|same|valid")
    p.add_argument("--dilation", default="1", metavar="D|DH,DW")
    p.add_argument("--groups", type=_count, default=1)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--op", choices=list(dispatch.CONV_OPS), default="conv2d.fwd",
                   help="the pass: forward, grad of input, grad of weight (default conv2d.fwd)")
    p.add_argument("--algo", default="auto", help="restrict to an algorithm family or variant")
    p.add_argument("--backend", default="auto", help=f"restrict to a backend: {', '.join(registry.BACKENDS)}")
    p.add_argument("--rtol", type=float, help="accuracy budget: kernels whose bound exceeds it are excluded")
    p.add_argument("--rigor", choices=list(dispatch.MODES),
                   help="override the mode for this question (default: FASTCONV_TUNING, else measure)")
    p.add_argument("--activation", metavar="relu|relu6|leaky_relu[:SLOPE]",
                   help="the forward's activation (conv2d's activation=): the kernels are timed with it")
    p.add_argument("--repro", action="store_true", help="also print a runnable snippet of the chosen call")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_explain)

    p = sub.add_parser("tune", help="time every eligible kernel on a network's layers and cache the winners")
    p.add_argument("--net", required=True,
                   help=f"network layer table(s), comma-separated ({', '.join(nets.NETS)})")
    p.add_argument("--batch", type=_count, default=1)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--pass", dest="pass_", default="fwd", metavar="{fwd,bwd,all}",
                   help="fwd: forward ops; bwd: grad of input and of weight, tuned separately; all: both")
    p.add_argument("--rigor", choices=["measure", "patient"], default="measure")
    p.add_argument("--budget", type=float, metavar="S", help="seconds per problem at most (default 10)")
    p.add_argument("--force", action="store_true", help="re-measure problems the cache already holds")
    p.add_argument("--verify", action="store_true",
                   help="afterwards, re-time every problem on new inputs and compare the stored choice "
                        "with the fastest")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_tune)

    p = sub.add_parser("cache", help="the tuning cache: show, clear, path, export FILE, import FILE")
    p.add_argument("action", choices=["show", "clear", "path", "export", "import"])
    p.add_argument("file", nargs="?", help="export/import: the file to write or read")
    p.add_argument("--force", action="store_true", help="import a file tuned on another machine or build")
    p.add_argument("--json", action="store_true", help="show: machine-readable output")
    p.set_defaults(func=_cache)
    return parser


# fastconv's argument checks start their messages with the checking function ("tune: batch=0 ...",
# "conv2d: groups=3 ...", "explain: ..."); the commands reach these.
_CHECKERS = ("conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "explain", "tune", "bench",
             "kernels", "set_tuning", "set_num_threads")


def _bad_argument(exc: BaseException) -> bool:
    """Whether exc reports a bad argument (exit 2) rather than a bug (a traceback): the CLI's own
    checks, a tuning FILE that cannot be used, or fastconv's argument validation."""
    if isinstance(exc, (UsageError, tuning_cache.CacheFileError)):
        return True
    return isinstance(exc, (ValueError, TypeError)) and str(exc).split(": ", 1)[0] in _CHECKERS


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a one-line argparse error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, so a reader that left is seen below, not at interpreter exit
        return status
    except BrokenPipeError:  # `fastconv kernels | head`: the reader took what it wanted and left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush: quiet
        return 0
    except (UsageError, ValueError, TypeError) as exc:
        if not _bad_argument(exc):
            raise
        print(f"fastconv: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a FILE that cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        print(f"fastconv: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
