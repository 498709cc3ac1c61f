"""What the fused activations of an optimized model cost: `fastconv.torch.optimize(model)` run with
its FusedConv2d activations and with them switched off (wrong results, right timing), interleaved
in one process (fastconv.timing.interleaved, 11 rounds), min and median in ms.

    python benchmarks/activations.py [mobilenet_v2|resnet18|...] [BATCH]

The model is one of fastconv.torch_models (eval mode, random weights, 224x224 inputs).
"""
import copy
import statistics
import sys

import torch

import fastconv
import fastconv.torch as fct
from fastconv import timing, torch_models


def main(name: str = "mobilenet_v2", batch: int = 1) -> None:
    torch.set_num_threads(2)
    fastconv.set_num_threads(2)
    torch.manual_seed(0)
    model = getattr(torch_models, name)().eval()
    x = torch.randn(batch, 3, 224, 224)
    fast = fct.optimize(copy.deepcopy(model))
    fused = [m for m in fast.modules() if isinstance(m, fct.FusedConv2d)]
    acts = [m.activation for m in fused]

    def run(with_activations: bool):
        for m, a in zip(fused, acts):
            m.activation = a if with_activations else None
        return fast(x)

    with torch.no_grad():
        run(True), run(False)
        times = timing.interleaved({"with": lambda: run(True), "without": lambda: run(False)}, 11)
    run(True)
    print(f"{name} batch {batch}, {sum(a is not None for a in acts)} fused activations: " + ", ".join(
        f"{k} min {min(v) * 1e3:.2f} median {statistics.median(v) * 1e3:.2f} ms" for k, v in times.items()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v2", int(sys.argv[2]) if len(sys.argv) > 2 else 1)
