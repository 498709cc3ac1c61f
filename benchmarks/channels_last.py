"""A channels_last model through `fastconv.torch.patch` against the same model in NCHW, and native
torch in both layouts, interleaved in one run (medians of 5 rounds, ms), with each one's largest
difference from native NCHW's output relative to its largest value.

    python benchmarks/channels_last.py [resnet18|mobilenet_v2|...] [BATCH]

The model is one of fastconv.torch_models (eval mode, random weights, 224x224 inputs).
"""
import copy
import statistics
import sys

import torch

import fastconv
import fastconv.torch as fct
from fastconv import timing, torch_models


def main(name: str = "resnet18", batch: int = 1) -> None:
    torch.set_num_threads(2)
    fastconv.set_num_threads(2)
    torch.manual_seed(0)
    model = getattr(torch_models, name)().eval()
    x = torch.randn(batch, 3, 224, 224)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    patched, patched_cl = fct.patch(copy.deepcopy(model)), fct.patch(copy.deepcopy(model_cl))
    calls = {"native": lambda: model(x), "native_cl": lambda: model_cl(x_cl),
             "fastconv": lambda: patched(x), "fastconv_cl": lambda: patched_cl(x_cl)}
    with torch.no_grad():
        want = model(x)
        for label, call in calls.items():
            got = call()
            print(f"{label}: max |difference| / max |native| {float((got - want).abs().max() / want.abs().max()):.2e}")
        t = {k: statistics.median(v) for k, v in timing.interleaved(calls, 5).items()}
    print(f"{name} batch {batch}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in t.items()))
    print(f"native / fastconv {t['native'] / t['fastconv']:.2f}, native_cl / fastconv_cl "
          f"{t['native_cl'] / t['fastconv_cl']:.2f}, fastconv_cl / fastconv {t['fastconv_cl'] / t['fastconv']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "resnet18", int(sys.argv[2]) if len(sys.argv) > 2 else 1)
