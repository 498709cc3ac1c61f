"""One training step (forward + backward + SGD update) of a model, native torch against the same
model patched onto fastconv (fastconv.torch.patch), at batch 16.

    pytest benchmarks/bench_torch_step.py --benchmark-group-by=param:layer

Models: the LeNet-5-style CNN of examples/train_lenet_digits.py (1x8x8 digits) and a VGG-style
block (two 3x3 convs of 64 channels on 56x56, then a 2x2 max-pool).  The parameter naming the
model is `layer` ("<model>:train_step"), as in bench_conv_layers.py, so that one
`--benchmark-group-by=param:layer` groups the whole suite.  Not collected without torch.

pytest-benchmark times the contenders one after the other; for a ratio, run the file itself:

    python benchmarks/bench_torch_step.py [--model lenet] [--repeats 15]

which interleaves them (fastconv.timing.interleaved: rounds in shuffled orders, a pause and a
warm-up before each contender) and prints the medians and torch's time over fastconv's.
"""
import statistics
import sys
import time

if __name__ == "__main__":  # run as a script: its folder's profile.py would shadow the stdlib's (torch imports it)
    sys.path.pop(0)

import pytest

torch = pytest.importorskip("torch") if __name__ != "__main__" else __import__("torch")
import fastconv.torch as fct  # noqa: E402

nn = torch.nn


def _lenet():
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)), (1, 8, 8)


def _vgg_block():
    return nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 28 * 28, 10)), (64, 56, 56)


MODELS = {"lenet": _lenet, "vgg_block": _vgg_block}


def training_step(model_name: str, backend: str, batch: int = 16):
    """A closure running one SGD step of the model on a fixed random batch."""
    torch.manual_seed(0)
    model, chw = MODELS[model_name]()
    if backend == "fastconv":
        fct.patch(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, *chw), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


@pytest.mark.parametrize("backend", ["torch", "fastconv"])
@pytest.mark.parametrize("layer", [f"{model}:train_step" for model in MODELS])
def test_training_step(benchmark, layer, backend):
    step = training_step(layer.split(":")[0], backend)
    step()  # compile, tune, warm the pools
    if not benchmark.disabled:
        time.sleep(0.1)  # let the previous contender's thread pool stop spinning
    benchmark.group = layer
    benchmark.pedantic(step, rounds=7, warmup_rounds=1)


def main(argv=None):
    import argparse

    from fastconv import machine, timing
    p = argparse.ArgumentParser(description="one training step, native torch against patched, interleaved")
    p.add_argument("--model", default="lenet", choices=sorted(MODELS))
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    steps = {backend: training_step(args.model, backend) for backend in ("torch", "fastconv")}
    for step in steps.values():
        step()  # compile, tune, warm the pools
    times = timing.interleaved(steps, args.repeats)
    med = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    print(f"{machine.describe()}; torch {torch.__version__}; {args.model} training step, batch 16, "
          f"median of {args.repeats} interleaved rounds")
    print(f"  torch {med['torch']:.3f} ms  fastconv {med['fastconv']:.3f} ms  "
          f"torch/fastconv {med['torch'] / med['fastconv']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
