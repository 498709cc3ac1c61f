"""c.depthwise: wrapper over csrc/depthwise.c.  The grad of input runs its forward on the
transposed problems of fastconv/common/transpose.py (one small group per channel again)."""
import numpy as np

from ..common import transpose
from ._lib import check, conv_shape, lib, n_threads, per_dtype, ptr, weight_ptr

if lib is not None:
    FORWARD = per_dtype(lib.fc_conv2d_fwd_depthwise_f32, lib.fc_conv2d_fwd_depthwise_f64)
    BACKWARD_WEIGHT = per_dtype(lib.fc_conv2d_bwd_weight_depthwise_f32, lib.fc_conv2d_bwd_weight_depthwise_f64)


def conv2d_forward(spec, x, w, bias, out=None):
    y = np.empty(spec.output_shape, spec.dtype) if out is None else out
    status = FORWARD[spec.dtype](ptr(x), *weight_ptr(w), ptr(bias), ptr(y, out=True), conv_shape(spec),
                                 n_threads(spec))
    check(status, "c.depthwise")
    return y


def conv2d_backward_data(spec, grad_y, w):
    return transpose.backward_data(conv2d_forward, spec, grad_y, w)


def conv2d_backward_weight(spec, grad_y, x):
    grad_w = np.empty(spec.weight_shape, spec.dtype)
    status = BACKWARD_WEIGHT[spec.dtype](ptr(grad_y), ptr(x), ptr(grad_w, out=True), conv_shape(spec),
                                         n_threads(spec))
    check(status, "c.depthwise")
    return grad_w
