"""Layer tables of real networks, as data: the shapes benchmarks and tuning run on.

Each layer is stored once per distinct shape with ``count``, how often that shape occurs in the
net.  Shapes are per image (C, H, W); a batch size is applied when specs are built.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from .spec import ConvSpec, PoolSpec


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str                    # "conv" | "pool"
    input_chw: tuple             # (C, H, W)
    weight: Optional[tuple] = None  # conv: (O, C/groups, kH, kW); pool: None
    kernel: Optional[tuple] = None  # pool window (kH, kW)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    ceil_mode: bool = False
    count: int = 1

    def spec(self, batch: int = 1, dtype: str = "float32"):
        shape = (batch, *self.input_chw)
        if self.kind == "conv":
            return ConvSpec.from_shapes(shape, self.weight, self.stride, self.padding, self.dilation,
                                        self.groups, dtype)
        return PoolSpec.from_shape(shape, self.kernel, self.stride, self.padding, self.dilation,
                                   self.ceil_mode, dtype)


def _conv(name, c, hw, o, k=3, stride=1, pad=1, count=1, groups=1):
    # Keywords, not positions: Layer's third optional field is the pool window, not the stride.
    return Layer(name, "conv", (c, hw, hw), (o, c // groups, k, k), stride=(stride, stride),
                 padding=(pad, pad), groups=groups, count=count)


def _pool(name, c, hw, k=2, stride=2, pad=0, count=1, ceil_mode=False):
    return Layer(name, "pool", (c, hw, hw), kernel=(k, k), stride=(stride, stride), padding=(pad, pad),
                 ceil_mode=ceil_mode, count=count)


# VGG-16, configuration D (Simonyan & Zisserman 2014): 13 3x3 convs, 5 2x2 max-pools.
VGG16 = (
    _conv("conv1_1", 3, 224, 64), _conv("conv1_2", 64, 224, 64), _pool("pool1", 64, 224),
    _conv("conv2_1", 64, 112, 128), _conv("conv2_2", 128, 112, 128), _pool("pool2", 128, 112),
    _conv("conv3_1", 128, 56, 256), _conv("conv3_2", 256, 56, 256, count=2), _pool("pool3", 256, 56),
    _conv("conv4_1", 256, 28, 512), _conv("conv4_2", 512, 28, 512, count=2), _pool("pool4", 512, 28),
    _conv("conv5_1", 512, 14, 512, count=3), _pool("pool5", 512, 14),
)

# ResNet-18 (He et al. 2015; torchvision's resnet18), 224x224 input: a 7x7/2 stem and a 3x3/2 max-pool,
# then four stages of two BasicBlocks (two 3x3 convs each, no conv biases).  Stages 3-5 open with a
# stride-2 3x3 conv and a 1x1 stride-2 "downsample" conv on the shortcut; "_x" layers are the
# stage's remaining 3x3 convs, which share one shape.
RESNET18 = (
    _conv("conv1", 3, 224, 64, k=7, stride=2, pad=3), _pool("pool1", 64, 112, k=3, stride=2, pad=1),
    _conv("conv2_x", 64, 56, 64, count=4),
    _conv("conv3_1", 64, 56, 128, stride=2), _conv("conv3_x", 128, 28, 128, count=3),
    _conv("conv3_ds", 64, 56, 128, k=1, stride=2, pad=0),
    _conv("conv4_1", 128, 28, 256, stride=2), _conv("conv4_x", 256, 14, 256, count=3),
    _conv("conv4_ds", 128, 28, 256, k=1, stride=2, pad=0),
    _conv("conv5_1", 256, 14, 512, stride=2), _conv("conv5_x", 512, 7, 512, count=3),
    _conv("conv5_ds", 256, 14, 512, k=1, stride=2, pad=0),
)

# LeNet-5 (LeCun et al. 1998) on a 1x32x32 image, with max-pools for its subsampling layers.
LENET5 = (
    _conv("conv1", 1, 32, 6, k=5, pad=0), _pool("pool1", 6, 28),
    _conv("conv2", 6, 14, 16, k=5, pad=0), _pool("pool2", 16, 10),
    _conv("conv3", 16, 5, 120, k=5, pad=0),
)

# AlexNet, torchvision's single-tower variant (Krizhevsky 2014, "One weird trick"), 224x224 input.
ALEXNET = (
    _conv("conv1", 3, 224, 64, k=11, stride=4, pad=2), _pool("pool1", 64, 55, k=3),
    _conv("conv2", 64, 27, 192, k=5, pad=2), _pool("pool2", 192, 27, k=3),
    _conv("conv3", 192, 13, 384), _conv("conv4", 384, 13, 256), _conv("conv5", 256, 13, 256),
    _pool("pool5", 256, 13, k=3),
)


def _inception(name, c, hw, b1, b2_reduce, b2, b3_reduce, b3, b4):
    """One Inception-v1 module as torchvision builds it: 1x1; 1x1 -> 3x3; 1x1 -> "5x5" (a 3x3 in
    torchvision, a known deviation from the paper kept for its pretrained weights); 3x3/1 max-pool
    (ceil_mode) -> 1x1.  No conv biases (BatchNorm follows)."""
    return (_conv(f"{name}_1x1", c, hw, b1, k=1, pad=0),
            _conv(f"{name}_3x3_reduce", c, hw, b2_reduce, k=1, pad=0), _conv(f"{name}_3x3", b2_reduce, hw, b2),
            _conv(f"{name}_5x5_reduce", c, hw, b3_reduce, k=1, pad=0), _conv(f"{name}_5x5", b3_reduce, hw, b3),
            _pool(f"{name}_pool", c, hw, k=3, stride=1, pad=1, ceil_mode=True),
            _conv(f"{name}_pool_proj", c, hw, b4, k=1, pad=0))


def _distinct(layers):
    """Each distinct shape once, named by its first occurrence, with the occurrences counted."""
    out = {}
    for l in layers:
        key = (l.kind, l.input_chw, l.weight, l.kernel, l.stride, l.padding, l.dilation, l.groups, l.ceil_mode)
        out[key] = replace(out[key], count=out[key].count + l.count) if key in out else l
    return tuple(out.values())


# GoogLeNet / Inception-v1 (Szegedy et al. 2014), torchvision's, 224x224 input.
GOOGLENET = _distinct((
    _conv("conv1", 3, 224, 64, k=7, stride=2, pad=3), _pool("pool1", 64, 112, k=3, ceil_mode=True),
    _conv("conv2", 64, 56, 64, k=1, pad=0), _conv("conv3", 64, 56, 192), _pool("pool2", 192, 56, k=3, ceil_mode=True),
    *_inception("3a", 192, 28, 64, 96, 128, 16, 32, 32), *_inception("3b", 256, 28, 128, 128, 192, 32, 96, 64),
    _pool("pool3", 480, 28, k=3, ceil_mode=True),
    *_inception("4a", 480, 14, 192, 96, 208, 16, 48, 64), *_inception("4b", 512, 14, 160, 112, 224, 24, 64, 64),
    *_inception("4c", 512, 14, 128, 128, 256, 24, 64, 64), *_inception("4d", 512, 14, 112, 144, 288, 32, 64, 64),
    *_inception("4e", 528, 14, 256, 160, 320, 32, 128, 128), _pool("pool4", 832, 14, k=2, ceil_mode=True),
    *_inception("5a", 832, 7, 256, 160, 320, 32, 128, 128), *_inception("5b", 832, 7, 384, 192, 384, 48, 128, 128),
))

# MobileNet-v2 (Sandler et al. 2018; torchvision's mobilenet_v2, width 1.0, 224x224 input), its
# whole conv stack: a 3x3/2 stem, 17 inverted-residual blocks of (t, c, n, s) below (a 1x1
# "expand" conv to t * C_in channels when t > 1, a 3x3 depthwise conv with groups = channels and
# the block's first stride, a 1x1 "project" conv to c channels), and a 1x1 conv to 1280.  No conv
# biases (BatchNorm follows each).
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1))


def _mobilenet_v2():
    layers, c, hw = [_conv("conv1", 3, 224, 32, stride=2)], 32, 112
    for t, c_out, n, s in MOBILENET_V2_BLOCKS:
        for i in range(n):
            stride, hidden = s if i == 0 else 1, c * t
            if t != 1:
                layers.append(_conv(f"pw{c}to{hidden}_{hw}", c, hw, hidden, k=1, pad=0))
            layers.append(_conv(f"dw{hidden}_{hw}" + ("_s2" if stride == 2 else ""), hidden, hw, hidden,
                                stride=stride, groups=hidden))
            hw = (hw - 1) // stride + 1  # a 3x3 with padding 1
            layers.append(_conv(f"pw{hidden}to{c_out}_{hw}", hidden, hw, c_out, k=1, pad=0))
            c = c_out
    return _distinct((*layers, _conv(f"pw{c}to1280_{hw}", c, hw, 1280, k=1, pad=0)))


MOBILENET_V2 = _mobilenet_v2()
# Its depthwise layers alone, the layer class a depthwise kernel is measured on.
MOBILENET_V2_DEPTHWISE = tuple(l for l in MOBILENET_V2 if l.groups > 1)

# The layers after the conv stack, for the layer table's parameter and activation counts (bench and
# tune time only the convs and pools above): fully connected layers (with biases) as torchvision
# defines them, and what follows every conv (a bias, or a BatchNorm's weight and bias).  With
# them the tables count torchvision's parameters exactly (GoogLeNet without its auxiliary heads).


def _fc(name, n_in, n_out):
    return Layer(name, "fc", (n_in,), (n_out, n_in))


HEADS = {
    "lenet5": (_fc("fc4", 120, 84), _fc("fc5", 84, 10)),
    "alexnet": (_fc("fc6", 256 * 6 * 6, 4096), _fc("fc7", 4096, 4096), _fc("fc8", 4096, 1000)),
    "vgg16": (_fc("fc6", 512 * 7 * 7, 4096), _fc("fc7", 4096, 4096), _fc("fc8", 4096, 1000)),
    "googlenet": (_fc("fc", 1024, 1000),), "resnet18": (_fc("fc", 512, 1000),),
    "mobilenetv2": (_fc("classifier", 1280, 1000),), "mobilenetv2dw": (),
}
AFTER_CONV = {"lenet5": "bias", "alexnet": "bias", "vgg16": "bias", "googlenet": "batchnorm",
              "resnet18": "batchnorm", "mobilenetv2": "batchnorm", "mobilenetv2dw": "batchnorm"}

NETS = {"lenet5": LENET5, "alexnet": ALEXNET, "vgg16": VGG16, "googlenet": GOOGLENET, "resnet18": RESNET18,
        "mobilenetv2": MOBILENET_V2, "mobilenetv2dw": MOBILENET_V2_DEPTHWISE}


def _key(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in NETS:
        raise ValueError(f"unknown net {name!r}; known: {', '.join(NETS)}")
    return key


def get(name: str) -> tuple[Layer, ...]:
    """The net's conv and pool layers (what bench and tune run)."""
    return NETS[_key(name)]


