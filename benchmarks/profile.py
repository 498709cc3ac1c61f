"""Where the C kernels' time goes, per network layer: the phase profiles of fastconv.c.phases.

    python benchmarks/profile.py --net vgg16 [--batch 1] [--kernels c.winograd_f4k3,c.im2col]
                                 [--markdown]

For every conv layer shape of the net (forward, float32) and every C kernel that can serve it, the
kernel's steady-state call is profiled: its wall time, each phase's share of the threads' time
(input: pack / unfold / transform; weight: pack / transform; gemm: the multiply-adds; output: the
epilogue; "other": what no phase holds -- waits at barriers, uneven tasks, the call's Python),
and the gemm phase's own rate against numpy's float32 matmul on this machine (its peak, measured
first).  Winograd's gemm rate counts its own multiply-adds (alpha^2 per tile), so "% peak" says how
close its batched GEMMs come to what a GEMM can do here.  Then the fastest C kernel per layer
by these timings, and the net's total over them (each shape weighted by its count).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from fastconv import machine, nets, registry, threads, timing
from fastconv.c import _lib, phases

OP = "conv2d.fwd"


def layer_rows(net: str, batch: int, names, seconds: float) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for layer in nets.get(net):
        if layer.kind != "conv":
            continue
        spec = layer.spec(batch, "float32")
        x, w, b = registry.OPS[OP].arguments(spec, rng)
        for name in names:
            kernel = registry.kernel(OP, name)
            if kernel.refusal(spec) is not None:
                continue
            out = phases.profile(name, spec, x, w, b, seconds=seconds)
            threads_s = out["wall_s"] * threads.get_num_threads()
            gemm_s = out["phases"]["gemm"] / threads.get_num_threads()  # the threads run it side by side
            rows.append(dict(layer=layer.name, count=layer.count, kernel=name, ms=out["wall_s"] * 1e3,
                             shares={p: t / threads_s for p, t in out["phases"].items()},
                             other=1 - sum(out["phases"].values()) / threads_s,
                             gemm_gflops=phases.gemm_flops(spec, kernel.output_tile) / gemm_s / 1e9 if gemm_s else None,
                             shape=f"{spec.n}x{spec.c_in}x{spec.h}x{spec.w} -> {spec.c_out} "
                                   f"k{spec.kh}x{spec.kw} s{spec.stride[0]}"))
        print(f"  {layer.name} done", file=sys.stderr)
    return rows


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def table(rows, peak: float, markdown: bool) -> str:
    head = ["layer", "shape", "x", "kernel", "ms", "input", "weight", "gemm", "output", "other",
            "gemm GFLOP/s", "% peak"]
    lines = []
    for r in rows:
        cells = [r["layer"], r["shape"], str(r["count"]), r["kernel"], f"{r['ms']:.2f}",
                 *(_pct(r["shares"][p]) for p in phases.PHASES), _pct(max(0.0, r["other"])),
                 f"{r['gemm_gflops']:.0f}" if r["gemm_gflops"] else "-",
                 f"{100 * r['gemm_gflops'] / peak:.0f}" if r["gemm_gflops"] else "-"]
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(c) + " |" for c in lines])
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 4 else '>'}{wd}}}" for i, wd in enumerate(widths))
    return "\n".join([fmt.format(*head), fmt.format(*("-" * wd for wd in widths))] +
                     [fmt.format(*c) for c in lines])


def fastest(rows) -> list[dict]:
    """Per layer, the row of the fastest kernel."""
    best = {}
    for r in rows:
        if r["layer"] not in best or r["ms"] < best[r["layer"]]["ms"]:
            best[r["layer"]] = r
    return list(best.values())


def totals(rows) -> str:
    """Each phase's share of the net's conv time (counts weighted), by the fastest C kernel per layer."""
    wall = sum(r["ms"] * r["count"] for r in rows)
    parts = {p: sum(r["shares"][p] * r["ms"] * r["count"] for r in rows) / wall for p in phases.PHASES}
    parts["other"] = sum(max(0.0, r["other"]) * r["ms"] * r["count"] for r in rows) / wall
    return ", ".join(f"{p} {_pct(v)}" for p, v in parts.items()) + f" of {wall:.1f} ms"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", default="vgg16", choices=sorted(nets.NETS))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--kernels", default=",".join(phases.FORWARD), help="comma-separated C kernels")
    p.add_argument("--seconds", type=float, default=0.3, help="profiled calls per kernel and layer last this long")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    names = [n for n in args.kernels.split(",") if n]
    unknown = [n for n in names if n not in phases.FORWARD]
    if unknown or not names:
        p.error(f"--kernels: {', '.join(unknown) or 'none given'}; profiled kernels: {', '.join(phases.FORWARD)}")
    if _lib.lib is None:
        p.error(f"the C extension is not available: {_lib.UNAVAILABLE}")
    peak = timing.matmul_peak_gflops()
    print(f"{machine.describe()}, C ISA {_lib.isa()}, {threads.get_num_threads()} threads; numpy float32 "
          f"matmul peak {peak:.0f} GFLOP/s; net {args.net}, batch {args.batch}, float32, forward; "
          f"phase shares are of the threads' time (wall x threads)")
    rows = layer_rows(args.net, args.batch, names, args.seconds)
    print(table(rows, peak, args.markdown))
    best = fastest(rows)
    print("\nfastest C kernel per layer:")
    print(table(best, peak, args.markdown))
    print(f"\nnet total (fastest C kernel per layer, counts weighted): {totals(best)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
