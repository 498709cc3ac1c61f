"""Regenerate BENCHMARKS.md and its charts: `fastconv bench` on whole networks, as Markdown.

    pip install ".[plot,onnx]"       # and torch==2.13.0 for the "vs torch" columns (optional)
    python benchmarks/report.py      # batch 1 and 8: ~45 min on a 2-core machine; --nets vgg16 --batch 1

Every figure comes from bench.run (interleaved rounds, medians, a pause and an untimed call before
each timed one), so the tables mean what `fastconv bench` prints; this file only lays them out.
Per net and batch: a chart of GFLOP/s per layer and contender (benchmarks/charts/MACHINE/NET_bB.png)
and a table of what `algo="auto"` chose and how it compares with the fastest kernel, torch, ONNX
Runtime and the reference.  BENCHMARKS.md holds one section per kind of machine (CPU, family and
model, ISA path): a run replaces its own machine's section and keeps the others.  What a person
measured and wrote about a machine (several runs from an empty cache, forced ISA paths, profiles)
lives in benchmarks/notes/MACHINE.md and is put at the head of that machine's section, so a
regeneration keeps it.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import sys

from fastconv import __version__, bench, machine, nets, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_NETS = ("vgg16", "resnet18", "googlenet", "mobilenetv2")
TITLES = {"vgg16": "VGG-16", "resnet18": "ResNet-18", "googlenet": "GoogLeNet (Inception-v1)",
          "mobilenetv2": "MobileNet-v2 (its whole conv stack)", "mobilenetv2dw": "MobileNet-v2, depthwise layers",
          "alexnet": "AlexNet", "lenet5": "LeNet-5"}


def _x(v) -> str:
    return f"{v:.2f}x" if v is not None else "-"


def _is_reference(name: str) -> bool:
    return any(k.is_reference for k in registry.kernels() if k.name == name)


def net_section(name: str, rows, peak, chart: str, batch: int) -> list[str]:
    by_layer = {}
    for r in rows:
        by_layer.setdefault(r.layer, []).append(r)
    has_torch = any(r.kernel == bench.TORCH for r in rows)
    has_ort = any(r.kernel == bench.ORT for r in rows)
    head = ["layer", "shape", "×", "auto chose", "ms", "GFLOP/s", "% peak", "fastest kernel", "auto / fastest"]
    head += ["torch ms", "vs torch"] if has_torch else []
    head += ["ONNX Runtime ms", "vs ort"] if has_ort else []
    head += ["vs NumPy ref"]
    lines = [f"## {TITLES.get(name.lower().replace('-', '').replace('_', ''), name)}, batch {batch}", "",
             f"![GFLOP/s per layer and kernel]({chart})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    kernels = {r.kernel for r in rows} - {bench.AUTO, *bench.PEERS}
    for layer, rs in by_layer.items():
        auto = next(r for r in rs if r.kernel == bench.AUTO)
        fastest = min((r for r in rs if r.kernel in kernels and not _is_reference(r.kernel)), key=lambda r: r.ms)
        torch = next((r for r in rs if r.kernel == bench.TORCH), None)
        ort = next((r for r in rs if r.kernel == bench.ORT), None)
        chose = " + ".join(dict.fromkeys(auto.chosen.values()))  # the kernels auto ran, from the row itself
        cells = [layer, f"`{auto.shape}`", str(auto.count), f"`{chose}`", f"{auto.ms:.2f}",
                 f"{auto.gflops:.0f}" if auto.gflops else "", f"{100 * auto.gflops / peak:.0f}" if auto.gflops else "",
                 f"`{fastest.kernel}` {fastest.ms:.2f}", f"{auto.ms / fastest.ms:.2f}"]
        cells += [f"{torch.ms:.2f}" if torch else "-", _x(auto.vs_torch)] if has_torch else []
        cells += [f"{ort.ms:.2f}" if ort else "-", _x(auto.vs_onnxruntime)] if has_ort else []
        cells += [_x(auto.vs_reference)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "```", bench.format_totals(bench.totals(rows)), "```", ""]
    return lines


def machine_heading(date: str) -> str:
    """This machine's section heading: CPU, family and model, the ISA path the C kernels run."""
    return f"# {machine.cpu_label()} ({registry.BACKENDS['c'].isa()}), {date}"