# ----------------------------------------------------------------------------- the layer table

@dataclass(frozen=True)
class Row:
    layer: Layer
    output_chw: tuple
    activations: int          # output values per image, all occurrences
    weights: int              # weight values (no biases), all occurrences
    params: int               # weights + biases + BatchNorm weights and biases, all occurrences
    flops: int                # per image, all occurrences (2 per multiply-add)
    receptive_field: Optional[int]  # input pixels one output sees along each axis (chain nets only)
    jump: Optional[int]             # input pixels between neighbouring outputs


def _is_chain(layers) -> bool:
    """Whether each layer reads the previous one's output, a repeated layer its own (VGG's
    conv3_2, conv3_3): receptive fields are defined only then."""
    out = [l.spec().output_shape[1:] for l in layers]
    return all(o == b.input_chw for o, b in zip(out, layers[1:])) and \
        all(l.count == 1 or o == l.input_chw for o, l in zip(out, layers))


def table(name: str) -> tuple[list[Row], dict]:
    """Per layer: output shape, activations, weights, FLOPs, receptive field and jump (the
    recurrence r += (k_eff - 1) * j, j *= stride, from r = j = 1 at the input); and the totals,
    summed from the rows.  Activations include the input image as the first line of the totals."""
    key = _key(name)
    layers = get(name)
    chain = _is_chain(layers)
    per_channel = 2 if AFTER_CONV[key] == "batchnorm" else 1
    rows, r, j = [], 1, 1
    for l in layers:
        spec = l.spec()
        out = spec.output_shape[1:]
        if l.kind == "conv":
            k, stride, dil, weights, flops = (l.weight[2], l.weight[3]), l.stride, l.dilation, math.prod(l.weight), spec.flops
            params = weights + per_channel * l.weight[0]
        else:
            k, stride, dil, weights, flops, params = l.kernel, l.stride, l.dilation, 0, 0, 0
        for _ in range(l.count if chain else 0):  # square kernels and strides: one axis tells
            r, j = r + dil[0] * (k[0] - 1) * j, j * stride[0]
        rows.append(Row(l, out, l.count * math.prod(out), l.count * weights, l.count * params, l.count * flops,
                        r if chain else None, j if chain else None))
    for l in HEADS[key]:  # fully connected: out x in weights and out biases
        weights = math.prod(l.weight)
        rows.append(Row(l, (l.weight[0],), l.count * l.weight[0], l.count * weights, l.count * (weights + l.weight[0]),
                        l.count * 2 * weights, None, None))
    image = math.prod(layers[0].input_chw)
    totals = {"input": image, "activations": image + sum(x.activations for x in rows),
              "weights": sum(x.weights for x in rows), "params": sum(x.params for x in rows),
              "flops": sum(x.flops for x in rows)}
    return rows, totals


