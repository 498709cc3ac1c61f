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


def test_small_nets_totals():
    # LeNet-5: 6*1*25+6 + 16*6*25+16 + 120*16*25+120; AlexNet: 64*3*121+64 + 192*64*25+192 +
    # 384*192*9+384 + 256*384*9+256 + 256*256*9+256 (weights + biases)
    for net, expected in (("lenet5", 156 + 2_416 + 48_120),
                          ("alexnet", 23_296 + 307_392 + 663_936 + 884_992 + 590_080)):
        assert sum(l.count * (math.prod(l.weight) + l.weight[0]) for l in _convs(net)) == expected


def test_depthwise_table_is_depthwise():
    layers = _convs("mobilenetv2_dw")
    assert sum(l.count for l in layers) == 17  # one per inverted-residual block
    assert all(l.groups == l.input_chw[0] == l.weight[0] and l.weight[1:] == (1, 3, 3) for l in layers)
    assert layers == [l for l in _convs("mobilenetv2") if l.groups > 1]


def test_mobilenet_v2_stack_counts_its_published_size():
    # 52 convs: the stem, 17 blocks of depthwise + 1x1 project (16 with a 1x1 expand, t > 1), the last 1x1
    layers = _convs("mobilenetv2")
    assert sum(l.count for l in layers) == 1 + 17 * 2 + 16 + 1
    rows, totals = nets.table("mobilenetv2")
    # the paper's 300M multiply-adds (Table 3, 224x224, width 1.0), its convs' (the classifier adds 1.28M)
    assert abs(sum(r.flops for r in rows if r.layer.kind == "conv") / 2 - 300e6) < 0.01 * 300e6
    # torchvision's 3,504,872 parameters: the convs' weights, a BatchNorm (weight and bias) after
    # every conv, and the 1280 -> 1000 classifier
    conv_weights = sum(l.count * math.prod(l.weight) for l in layers)
    batchnorm = 2 * sum(l.count * l.weight[0] for l in layers)
    assert conv_weights + batchnorm + 1280 * 1000 + 1000 == totals["params"] == 3_504_872


def test_vgg16_table_totals_and_receptive_fields():
    rows, totals = nets.table("vgg16")
    # Output values per image, hand-summed: 224^2*64*2 + 112^2*64 (pool1) + 112^2*128*2 + 56^2*128
    # + 56^2*256*3 + 28^2*256 + 28^2*512*3 + 14^2*512 + 14^2*512*3 + 7^2*512, plus the input
    # 224^2*3: 15.2M, not the "24M" of the classic walkthrough, whose rows add up to this too.
    # plus the fully connected layers' 4096 + 4096 + 1000 outputs
    assert totals["activations"] == 15_228_416 + 4096 + 4096 + 1000
    fc = 25088 * 4096 + 4096 * 4096 + 4096 * 1000
    assert totals["weights"] == 14_710_464 + fc and totals["flops"] == 2 * (15_346_630_656 + fc)
    # the classic walkthrough's 138M parameters, biases included: torchvision's vgg16, exactly
    assert totals["params"] == 14_710_464 + 4_224 + fc + 4096 + 4096 + 1000 == 138_357_544
    assert "138,357,544" in nets.format_table("vgg16")
    # the well-known receptive fields: conv5_3 sees 196x196 input pixels, pool5 212x212, jump 32
    by_name = {r.layer.name: r for r in rows}
    assert (by_name["conv5_1"].receptive_field, by_name["pool5"].receptive_field, by_name["pool5"].jump) == (196, 212, 32)
    assert {r.layer.name: r for r in nets.table("alexnet")[0]}["pool5"].receptive_field == 195
    assert all(r.receptive_field is None for r in nets.table("resnet18")[0])  # branches: no single chain
    assert "15.2M" in nets.format_table("vgg16")


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


def _lenet5(nn):
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2, 2), nn.Conv2d(16, 120, 5), nn.ReLU())


def _alexnet(nn):  # torchvision.models.AlexNet.features
    return nn.Sequential(nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
                         nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                         nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))


