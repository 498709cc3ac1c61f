"""Argument checking and output sizes: every bad input gets a clear error naming the argument."""
import numpy as np
import pytest

import fastconv as fc
from fastconv.spec import ConvSpec, PoolBackwardSpec, PoolSpec, conv_out_size, pool_out_size

X = np.zeros((1, 4, 8, 8), np.float32)
W = np.zeros((6, 4, 3, 3), np.float32)


# (input, kernel, stride, padding total, dilation) -> output; the classic layers.
@pytest.mark.parametrize("i,k,s,p,d,o", [
    (227, 11, 4, 0, 1, 55),   # AlexNet conv1 (original paper's 227 input)
    (224, 11, 4, 4, 1, 55),   # torchvision AlexNet conv1, padding 2
    (224, 3, 1, 2, 1, 224),   # VGG 3x3 'same'
    (224, 7, 2, 6, 1, 112),   # ResNet stem
    (32, 5, 1, 0, 1, 28),     # LeNet-5 C1
    (7, 3, 2, 0, 1, 3),
    (5, 3, 1, 0, 2, 1),       # dilation 2: effective kernel 5
    (6, 3, 2, 2, 1, 3),
])
def test_conv_output_size_formula(i, k, s, p, d, o):
    assert conv_out_size(i, k, s, p, d) == o


@pytest.mark.parametrize("i,k,s,p,d,ceil,o", [
    (112, 3, 2, 1, 1, False, 56),   # ResNet max-pool
    (55, 3, 2, 0, 1, False, 27),    # AlexNet
    (224, 2, 2, 0, 1, False, 112),  # VGG
    (5, 2, 2, 0, 1, False, 2),
    (5, 2, 2, 0, 1, True, 3),       # ceil keeps the partial last window
    (5, 2, 2, 1, 1, True, 3),       # ...but drops one that would start in the padding
    (6, 3, 2, 1, 2, False, 2),
])
def test_pool_output_size_formula(i, k, s, p, d, ceil, o):
    assert pool_out_size(i, k, s, p, d, ceil) == o


def test_same_padding_puts_the_extra_on_bottom_right():
    spec = ConvSpec.from_shapes((1, 1, 8, 8), (1, 1, 4, 2), padding="same", dilation=(1, 3))
    assert spec.padding == (1, 2, 1, 2)
    assert spec.output_shape == (1, 1, 8, 8)


def test_spec_is_hashable_and_frozen():
    a = ConvSpec.from_shapes((1, 4, 8, 8), (6, 4, 3, 3), padding=1)
    b = ConvSpec.from_shapes((1, 4, 8, 8), (6, 4, 3, 3), padding=(1, 1))
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.groups = 2


