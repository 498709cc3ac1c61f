"""Issue 15's layer classes in a `fastconv bench --json` file: per class, the summed times (each
layer shape weighted by its count) of auto, of the fastest kernel per layer, of torch and of ONNX
Runtime, their ratios, and the conv layers slowest against torch.

    fastconv bench --net resnet18 --compare torch,onnxruntime --no-reference --json r18.json
    python benchmarks/layer_classes.py r18.json [more.json ...]

Ratios are a peer's summed time over auto's (> 1: fastconv is faster), so a class's ratio weighs
its layers by their time, unlike the bench's totals (geometric means per layer).
"""
import argparse
import collections
import json

from fastconv import nets

PEERS = ("torch", "onnxruntime")


def layer_class(layer) -> str:
    """first (1-4 input channels per group), depthwise, 1x1, k x k stride 2, k x k stride 1 on
    planes of at most 14x14 (small) or larger; pools apart."""
    if layer.kind != "conv":
        return "pool"
    c_in, hw = layer.input_chw[0], layer.input_chw[1]
    if layer.groups == c_in > 1:
        return "depthwise"
    if layer.weight[1] <= 4:
        return "first layer"
    if layer.weight[2:] == (1, 1):
        return "1x1"
    if layer.stride != (1, 1):
        return "k x k, stride 2"
    return "k x k, 14x14 or less" if hw <= 14 else "k x k, larger planes"


def summarize(path: str) -> str:
    with open(path) as f:
        run = json.load(f)
    layers = {layer.name: layer for layer in nets.get(run["net"])}
    rows = collections.defaultdict(dict)
    for r in run["rows"]:
        rows[r["layer"]][r["kernel"]] = r
    totals = collections.defaultdict(lambda: collections.defaultdict(float))
    against_torch = []
    for name, by_kernel in rows.items():
        layer = layers[name]
        cls = layer_class(layer)
        kernels = [r["ms"] for k, r in by_kernel.items() if "." in k]  # registered kernels only
        for key in ("auto", *PEERS):
            if key in by_kernel:
                totals[cls][key] += by_kernel[key]["ms"] * layer.count
        if kernels:
            totals[cls]["best"] += min(kernels) * layer.count
        if cls != "pool" and "auto" in by_kernel and "torch" in by_kernel:
            against_torch.append((by_kernel["torch"]["ms"] / by_kernel["auto"]["ms"], name, by_kernel["auto"]["label"]))
    conv = collections.defaultdict(float)
    for cls, t in totals.items():
        if cls != "pool":
            for key, ms in t.items():
                conv[key] += ms
    machine = run["machine"].split(", python")[0]  # the CPU and the ISA path that ran
    lines = [f"{run['net']}, batch {run['batch']}, pass {run['pass']} ({machine}); "
             "ms summed over the layers (x count); ratios: the peer's time / auto's"]

    def line(cls, t):
        ratios = "".join(f"  {peer}/auto {t[peer] / t['auto']:.2f}" for peer in PEERS if t.get(peer))
        peers = "".join(f" {peer} {t[peer]:8.2f}" for peer in PEERS if t.get(peer))
        return f"  {cls:22s} auto {t['auto']:8.2f}  best {t['best']:8.2f}{peers}{ratios}"
    for cls in sorted(totals):
        lines.append(line(cls, totals[cls]))
    lines.append(line("conv layers", conv))
    against_torch.sort()
    if against_torch:
        lines.append(f"  conv layers under 0.9x torch's speed: {sum(v < 0.9 for v, _, _ in against_torch)} of "
                     f"{len(against_torch)}; slowest: " +
                     ", ".join(f"{name} {v:.2f} ({label})" for v, name, label in against_torch[:5]))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", nargs="+", help="files written by fastconv bench --json")
    for path in p.parse_args(argv).json:
        print(summarize(path))


if __name__ == "__main__":
    main()