def merge(old: str, section: str, heading: str) -> str:
    """The file with this machine's section (same heading up to the date) replaced by section,
    put first; the other machines' sections are kept as they were."""
    parts = ("\n" + old).split("\n# ")[1:]  # the sections, each from its heading; the title's first
    key = heading.rsplit(", ", 1)[0]
    kept = [p for p in parts if not p.startswith("Benchmarks\n") and not ("# " + p).startswith(key)]
    return "\n".join([HEADER, section] + ["# " + p.rstrip("\n") + "\n" for p in kept])


HEADER = ("# Benchmarks\n\nOne section per kind of machine measured, newest first; every figure names the CPU "
          "and the ISA path\nthat ran. Speed is quoted as ratios measured side by side in one run. "
          "`python benchmarks/report.py` rewrites\nthe section of the machine it runs on and keeps the others.\n")


def notes_of(slug: str) -> str:
    """The hand-written notes of a machine (benchmarks/notes/SLUG.md), or ""."""
    path = os.path.join(ROOT, "benchmarks", "notes", f"{slug}.md")
    return open(path).read().strip() + "\n" if os.path.exists(path) else ""


def slug_of(heading: str) -> str:
    """The machine's file name stem, from its section heading: amd-epyc-family-26-model-2-avx512."""
    return "-".join(heading[2:].rsplit(", ", 1)[0].replace(",", "").replace("(", "").replace(")", "").lower().split())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(DEFAULT_NETS))
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    layers = {n: nets.get(n) for n in names}  # an unknown name fails here, before any timing
    compare = tuple(p for p, mods in ((bench.TORCH, ("torch",)), (bench.ORT, ("onnx", "onnxruntime")))
                    if all(importlib.util.find_spec(m) for m in mods))
    date = datetime.date.today().isoformat()
    heading = machine_heading(date)
    slug = slug_of(heading)
    charts = os.path.join(os.path.dirname(args.out), "benchmarks", "charts", slug)
    os.makedirs(charts, exist_ok=True)

    peak = bench.matmul_peak_gflops()
    sections = []
    for batch in batches:
        for name in names:
            print(f"{name}, batch {batch}:", file=sys.stderr)
            rows, _ = bench.run(layers[name], batch, repeats=args.repeats, compare=compare, measure_peak=False)
            chart = os.path.join(charts, f"{name}_b{batch}.png")
            bench.plot(rows, peak, chart, f"fastconv bench --net {name} --batch {batch}")
            sections += net_section(name, rows, peak, os.path.relpath(chart, os.path.dirname(args.out)), batch)

    versions = {p: importlib.metadata.version(p) for p in ("torch", "onnxruntime") if importlib.util.find_spec(p)}
    notes = notes_of(slug)
    text = [heading, ""] + ([notes, ""] if notes else []) + [
        f"Regenerated by `python benchmarks/report.py --nets {','.join(names)} --batch {args.batch}` (see its "
        "docstring; `fastconv bench --net NAME` prints the same measurements with every kernel's row).", "",
        f"- Machine: {bench.machine_line(peak)}",
        f"- Versions: fastconv {__version__}, Python {platform.python_version()}"
        + "".join(f", {p} {v}" for p, v in versions.items()),
        "- Method: per layer every contender runs in the same interleaved rounds (a pause, then a few ms "
        "of untimed calls before each timed run of at least 5 ms, whose figure is the median of its calls), "
        f"median of {args.repeats} rounds; float32. GFLOP/s count "
        "the direct algorithm's multiply-adds, so Winograd can pass the matmul peak. `auto` is the public "
        "call (`algo=\"auto\"`), tuned on its first call; `auto / fastest` over 1 is the price of its "
        "choice (or noise). Ratios are per layer; totals weight each layer shape by how often it occurs."
        + (" ONNX Runtime: its CPU provider, one node per layer, its pool threads not spinning." if bench.ORT in compare
           else ""),
        "- The machine is shared: single figures move by 10-30% between runs; compare within a row.", "",
    ] + sections
    old = open(args.out).read() if os.path.exists(args.out) else ""
    with open(args.out, "w") as f:
        f.write(merge(old, "\n".join(text), heading))
    print(f"wrote {args.out} and {charts}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
