"""c.direct_flat: wrapper over csrc/direct_flat.c; the grad of input runs it on transposed problems
(fastconv/common/flat.py says why there is no weight gradient)."""
import numpy as np

from ..common import outputs, transpose
from ._lib import check, conv_shape, lib, n_threads, per_dtype, ptr, weight_ptr

if lib is not None:
    FORWARD = per_dtype(lib.fc_conv2d_fwd_direct_flat_f32, lib.fc_conv2d_fwd_direct_flat_f64)


def conv2d_forward(spec, x, w, bias, out=None, *, act=None):
    y = outputs.empty(spec.output_shape, spec.dtype) if out is None else out
    status = FORWARD[spec.dtype](ptr(x), *weight_ptr(w), ptr(bias), ptr(y, out=True), conv_shape(spec, act),
                                 n_threads(spec))
    check(status, "c.direct_flat")
    return y


def conv2d_backward_data(spec, grad_y, w):
    return transpose.backward_data(conv2d_forward, spec, grad_y, w)
