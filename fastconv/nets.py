"""Layer tables of real networks, as data: the shapes benchmarks and tuning run on.

Each layer is stored once per distinct shape with ``count``, how often that shape occurs in the
net.  Shapes are per image (C, H, W); a batch size is applied when specs are built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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

NETS = {"vgg16": VGG16, "resnet18": RESNET18}


def get(name: str) -> tuple[Layer, ...]:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in NETS:
        raise ValueError(f"unknown net {name!r}; known: {', '.join(NETS)}")
    return NETS[key]
