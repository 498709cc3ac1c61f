"""MobileNet-v2's depthwise layers: c.depthwise, numba.depthwise, c.im2col and torch side by side,
forward or backward (grad of input + grad of weight), with GB/s beside GFLOP/s, since a depthwise
layer's limit is memory traffic (the bytes counted: x and y once each).

    python benchmarks/depthwise.py [--batch 1] [--pass fwd|bwd] [--repeats 5]

Needs torch.  Medians of interleaved rounds (fastconv.timing.interleaved: a pause and a warm-up
before each contender, the rounds in shuffled orders); ratios are torch's time over the kernel's.
"""
import argparse
import statistics

import numpy as np

import fastconv as fc
from fastconv import machine, nets, timing

KERNELS = ("c.depthwise", "numba.depthwise", "c.im2col")


def contenders(spec, rng, pass_):
    import torch
    import torch.nn.functional as F
    x = rng.standard_normal(spec.input_shape, dtype=np.float32)
    w = rng.standard_normal(spec.weight_shape, dtype=np.float32)
    b = rng.standard_normal(spec.c_out, dtype=np.float32)
    gy = rng.standard_normal(spec.output_shape, dtype=np.float32)
    kw = dict(stride=spec.stride, padding=(spec.padding[0], spec.padding[2]), dilation=spec.dilation,
              groups=spec.groups)
    out = {}
    for name in KERNELS:
        backend, algo = name.split(".")
        out[name] = (lambda a=algo, be=backend: fc.conv2d(x, w, b, **kw, algo=a, backend=be)) if pass_ == "fwd" else \
            (lambda a=algo, be=backend: fc.conv2d_backward(gy, x, w, **kw, algo=a, weight_algo=a, backend=be))
    tx, tw, tb, tgy = map(torch.from_numpy, (x, w, b, gy))
    if pass_ == "fwd":
        def run_torch():
            with torch.no_grad():
                return F.conv2d(tx, tw, tb, **kw)
    else:
        txr, twr = tx.clone().requires_grad_(), tw.clone().requires_grad_()

        def run_torch():
            return torch.autograd.grad(F.conv2d(txr, twr, None, **kw), (txr, twr), tgy)
    out["torch"] = run_torch
    return out, 4 * (x.size + gy.size)


def main(argv=None):
    import torch
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--pass", dest="pass_", choices=("fwd", "bwd"), default="fwd")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(fc.get_num_threads())
    rng = np.random.default_rng(0)
    print(f"{machine.describe()}, {fc.get_num_threads()} threads, batch {args.batch}, pass {args.pass_}, "
          f"torch {torch.__version__}; ms per call, torch/kernel, and c.depthwise's GB/s and GFLOP/s")
    totals = {}
    for layer in nets.get("mobilenetv2_dw"):
        spec = layer.spec(args.batch)
        calls, nbytes = contenders(spec, rng, args.pass_)
        t = {k: statistics.median(v) for k, v in timing.interleaved(calls, args.repeats).items()}
        flops = spec.flops * (2 if args.pass_ == "bwd" else 1)
        dw = t["c.depthwise"]
        print(f"{layer.name:13s} x{layer.count} " + " ".join(f"{k} {t[k] * 1e3:.3f}" for k in calls) +
              "  torch/" + " torch/".join(f"{k.split('.')[0]}.{k.split('.')[1][:2]} {t['torch'] / t[k]:.2f}"
                                          for k in KERNELS) +
              f"  {nbytes / dw / 1e9:.1f} GB/s {flops / dw / 1e9:.1f} GFLOP/s")
        for k in calls:
            totals[k] = totals.get(k, 0.0) + layer.count * t[k]
    print("total (x count) " + " ".join(f"{k} {v * 1e3:.2f} ms" for k, v in totals.items()) + "; torch/kernel " +
          " ".join(f"{k} {totals['torch'] / totals[k]:.2f}x" for k in KERNELS))


if __name__ == "__main__":
    main()
