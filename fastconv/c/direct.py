"""c.direct: wrapper over csrc/direct.c; the backward passes run it on transposed problems.

``profile``, a float64 array of 4 when given, accumulates the thread-seconds of the forward's
phases (fastconv.h's FC_PHASE_*: packing the input panels, packing the weights, the microkernel
with its stores, and nothing for the epilogue, which the stores do)."""
import numpy as np

from ..common import outputs, transpose
from ._lib import check, conv_shape, lib, n_threads, per_dtype, ptr, weight_ptr

if lib is not None:
    FORWARD = per_dtype(lib.fc_conv2d_fwd_direct_f32, lib.fc_conv2d_fwd_direct_f64)


def conv2d_forward(spec, x, w, bias, out=None, profile=None, *, act=None):
    y = outputs.empty(spec.output_shape, spec.dtype) if out is None else out
    status = FORWARD[spec.dtype](
        ptr(x), *weight_ptr(w), ptr(bias), ptr(y, out=True), conv_shape(spec, act), n_threads(spec),
        ptr(profile, out=True))
    check(status, "c.direct")
    return y


def conv2d_backward_data(spec, grad_y, w):
    return transpose.backward_data(conv2d_forward, spec, grad_y, w)


def conv2d_backward_weight(spec, grad_y, x):
    return transpose.backward_weight(conv2d_forward, spec, grad_y, x)
