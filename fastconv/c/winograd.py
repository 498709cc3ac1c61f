"""c.winograd_f2k3 and c.winograd_f4k3: wrappers over csrc/winograd.c.

The filter is transformed once per weight value: fastconv.common.winograd.transformed keeps the packed U
that transform_filter writes.  The backward of the input is a forward convolution on the flipped,
transposed filter (fastconv/common/transpose.py), a strided view that transform_filter reads in place.
The weight gradient needs no filter transform: it transforms the input and grad_y, sums their
products over the tiles and transforms the sum back (csrc/winograd.c).

``profile``, a float64 array of 4 when given, accumulates the thread-seconds of the phases
{transform_input, transform_filter, batched_gemm, transform_output} (transform_filter only when
the cache missed).
"""
import numpy as np

from ..common import config, outputs, transpose, winograd
from ..common.nonfinite import NonFinite, finite
from ._lib import FC_ENONFINITE, ISA, check, conv_shape, lib, n_threads, per_dtype, ptr, weight_ptr

if lib is not None:  # per output tile m
    TRANSFORM_FILTER = {
        2: per_dtype(lib.fc_conv2d_transform_filter_winograd_f2k3_f32, lib.fc_conv2d_transform_filter_winograd_f2k3_f64),
        4: per_dtype(lib.fc_conv2d_transform_filter_winograd_f4k3_f32, lib.fc_conv2d_transform_filter_winograd_f4k3_f64)}
    FORWARD = {2: per_dtype(lib.fc_conv2d_fwd_winograd_f2k3_f32, lib.fc_conv2d_fwd_winograd_f2k3_f64),
               4: per_dtype(lib.fc_conv2d_fwd_winograd_f4k3_f32, lib.fc_conv2d_fwd_winograd_f4k3_f64)}
    BACKWARD_WEIGHT = {
        2: per_dtype(lib.fc_conv2d_bwd_weight_winograd_f2k3_f32, lib.fc_conv2d_bwd_weight_winograd_f2k3_f64),
        4: per_dtype(lib.fc_conv2d_bwd_weight_winograd_f4k3_f32, lib.fc_conv2d_bwd_weight_winograd_f4k3_f64)}


def _transformed_filter(name, m, spec, w, profile, source=None):
    """U for w (or for the transposed view w of source): fastconv.common.winograd.transformed."""
    def transform(w5):
        mr, G, og, cg = lib.fc_winograd_mr(ISA), spec.groups, spec.c_out // spec.groups, spec.c_in // spec.groups
        u = winograd.buffer(G * (m + 2) ** 2 * -(-og // mr) * mr * cg, spec.dtype)
        status = TRANSFORM_FILTER[m][spec.dtype](
            *weight_ptr(w5), ptr(u, out=True), conv_shape(spec), n_threads(spec), ptr(profile, out=True))
        if status == FC_ENONFINITE:  # u holds inf or NaN (the C kernel checks as it writes)
            return u, False
        check(status, name)
        return u, True

    return winograd.transformed(name, spec, w, transform, source)


def _forward(m, spec, x, w, bias, out=None, profile=None, source=None, act=None):
    name = f"c.winograd_f{m}k3"
    u = _transformed_filter(name, m, spec, w, profile, source)
    y = outputs.empty(spec.output_shape, spec.dtype) if out is None else out
    status = FORWARD[m][spec.dtype](
        ptr(x), ptr(u), ptr(bias), ptr(y, out=True), conv_shape(spec, act), config.workspace_bytes(),
        n_threads(spec), ptr(profile, out=True))
    check(status, name)
    return y


def _backward_data(m, spec, grad_y, w):
    def forward(sub, gy, w_t, bias, out):
        return _forward(m, sub, gy, w_t, bias, out, source=w)

    return transpose.backward_data(forward, spec, grad_y, w)


def _backward_weight(m, spec, grad_y, x):
    grad_w = outputs.empty(spec.weight_shape, spec.dtype)
    status = BACKWARD_WEIGHT[m][spec.dtype](
        ptr(grad_y), ptr(x), ptr(grad_w, out=True), conv_shape(spec), config.workspace_bytes(), n_threads(spec))
    check(status, f"c.winograd_f{m}k3")
    if not finite(grad_w):  # inf or NaN in grad_y or x (fastconv/common/nonfinite.py): im2col serves it
        raise NonFinite(f"c.winograd_f{m}k3")
    return grad_w


def conv2d_forward_f2k3(spec, x, w, bias, out=None, profile=None, *, act=None):
    return _forward(2, spec, x, w, bias, out, profile, act=act)


def conv2d_forward_f4k3(spec, x, w, bias, out=None, profile=None, *, act=None):
    return _forward(4, spec, x, w, bias, out, profile, act=act)


def conv2d_backward_data_f2k3(spec, grad_y, w):
    return _backward_data(2, spec, grad_y, w)


def conv2d_backward_data_f4k3(spec, grad_y, w):
    return _backward_data(4, spec, grad_y, w)


def conv2d_backward_weight_f2k3(spec, grad_y, x):
    return _backward_weight(2, spec, grad_y, x)


def conv2d_backward_weight_f4k3(spec, grad_y, x):
    return _backward_weight(4, spec, grad_y, x)
