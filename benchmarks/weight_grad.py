"""The weight-gradient kernels alone (conv2d.bwd_weight) on the 3x3 stride-1 layers of ResNet-18 and
VGG-16, side by side with torch's weight gradient alone (aten.convolution_backward asked for the
weight only), forward problem's FLOPs over the time as GFLOP/s.

    python benchmarks/weight_grad.py [--net resnet18,vgg16] [--batch 1] [--repeats 5] [--kernels K,...]

Needs torch.  Medians of interleaved rounds (fastconv.timing.interleaved: a pause and a warm-up
before each contender, the rounds in shuffled orders); ratios are torch's time over the kernel's.
"""
import argparse
import statistics

import numpy as np

import fastconv as fc
from fastconv import machine, nets, registry, timing

KERNELS = ("c.im2col", "c.winograd_f2k3", "c.winograd_f4k3", "numba.im2col", "numba.winograd_f2k3",
           "numba.winograd_f4k3")


def contenders(spec, kernels, rng):
    import torch
    x = rng.standard_normal(spec.input_shape, dtype=np.float32)
    gy = rng.standard_normal(spec.output_shape, dtype=np.float32)
    out = {name: (lambda k=registry.kernel("conv2d.bwd_weight", name): k.run(spec, gy, x)) for name in kernels}
    tx, tgy = torch.from_numpy(x), torch.from_numpy(gy)
    tw = torch.empty(spec.weight_shape)
    args = (list(spec.stride), [spec.padding[0], spec.padding[2]], list(spec.dilation), False, [0, 0], spec.groups,
            [False, True, False])
    out["torch"] = lambda: torch.ops.aten.convolution_backward(tgy, tx, tw, None, *args)[1]
    return out


def main(argv=None):
    import torch
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="resnet18,vgg16")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--kernels", default=",".join(KERNELS))
    args = p.parse_args(argv)
    kernels = [k for k in args.kernels.split(",") if k]
    for name in kernels:
        if registry.kernel("conv2d.bwd_weight", name) is None:
            p.error(f"--kernels: {name} is not a registered weight-gradient kernel")
    torch.set_num_threads(fc.get_num_threads())
    rng = np.random.default_rng(0)
    print(f"{machine.describe()}, {fc.get_num_threads()} threads, batch {args.batch}, float32, torch "
          f"{torch.__version__}; ms per call (GFLOP/s), torch/kernel")
    for net in args.net.split(","):
        seen = set()
        for layer in nets.get(net):
            spec = layer.spec(args.batch)
            if layer.kind != "conv" or spec.weight_shape[2:] != (3, 3) or spec.stride != (1, 1) or \
                    (spec.input_shape, spec.weight_shape) in seen:
                continue
            seen.add((spec.input_shape, spec.weight_shape))
            calls = contenders(spec, kernels, rng)
            t = {k: statistics.median(v) for k, v in timing.interleaved(calls, args.repeats).items()}
            print(f"{net} {layer.name:9s} " + "  ".join(
                f"{k} {t[k] * 1e3:.2f} ({spec.flops / t[k] / 1e9:.0f})" + (f" {t['torch'] / t[k]:.2f}x" if k != "torch" else "")
                for k in calls))


if __name__ == "__main__":
    main()
