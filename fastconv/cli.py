"""``fastconv`` command line: kernels, bench.

Bad arguments print one line ``fastconv: error: ...`` and exit with status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

import numba

from . import __version__, bench, nets, registry, threads
from .c import _lib


def _kernels(args) -> int:
    rows = []
    for k in registry.kernels():
        status = "ok" if not (k.backend == "c" and _lib.UNAVAILABLE) else _lib.UNAVAILABLE
        rows.append({"name": k.name, "op": k.op, "backend": k.backend, "algo": k.algo,
                     "rtol_float32": k.rtol["float32"], "rtol_float64": k.rtol["float64"], "status": status})
    info = {"version": __version__, "c_extension": _lib.build_info() if _lib.lib is not None else _lib.UNAVAILABLE,
            "openmp": _lib.has_openmp(), "threads": threads.get_num_threads(),
            "numba": numba.__version__, "numba_threading_layer": numba.config.THREADING_LAYER}
    if args.json:
        print(json.dumps({"build": info, "kernels": rows}, indent=2))
        return 0
    print(f"fastconv {__version__}; C extension: {info['c_extension']}; OpenMP: {'yes' if info['openmp'] else 'no'}; "
          f"threads: {info['threads']}; numba {info['numba']} (threading layer: {info['numba_threading_layer']})")
    print(f"{'kernel':18s} {'op':18s} {'rtol f32':>9s} {'rtol f64':>9s}  status")
    for r in rows:
        print(f"{r['name']:18s} {r['op']:18s} {r['rtol_float32']:9.0e} {r['rtol_float64']:9.0e}  {r['status']}")
    return 0


def _bench(args) -> int:
    layers = nets.get(args.net)
    if args.layers:
        wanted = [s.strip() for s in args.layers.split(",") if s.strip()]
        unknown = [w for w in wanted if w not in {l.name for l in layers}]
        if unknown:
            raise ValueError(f"--layers: {', '.join(unknown)} not in {args.net} "
                             f"(layers: {', '.join(l.name for l in layers)})")
        layers = tuple(l for l in layers if l.name in wanted)
    kernel_names = tuple(s.strip() for s in args.kernels.split(",")) if args.kernels else ()
    known = {k.name for k in registry.kernels()}
    if set(kernel_names) - known:
        raise ValueError(f"--kernels: {', '.join(sorted(set(kernel_names) - known))} not registered "
                         f"(see `fastconv kernels`)")
    if args.batch < 1 or args.repeats < 1:
        raise ValueError("--batch and --repeats must be positive")
    if args.pass_ not in bench.PASSES:  # checked here, not by argparse, for a one-line error
        raise ValueError(f"--pass={args.pass_!r} must be one of {', '.join(bench.PASSES)}")
    rows, peak = bench.run(layers, args.batch, args.dtype, kernel_names, args.repeats,
                           with_reference=not args.no_reference, pass_=args.pass_)
    print(bench.machine_line(peak))
    print(f"net {args.net}, batch {args.batch}, {args.dtype}, pass {args.pass_}; median of {args.repeats} "
          f"interleaved runs; 'vs ref' = NumPy reference time / kernel time")
    if args.pass_ == "bwd":
        print("bwd = grad input + grad weight + grad bias (pool: max_pool2d_backward); "
              "'bwd/fwd' = bwd time / the same kernel's forward time in the same rounds")
    print(bench.format_table(rows, peak))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": bench.machine_line(peak), "peak_gflops": peak, "pass": args.pass_,
                       "rows": [r.__dict__ for r in rows]}, f, indent=2)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastconv", description="Fast CPU conv2d and max-pool kernels.")
    parser.add_argument("--version", action="version", version=f"fastconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("kernels", help="the kernel table and the build")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_kernels)
    p = sub.add_parser("bench", help="time every kernel on a network's layers against the NumPy reference")
    p.add_argument("--net", default="vgg16", help="network layer table (default vgg16)")
    p.add_argument("--layers", help="comma-separated layer names (default: all)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--kernels", help="comma-separated kernel names (default: every eligible one)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed runs per kernel (median)")
    p.add_argument("--pass", dest="pass_", default="fwd", metavar="{fwd,bwd}",
                   help="fwd: the forward kernels; bwd: backward (input + weight + bias gradients) beside "
                        "the same kernel's forward (default fwd)")
    p.add_argument("--no-reference", action="store_true", help="do not time the NumPy reference")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.set_defaults(func=_bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:
        print(f"fastconv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
