"""c.im2col: wrapper over csrc/im2col.c.

``profile``, a float64 array of 4 when given, accumulates the thread-seconds of the forward's
phases (fastconv.h's FC_PHASE_*: the unfold, nothing for the weights, the OpenBLAS GEMM, and the
bias written into the output before the GEMM adds to it)."""
import numpy as np

from ..common import config, outputs
from ._lib import check, conv_shape, lib, n_threads, per_dtype, ptr

if lib is not None:
    FORWARD = per_dtype(lib.fc_conv2d_fwd_im2col_f32, lib.fc_conv2d_fwd_im2col_f64)
    BACKWARD_DATA = per_dtype(lib.fc_conv2d_bwd_data_im2col_f32, lib.fc_conv2d_bwd_data_im2col_f64)
    BACKWARD_WEIGHT = per_dtype(lib.fc_conv2d_bwd_weight_im2col_f32, lib.fc_conv2d_bwd_weight_im2col_f64)


def conv2d_forward(spec, x, w, bias, profile=None, *, act=None):
    y = outputs.empty(spec.output_shape, spec.dtype)
    status = FORWARD[spec.dtype](
        ptr(x), ptr(w), ptr(bias), ptr(y, out=True), conv_shape(spec, act), config.workspace_bytes(), n_threads(spec),
        ptr(profile, out=True))
    check(status, "c.im2col")
    return y


def conv2d_backward_data(spec, grad_y, w):
    grad_x = outputs.empty(spec.input_shape, spec.dtype)
    status = BACKWARD_DATA[spec.dtype](
        ptr(grad_y), ptr(w), ptr(grad_x, out=True), conv_shape(spec), config.workspace_bytes(), n_threads(spec))
    check(status, "c.im2col")
    return grad_x


def conv2d_backward_weight(spec, grad_y, x):
    grad_w = outputs.empty(spec.weight_shape, spec.dtype)
    status = BACKWARD_WEIGHT[spec.dtype](
        ptr(grad_y), ptr(x), ptr(grad_w, out=True), conv_shape(spec), config.workspace_bytes(), n_threads(spec))
    check(status, "c.im2col")
    return grad_w
