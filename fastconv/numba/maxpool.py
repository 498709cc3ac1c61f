"""Max-pool 2-D forward (values + argmax) and backward in Numba, the twin of csrc/maxpool.c.

PyTorch's CPU rules, kept exactly:
  - each window starts at max = -inf with the index of its first in-bounds tap;
  - a tap replaces the max when ``val > max or isnan(val)``: ties keep the first maximum in scan
    order, and a window holding NaN ends on the *last* NaN;
  - padding taps are never read (they act as -inf).
Forward: one task per (n, c) plane; for each output row the taps are walked in scan order (i, j)
and, for each tap, along all output columns, so the inner loop runs along an input row.
Without indices (return_indices=False) the same walk keeps only the running max.
Backward: one task per plane: zero it, then gx[idx] += gy (overlapping windows add up).

Its vector ISA is LLVM's for the host CPU, not FASTCONV_ISA's path: fastconv/numba/_options.py says why,
with measurements.
"""
import numpy as np

from ..common import outputs
from numba import prange

from ..spec import index_error
from ._options import driver, helper, launch_threads


@helper
def inside(offset, stride, size, outputs):
    """The outputs v in [lo, hi) whose tap at v * stride + offset lies in [0, size) (fc_inside):
    also the taps of a window that read the input, computed rather than walked (a window may span
    2^31 taps of padding; a call's time must follow the taps that read the input)."""
    lo = 0 if offset >= 0 else min((-offset + stride - 1) // stride, outputs)
    hi = lo if offset >= size else max(lo, min(outputs, (size - 1 - offset) // stride + 1))
    return lo, hi


@helper
def pool_plane(x, y, idx, n, c, kh, kw, sh, sw, ph, pw, dh, dw, with_idx):
    """One plane; with_idx False (inference): the running max alone, idx is not touched."""
    H, W = x.shape[2], x.shape[3]
    OH, OW = y.shape[2], y.shape[3]
    # column taps j that some output column reads inside the row: j * dw - pw in [-(OW-1)*sw, W-1]
    j_lo, j_hi = inside(-pw + (OW - 1) * sw, dw, W + (OW - 1) * sw, kw)
    for oh in range(OH):
        ih_start = oh * sh - ph
        i_lo, i_hi = inside(ih_start, dh, H, kh)
        # PyTorch's initial index: the start stepped by the dilation until it is not negative
        ih_first = ih_start + (-ih_start + dh - 1) // dh * dh if ih_start < 0 else ih_start
        for ow in range(OW):
            y[n, c, oh, ow] = -np.inf
            if with_idx:
                iw_first = ow * sw - pw
                if iw_first < 0:
                    iw_first += (-iw_first + dw - 1) // dw * dw
                idx[n, c, oh, ow] = ih_first * W + iw_first
        for i in range(i_lo, i_hi):
            ih = ih_start + i * dh
            for j in range(j_lo, j_hi):
                iw0 = j * dw - pw  # iw = ow * sw + iw0
                v_lo, v_hi = inside(iw0, sw, W, OW)
                for ow in range(v_lo, v_hi):
                    iw = ow * sw + iw0
                    val, cur = x[n, c, ih, iw], y[n, c, oh, ow]
                    take = val > cur or val != val
                    # selects, not a conditional store, so that LLVM vectorizes the row
                    y[n, c, oh, ow] = val if take else cur
                    if with_idx:
                        idx[n, c, oh, ow] = ih * W + iw if take else idx[n, c, oh, ow]


@driver
def _max_pool2d_forward(x, y, idx, kh, kw, sh, sw, ph, pw, dh, dw):
    N, C = x.shape[0], x.shape[1]
    for p in prange(N * C):
        pool_plane(x, y, idx, p // C, p % C, kh, kw, sh, sw, ph, pw, dh, dw, True)


@driver
def _max_pool2d_values(x, y, kh, kw, sh, sw, ph, pw, dh, dw):
    """The forward without indices: pool_plane with its index code off (a constant, which LLVM
    folds away) and no index array."""
    N, C = x.shape[0], x.shape[1]
    no_idx = np.empty((1, 1, 1, 1), np.int64)
    for p in prange(N * C):
        pool_plane(x, y, no_idx, p // C, p % C, kh, kw, sh, sw, ph, pw, dh, dw, False)


@driver
def _max_pool2d_backward(grad_y, idx, grad_x):
    """Returns how many planes hold an index outside [0, H*W) (grad_x is then incomplete)."""
    N, C, H, W = grad_x.shape
    OH, OW = grad_y.shape[2], grad_y.shape[3]
    bad = np.zeros(N * C, np.int64)  # one flag per plane: disjoint writes instead of a reduction
    for p in prange(N * C):
        n, c = p // C, p % C
        plane = grad_x[n, c].reshape(H * W)
        plane[:] = 0.0
        plane_bad = 0
        for oh in range(OH):
            for ow in range(OW):
                at = idx[n, c, oh, ow]
                if at < 0 or at >= H * W:
                    plane_bad = 1
                else:
                    plane[at] += grad_y[n, c, oh, ow]
        bad[p] = plane_bad
    return bad.sum()


def max_pool2d_forward(spec, x):
    y = outputs.empty(spec.output_shape, spec.dtype)
    launch_threads(spec)
    hyper = (*spec.kernel, *spec.stride, *spec.padding, *spec.dilation)
    if not spec.indices:
        _max_pool2d_values(x, y, *hyper)
        return y, None
    idx = outputs.empty(spec.output_shape, np.int64)
    _max_pool2d_forward(x, y, idx, *hyper)
    return y, idx


def max_pool2d_backward(spec, grad_y, indices):
    grad_x = outputs.empty(spec.input_shape, spec.dtype)
    launch_threads(spec)
    if _max_pool2d_backward(grad_y, indices, grad_x):
        raise index_error("max_pool2d_backward", spec)
    return grad_x
