"""Train a LeNet-5-style CNN on scikit-learn's handwritten digits with fastconv as the conv backend.

    pip install "fastconv[torch]" scikit-learn
    python examples/train_lenet_digits.py                 # fastconv (every Conv2d / MaxPool2d patched)
    python examples/train_lenet_digits.py --compare       # the same run on native torch beside it

The digits (1,797 8x8 images, bundled with scikit-learn: no download) are split 80/20 with a
fixed seed.  Prints per-epoch training loss and test accuracy, and the kernel fastconv chose for
each layer's forward, input-gradient and weight-gradient passes.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import fastconv
import fastconv.torch as fct
from fastconv import dispatch
from fastconv.spec import ConvSpec


def lenet(seed: int) -> nn.Sequential:
    """LeNet-5's shape for 8x8 inputs: two conv + max-pool stages (3x3, 'same' padding), three FC layers."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(16 * 2 * 2, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def data(seed: int):
    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(y))
    return (x[order[:split]], y[order[:split]]), (x[order[split:]], y[order[split:]])


def train(backend: str = "fastconv", epochs: int = 15, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
          log=print) -> list[dict]:
    """Train from seed; returns per-epoch {'epoch', 'loss', 'accuracy', 'seconds'}."""
    (x_train, y_train), (x_test, y_test) = data(seed)
    model = lenet(seed)
    if backend == "fastconv":
        fct.patch(model)
        log(str(model.fastconv_patch))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed + 1)
    history = []
    for epoch in range(1, epochs + 1):
        t0, total = time.perf_counter(), 0.0
        model.train()
        for batch in torch.randperm(len(y_train), generator=shuffle).split(batch_size):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        history.append(dict(epoch=epoch, loss=total / len(y_train), accuracy=accuracy,
                            seconds=time.perf_counter() - t0))
        log(f"[{backend}] epoch {epoch:2d}  loss {history[-1]['loss']:.4f}  test accuracy {accuracy:.3f}  "
            f"({history[-1]['seconds']:.2f} s)")
    return history


def chosen_kernels(batch_size: int = 32) -> list[str]:
    """The kernel fastconv picks for each conv layer's three passes at this batch size."""
    lines = []
    for name, (c, hw, o) in {"conv1": (1, 8, 6), "conv2": (6, 4, 16)}.items():
        spec = ConvSpec.from_shapes((batch_size, c, hw, hw), (o, c, 3, 3), padding=1)
        picks = [dispatch.choose(op, spec, caller="example").name
                 for op in ("conv2d.fwd", "conv2d.bwd_data", "conv2d.bwd_weight")]
        lines.append(f"{name} {spec.input_shape} -> {o}: forward {picks[0]}, grad input {picks[1]}, "
                     f"grad weight {picks[2]}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", action="store_true", help="also train on native torch from the same seed")
    args = parser.parse_args(argv)
    print(f"fastconv {fastconv.__version__}, torch {torch.__version__}, {fastconv.get_num_threads()} threads")
    runs = {"fastconv": train("fastconv", args.epochs, args.batch_size, args.lr, args.seed)}
    print("\n".join(chosen_kernels(args.batch_size)))
    if args.compare:
        runs["torch"] = train("torch", args.epochs, args.batch_size, args.lr, args.seed)
        print("epoch  loss fastconv / torch    accuracy fastconv / torch")
        for a, b in zip(runs["fastconv"], runs["torch"]):
            print(f"{a['epoch']:5d}  {a['loss']:.4f} / {b['loss']:.4f}        {a['accuracy']:.3f} / {b['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