def _googlenet(nn, torch):  # torchvision.models.GoogLeNet, without aux heads
    def conv(c_in, c_out, k, **kw):
        return nn.Sequential(nn.Conv2d(c_in, c_out, k, bias=False, **kw), nn.BatchNorm2d(c_out), nn.ReLU())

    class Inception(nn.Module):
        def __init__(self, c, b1, b2r, b2, b3r, b3, b4):
            super().__init__()
            self.b1 = conv(c, b1, 1)
            self.b2 = nn.Sequential(conv(c, b2r, 1), conv(b2r, b2, 3, padding=1))
            self.b3 = nn.Sequential(conv(c, b3r, 1), conv(b3r, b3, 3, padding=1))  # torchvision's "5x5"
            self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv(c, b4, 1))

        def forward(self, x):
            return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)

    return nn.Sequential(
        conv(3, 64, 7, stride=2, padding=3), nn.MaxPool2d(3, 2, ceil_mode=True),
        conv(64, 64, 1), conv(64, 192, 3, padding=1), nn.MaxPool2d(3, 2, ceil_mode=True),
        Inception(192, 64, 96, 128, 16, 32, 32), Inception(256, 128, 128, 192, 32, 96, 64),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        Inception(480, 192, 96, 208, 16, 48, 64), Inception(512, 160, 112, 224, 24, 64, 64),
        Inception(512, 128, 128, 256, 24, 64, 64), Inception(512, 112, 144, 288, 32, 64, 64),
        Inception(528, 256, 160, 320, 32, 128, 128), nn.MaxPool2d(2, 2, ceil_mode=True),
        Inception(832, 256, 160, 320, 32, 128, 128), Inception(832, 384, 192, 384, 48, 128, 128))


def _mobilenet_v2(nn, torch):  # torchvision.models.MobileNetV2.features
    def conv_bn(c_in, c_out, k, stride=1, groups=1):
        return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(c_out), nn.ReLU6())

    class InvertedResidual(nn.Module):
        def __init__(self, c_in, c_out, stride, t):
            super().__init__()
            hidden = c_in * t
            self.use_res = stride == 1 and c_in == c_out
            self.body = nn.Sequential(*([conv_bn(c_in, hidden, 1)] if t != 1 else []),
                                      conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                      nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x):
            return x + self.body(x) if self.use_res else self.body(x)

    layers, c = [conv_bn(3, 32, 3, 2)], 32
    for t, c_out, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                           (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            layers.append(InvertedResidual(c, c_out, s if i == 0 else 1, t))
            c = c_out
    return nn.Sequential(*layers, conv_bn(c, 1280, 1))


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _traced(model, torch, image=(3, 224, 224), keep=lambda module: True) -> Counter:
    """Every Conv2d / MaxPool2d call of one forward pass, as the table's fields."""
    seen = Counter()

    def hook(module, inputs, output):
        chw = tuple(inputs[0].shape[1:])
        if not keep(module):
            return
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
        model.eval()(torch.zeros(1, *image))
    return seen


def _table(net) -> Counter:
    table = Counter()
    for l in nets.get(net):
        last = l.groups if l.kind == "conv" else l.ceil_mode
        key = (l.kind, l.input_chw, l.weight or l.kernel, l.stride, l.padding, l.dilation, last)
        table[key] += l.count
    return table


CONV_PARAMS = {"lenet5": 50_692, "alexnet": 2_469_696, "vgg16": 14_714_688, "resnet18": 11_166_912}


@pytest.mark.parametrize("net", ["lenet5", "alexnet", "vgg16", "googlenet", "resnet18", "mobilenetv2",
                                 "mobilenetv2_dw"])
def test_table_matches_torch_model(net):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = {"lenet5": lambda: _lenet5(nn), "alexnet": lambda: _alexnet(nn), "vgg16": lambda: _vgg16(nn),
             "googlenet": lambda: _googlenet(nn, torch), "resnet18": lambda: _resnet18(nn, torch),
             "mobilenetv2": lambda: _mobilenet_v2(nn, torch), "mobilenetv2_dw": lambda: _mobilenet_v2(nn, torch)}[net]()
    image = (1, 32, 32) if net == "lenet5" else (3, 224, 224)
    keep = (lambda m: isinstance(m, nn.Conv2d) and m.groups > 1) if net == "mobilenetv2_dw" else (lambda m: True)
    assert _table(net) == _traced(model, torch, image, keep)
    if net in CONV_PARAMS:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert sum(p.numel() for m in convs for p in m.parameters()) == CONV_PARAMS[net]


# torchvision's parameter counts (its model docs; fastconv.torch_models reproduces them): the
# tables count every conv's weights and bias or BatchNorm, and the fully connected layers
TORCHVISION_PARAMS = {"lenet5": 61_706, "alexnet": 61_100_840, "vgg16": 138_357_544, "googlenet": 6_624_904,
                      "resnet18": 11_689_512, "mobilenetv2": 3_504_872}


@pytest.mark.parametrize("net", sorted(TORCHVISION_PARAMS))
def test_tables_count_the_whole_nets_parameters(net):
    rows, totals = nets.table(net)
    assert totals["params"] == sum(r.params for r in rows) == TORCHVISION_PARAMS[net]
    assert [r.layer.kind for r in rows][-len(nets.HEADS[net]):] == ["fc"] * len(nets.HEADS[net])
    assert all(layer.kind != "fc" for layer in nets.get(net))  # bench and tune see convs and pools only