def _si(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if v >= scale:
            return f"{v / scale:.1f}{unit}"
    return str(int(v))


def format_table(name: str, dtype: str = "float32") -> str:
    rows, totals = table(name)
    size = np.dtype(dtype).itemsize
    after = AFTER_CONV[_key(name)]
    head = (f"{'layer':18s} {'x':>2s} {'output (C,H,W)':>16s} {'activations':>11s} {'bytes':>8s} "
            f"{'weights':>8s} {'params':>8s} {'FLOPs':>8s} {'RF':>4s} {'jump':>4s}")
    lines = [f"{name}: per image, {dtype}; rows are distinct shapes, 'x' how often each occurs "
             f"(activations, weights, params and FLOPs count every occurrence; weights exclude biases, params "
             f"add them{' and the BatchNorm after every conv' if after == 'batchnorm' else ''}; RF and jump are"
             f" after the row's last occurrence; fc rows are the fully connected layers)", head, "-" * len(head)]
    for x in rows:
        rf = f"{x.receptive_field:4d} {x.jump:4d}" if x.receptive_field else f"{'-':>4s} {'-':>4s}"
        lines.append(f"{x.layer.name:18s} {x.layer.count:2d} {str(x.output_chw):>16s} {_si(x.activations):>11s} "
                     f"{_si(x.activations * size) + 'B':>8s} {_si(x.weights):>8s} {_si(x.params):>8s} "
                     f"{_si(x.flops):>8s} {rf}")
    lines.append("-" * len(head))
    lines.append(f"{'total':18s} {'':2s} {'(+ input ' + _si(totals['input']) + ')':>16s} {_si(totals['activations']):>11s} "
                 f"{_si(totals['activations'] * size) + 'B':>8s} {_si(totals['weights']):>8s} {_si(totals['params']):>8s} "
                 f"{_si(totals['flops']):>8s}")
    lines.append(f"parameters: {totals['params']:,} ({totals['weights']:,} weights + "
                 f"{totals['params'] - totals['weights']:,} biases{' and BatchNorm' if after == 'batchnorm' else ''}); "
                 f"activations {totals['activations']:,} values, {totals['activations'] * size / 1e6:.1f} MB per image")
    if not _is_chain(get(name)):
        lines.append("(receptive fields: this table is not a single chain of layers, so they are not shown)")
    return "\n".join(lines)