@pytest.mark.parametrize("call,exc,words", [
    (lambda: fc.conv2d(X[0], W), ValueError, ["x", "4-D"]),
    (lambda: fc.conv2d(X, W[0]), ValueError, ["weight", "4-D"]),
    (lambda: fc.conv2d(X, np.zeros((6, 3, 3, 3), np.float32)), ValueError, ["in_channels=4"]),
    (lambda: fc.conv2d(X, np.zeros((6, 2, 3, 3), np.float32), groups=3), ValueError, ["groups=3", "in_channels=4"]),
    (lambda: fc.conv2d(X, np.zeros((5, 2, 3, 3), np.float32), groups=2), ValueError, ["groups=2", "out_channels=5"]),
    (lambda: fc.conv2d(X, W, groups=0), ValueError, ["groups=0"]),
    (lambda: fc.conv2d(X, W, groups=1.0), TypeError, ["groups"]),
    (lambda: fc.conv2d(X, W, stride=0), ValueError, ["stride=0"]),
    (lambda: fc.conv2d(X, W, stride=(1, -1)), ValueError, ["stride=(1, -1)"]),
    (lambda: fc.conv2d(X, W, stride=(1, 2, 3)), ValueError, ["stride"]),
    (lambda: fc.conv2d(X, W, stride=1.5), TypeError, ["stride=1.5"]),
    (lambda: fc.conv2d(X, W, dilation=0), ValueError, ["dilation=0"]),
    (lambda: fc.conv2d(X, W, padding=-1), ValueError, ["padding=-1"]),
    (lambda: fc.conv2d(X, W, padding="full"), ValueError, ["padding='full'"]),
    (lambda: fc.conv2d(X, W, stride=2, padding="same"), ValueError, ["same", "stride"]),
    (lambda: fc.conv2d(X, np.zeros((6, 4, 9, 9), np.float32)), ValueError, ["output size", "9x9"]),
    (lambda: fc.conv2d(X, W, dilation=4), ValueError, ["output size", "dilation"]),
    (lambda: fc.conv2d(X.astype(np.int32), W), TypeError, ["x", "int32"]),
    (lambda: fc.conv2d(X.astype(np.complex64), W), TypeError, ["x", "complex64"]),
    (lambda: fc.conv2d(X.astype(object), W), TypeError, ["x", "object"]),
    (lambda: fc.conv2d(X.astype(np.float16), W), TypeError, ["x", "float16"]),
    (lambda: fc.conv2d(X.astype(np.float64), W), TypeError, ["mixed", "float64", "float32"]),
    (lambda: fc.conv2d(X.tolist(), W), TypeError, ["x", "list"]),
    (lambda: fc.conv2d(X, W, np.zeros(5, np.float32)), ValueError, ["bias", "(6,)"]),
    (lambda: fc.conv2d(X, W, np.zeros(6, np.float64)), TypeError, ["bias=float64"]),
    (lambda: fc.conv2d(np.zeros((1, 4, 0, 8), np.float32), W), ValueError, ["empty"]),
    (lambda: fc.conv2d(X, W, algo="fft"), ValueError, ["algo='fft'"]),
    (lambda: fc.conv2d(X, W, backend="cuda"), ValueError, ["backend='cuda'"]),
    (lambda: fc.max_pool2d(X, 0), ValueError, ["kernel_size=0"]),
    (lambda: fc.max_pool2d(X, 3, padding=2), ValueError, ["padding=2", "half"]),
    (lambda: fc.max_pool2d(X, 2, stride=0), ValueError, ["stride=0"]),
    (lambda: fc.max_pool2d(X, 9), ValueError, ["output size"]),
    (lambda: fc.max_pool2d(X[0], 2), ValueError, ["x", "4-D"]),
    (lambda: fc.max_pool2d(X.astype(np.int64), 2), TypeError, ["x", "int64"]),
    (lambda: fc.max_pool2d_backward(np.zeros((1, 4, 4, 4), np.float32), np.zeros((1, 4, 4, 4), np.int32), X.shape),
     TypeError, ["indices", "int32"]),
    (lambda: fc.max_pool2d_backward(np.zeros((1, 4, 4, 4), np.float32), np.zeros((1, 4, 4, 3), np.int64), X.shape),
     ValueError, ["indices", "shape"]),
    (lambda: fc.max_pool2d_backward(np.zeros((1, 4, 4, 4), np.float32), np.zeros((1, 4, 4, 4), np.int64), (1, 3, 8, 8)),
     ValueError, ["input_shape"]),
    (lambda: fc.conv2d_backward(np.zeros((1, 6, 5, 5), np.float32), X, W), ValueError, ["grad_y", "(1, 6, 6, 6)"]),
])
def test_bad_input_is_refused_with_a_message_naming_it(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert message.split(":")[0] in {"conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward"}


def test_pool_stride_defaults_to_kernel_size():
    assert PoolSpec.from_shape((1, 1, 8, 8), (2, 3)).stride == (2, 3)


def test_a_pool_names_its_backward_problem():
    x = np.zeros((2, 3, 9, 8), np.float32)
    spec = PoolSpec.from_args(x, 3, 2, 1, ceil_mode=True)
    grad_y = np.zeros((2, 3, spec.out_h, spec.out_w), np.float32)
    assert spec.backward_spec() == PoolBackwardSpec.from_args(grad_y, grad_y.astype(np.int64), x.shape)
