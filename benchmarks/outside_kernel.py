"""Microseconds per layer call that fastconv.torch spends outside the kernel (the adapter, the
checks and the dispatch), on a layer whose kernel time is tiny (1x4x4x4 input, 1x1 conv, 4
channels), under torch.no_grad(): an optimized conv + BN + ReLU (FusedConv2d) and a patched
Conv2d, each one's call minus the chosen kernel's own call on the same arrays (best of 7 x 2000
calls, three rounds, the least of each).

    python benchmarks/outside_kernel.py

Run it with PYTHONPATH set to another checkout to compare two builds in alternating processes.
"""
import timeit

import torch

import fastconv
import fastconv.torch as fct
from fastconv import api, dispatch
from fastconv.spec import activation_arg


def best_us(fn, calls: int = 2000) -> float:
    fn()
    return min(timeit.repeat(fn, number=calls, repeat=7)) / calls * 1e6


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 4, 4, 4)
    conv, bn = torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4)
    fused = fct.FusedConv2d(conv.eval(), bn.eval(), "relu").eval()
    patched = fct.patch(torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1))).eval()
    with torch.no_grad():
        fused(x)
        patched(x)
        xn = x.numpy()
        w, b = fused._fold()
        pw, pb = patched[0].weight.numpy(), patched[0].bias.numpy()
        spec = api._conv_spec(xn, w, b, 1, 0, 1, 1, "conv2d")
        relu = activation_arg("outside_kernel", "relu")
        k_fused = dispatch.choose("conv2d.fwd", spec, caller="outside_kernel", act=relu)
        k_plain = dispatch.choose("conv2d.fwd", spec, caller="outside_kernel")
        rounds = []
        for _ in range(3):
            rounds.append((best_us(lambda: fused(x)) - best_us(lambda: k_fused.run(spec, xn, w, b, act=relu)),
                           best_us(lambda: patched(x)) - best_us(lambda: k_plain.run(spec, xn, pw, pb))))
    fused_us, patched_us = (min(r) for r in zip(*rounds))
    print(f"{fastconv.__file__}: outside the kernel, per layer call: optimized (FusedConv2d) {fused_us:.1f} us, "
          f"patched Conv2d {patched_us:.1f} us (no_grad; kernels {k_fused.name}, {k_plain.name})")


if __name__ == "__main__":
    main()
