"""c.winograd_f2k3 and c.winograd_f4k3: wrappers over csrc/winograd.c.

The filter is transformed once per weight value: fastconv.winograd.FILTERS keeps the packed U that
transform_filter writes.  The backward of the input is a forward convolution on the flipped,
transposed filter (fastconv/transpose.py), a strided view that transform_filter reads in place.

``profile``, a float64 array of 4 when given, accumulates the thread-seconds of the phases
{transform_input, transform_filter, batched_gemm, transform_output} (transform_filter only when
the cache missed).
"""
import numpy as np

from .. import config, transpose
from ..winograd import FILTERS
from ._lib import check, conv_shape, function, lib, n_threads, ptr, weight_ptr


def _transformed_filter(name, m, spec, w, profile, source=None):
    """U for w, from the cache or transform_filter.

    An OIHW w is viewed as (G, O/G, C/G, 3, 3), so the cache key (the weight shape) carries the
    groups the packing depends on.  The backward passes `source`, the OIHW weights its flipped,
    transposed view w is made of: the cache keeps and compares those instead, under a key of its
    own (so forward and backward do not evict each other), because comparing a contiguous array
    is 2.7x faster (VGG conv5_1: 0.86 ms against 2.35 ms per call)."""
    G = spec.groups
    if w.ndim == 4:
        w = w.reshape(G, spec.c_out // G, spec.c_in // G, 3, 3)
    key, kept = name, w
    if source is not None:
        key, kept = name + " (transposed)", source.reshape(G, source.shape[0] // G, -1, 3, 3)

    def transform(_):
        mr, og, cg = lib.FC_WINOGRAD_MR, spec.c_out // G, spec.c_in // G
        u = np.empty(G * (m + 2) ** 2 * -(-og // mr) * mr * cg, spec.dtype)
        status = function(f"fc_conv2d_transform_filter_winograd_f{m}k3", spec.dtype)(
            *weight_ptr(w), ptr(u, out=True), conv_shape(spec), n_threads(spec), ptr(profile, out=True))
        check(status, name)
        return u

    return FILTERS.get(key, kept, transform)


def _forward(m, spec, x, w, bias, out=None, profile=None, source=None):
    name = f"c.winograd_f{m}k3"
    u = _transformed_filter(name, m, spec, w, profile, source)
    y = np.empty(spec.output_shape, spec.dtype) if out is None else out
    status = function(f"fc_conv2d_fwd_winograd_f{m}k3", spec.dtype)(
        ptr(x), ptr(u), ptr(bias), ptr(y, out=True), conv_shape(spec), config.workspace_bytes(),
        n_threads(spec), ptr(profile, out=True))
    check(status, name)
    return y


def _backward_data(m, spec, grad_y, w):
    def forward(sub, gy, w_t, bias, out):
        return _forward(m, sub, gy, w_t, bias, out, source=w)

    return transpose.backward_data(forward, spec, grad_y, w)


def conv2d_forward_f2k3(spec, x, w, bias, out=None, profile=None):
    return _forward(2, spec, x, w, bias, out, profile)


def conv2d_forward_f4k3(spec, x, w, bias, out=None, profile=None):
    return _forward(4, spec, x, w, bias, out, profile)


def conv2d_backward_data_f2k3(spec, grad_y, w):
    return _backward_data(2, spec, grad_y, w)


def conv2d_backward_data_f4k3(spec, grad_y, w):
    return _backward_data(4, spec, grad_y, w)
