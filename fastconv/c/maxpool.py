"""c.maxpool: wrapper over csrc/maxpool.c."""
import numpy as np

from ..common import outputs
from ..spec import index_error
from ._lib import check, lib, n_threads, per_dtype, pool_shape, ptr

if lib is not None:
    FORWARD = per_dtype(lib.fc_maxpool2d_fwd_direct_f32, lib.fc_maxpool2d_fwd_direct_f64)
    BACKWARD = per_dtype(lib.fc_maxpool2d_bwd_direct_f32, lib.fc_maxpool2d_bwd_direct_f64)


def max_pool2d_forward(spec, x):
    y = outputs.empty(spec.output_shape, spec.dtype)
    idx = outputs.empty(spec.output_shape, np.int64) if spec.indices else None  # None: values only
    status = FORWARD[spec.dtype](
        ptr(x), ptr(y, out=True), ptr(idx, out=True), pool_shape(spec), n_threads(spec))
    check(status, "c.maxpool")
    return y, idx


def max_pool2d_backward(spec, grad_y, indices):
    grad_x = outputs.empty(spec.input_shape, spec.dtype)
    status = BACKWARD[spec.dtype](
        ptr(grad_y), ptr(indices), ptr(grad_x, out=True), pool_shape(spec), n_threads(spec))
    check(status, "c.maxpool", index_error("max_pool2d_backward", spec))
    return grad_x
