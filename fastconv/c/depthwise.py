"""c.depthwise: wrapper over csrc/depthwise.c, all three passes."""
import numpy as np

from ..common import outputs
from ._lib import check, conv_shape, lib, n_threads, per_dtype, ptr, weight_ptr

if lib is not None:
    FORWARD = per_dtype(lib.fc_conv2d_fwd_depthwise_f32, lib.fc_conv2d_fwd_depthwise_f64)
    BACKWARD_DATA = per_dtype(lib.fc_conv2d_bwd_data_depthwise_f32, lib.fc_conv2d_bwd_data_depthwise_f64)
    BACKWARD_WEIGHT = per_dtype(lib.fc_conv2d_bwd_weight_depthwise_f32, lib.fc_conv2d_bwd_weight_depthwise_f64)


def conv2d_forward(spec, x, w, bias, out=None, *, act=None):
    y = outputs.empty(spec.output_shape, spec.dtype) if out is None else out
    status = FORWARD[spec.dtype](ptr(x), *weight_ptr(w), ptr(bias), ptr(y, out=True), conv_shape(spec, act),
                                 n_threads(spec))
    check(status, "c.depthwise")
    return y


def conv2d_backward_data(spec, grad_y, w):
    grad_x = outputs.empty(spec.input_shape, spec.dtype)
    status = BACKWARD_DATA[spec.dtype](ptr(grad_y), ptr(np.ascontiguousarray(w)), ptr(grad_x, out=True),
                                       conv_shape(spec), n_threads(spec))
    check(status, "c.depthwise")
    return grad_x


def conv2d_backward_weight(spec, grad_y, x):
    grad_w = outputs.empty(spec.weight_shape, spec.dtype)
    status = BACKWARD_WEIGHT[spec.dtype](ptr(grad_y), ptr(x), ptr(grad_w, out=True), conv_shape(spec),
                                         n_threads(spec))
    check(status, "c.depthwise")
    return grad_w
