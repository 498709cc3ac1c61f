"""The layer tables against the real networks: by totals (always) and, where torch is installed, shape
by shape against models built with torch.nn and traced with forward hooks on a 224x224 image."""
import math
from collections import Counter

import pytest

from fastconv import nets


def _convs(net):
    return [layer for layer in nets.get(net) if layer.kind == "conv"]


def _macs(net) -> int:
    """Multiply-adds of the net's convs per image (the table's flops count 2 per multiply-add)."""
    return sum(layer.count * layer.spec(batch=1).flops // 2 for layer in _convs(net))


def test_vgg16_totals():
    weights = sum(layer.count * math.prod(layer.weight) for layer in _convs("vgg16"))
    biases = sum(layer.count * layer.weight[0] for layer in _convs("vgg16"))
    assert weights + biases == 14_714_688  # torch: sum(p.numel()) over VGG-16's convs
    # Every 3x3 conv costs H*W*Cout*Cin*9; in units of U = 224^2 * 64 * 64 * 9 = 1,849,688,064:
    # conv1_1 3/64, conv1_2 1, conv2_1 1/2, conv2_2 1, conv3_1 1/2, conv3_2-3 2, conv4_1 1/2,
    # conv4_2-3 2, conv5_1-3 3/4 (each halving of H and W is offset by a doubling of both channel
    # counts, and the first conv of a stage doubles only one), so U * 531/64 = 15,346,630,656.
    assert _macs("vgg16") == 1_849_688_064 * 531 // 64 == 15_346_630_656


def test_resnet18_totals():
    assert sum(layer.count * math.prod(layer.weight) for layer in _convs("resnet18")) == 11_166_912
    # In units of V = 56^2 * 64 * 64 * 9 = 115,605,504 (one stage-2 3x3 conv): conv1 112^2*64*3*49
    # = 49/48 V; stage 2 four convs = 4 V; stages 3-5 each a stride-2 3x3 (1/2 V), three 3x3 convs
    # (3 V) and a 1x1 stride-2 downsample (1/18 V) = 32/9 V.  Total V * (49/48 + 4 + 32/3) = V * 753/48.
    assert _macs("resnet18") == 115_605_504 * 753 // 48 == 1_813_561_344


def test_get_normalizes_and_refuses():
    assert nets.get("ResNet-18") is nets.get("resnet18")
    with pytest.raises(ValueError, match="unknown net 'lenet'"):
        nets.get("lenet")


# ----------------------------------------------------------------------------- against torch.nn

def _vgg16(nn):
    layers, c = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return nn.Sequential(*layers)


def _resnet18(nn, torch):
    class BasicBlock(nn.Module):  # torchvision.models.resnet.BasicBlock
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.downsample = None if stride == 1 and c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

    stages = [BasicBlock(64, 64, 1), BasicBlock(64, 64, 1)]
    for c in (128, 256, 512):
        stages += [BasicBlock(c // 2, c, 2), BasicBlock(c, c, 1)]
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1), *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, 1000))


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _traced(model, torch) -> Counter:
    """Every Conv2d / MaxPool2d call of one forward pass, as the table's fields."""
    seen = Counter()

    def hook(module, inputs, output):
        chw = tuple(inputs[0].shape[1:])
        if isinstance(module, torch.nn.Conv2d):
            seen[("conv", chw, tuple(module.weight.shape), module.stride, module.padding,
                  module.dilation, module.groups)] += 1
        else:
            seen[("pool", chw, _pair(module.kernel_size), _pair(module.stride), _pair(module.padding),
                  _pair(module.dilation), module.ceil_mode)] += 1

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 224, 224))
    return seen


def _table(net) -> Counter:
    table = Counter()
    for l in nets.get(net):
        last = l.groups if l.kind == "conv" else l.ceil_mode
        key = (l.kind, l.input_chw, l.weight or l.kernel, l.stride, l.padding, l.dilation, last)
        table[key] += l.count
    return table


@pytest.mark.parametrize("net", ["vgg16", "resnet18"])
def test_table_matches_torch_model(net):
    torch = pytest.importorskip("torch")
    model = _vgg16(torch.nn) if net == "vgg16" else _resnet18(torch.nn, torch)
    assert _table(net) == _traced(model, torch)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    params = sum(p.numel() for m in convs for p in m.parameters())
    assert params == {"vgg16": 14_714_688, "resnet18": 11_166_912}[net]
