"""The two backward passes of conv2d, each rewritten as a forward convolution.

This is how the direct kernels serve the backward passes (as cuDNN and oneDNN describe them):
one forward engine, three problems, no unfolded column matrix.

Grad of input: gx[n, c, ih, iw] sums gy[n, o, oh, ow] * w[o, c, i, j] over the taps that reach
(ih, iw), i.e. oh * sh = ih + pt - i * dh.  Per axis, split the inputs into `stride` phases
ih = r + sh * u.  Only the taps i with (r + pt - i * dh) % sh == 0 reach phase r; they step by
sh / gcd(dh, sh), and consecutive ones move oh by e = dh / gcd(dh, sh).  So phase r of gx is a
stride-1 convolution of gy with those taps flipped, dilation e, and padding
(taps - 1) * e - (r + pt - i0 * dh) / sh, which may be negative (a crop: the direct kernels read
with bounds checks either way).  Channels swap roles: the filter is w transposed per group.
A stride-1 layer is a single phase written straight into gx; stride s runs s*s phases of 1/(s*s)
of the taps each, so no zeros are ever multiplied (the zero-insertion form would do s*s times
the work).

Grad of weight: gw[o, c, i, j] sums x[n, c, oh*sh - pt + i*dh, ...] * gy[n, o, oh, ow] over n
and the output pixels: a forward convolution whose "images" are the cg input channels, whose
channels are (group, image) pairs, whose filter is gy (one oh x ow "tap" per output pixel) and
whose kh x kw output is the weight gradient; stride and dilation swap places.

The problems built here are ConvSpecs made directly, not through from_args, because their
padding may be negative; every forward kernel given to these functions must accept that.
"""
from __future__ import annotations

from math import gcd
from typing import Callable, NamedTuple

import numpy as np

from ..spec import ConvSpec
from . import outputs

# forward(spec, x, w, bias, out) -> y, writing into out when it is given.  w is an OIHW array
# or, from here, a (G, O/G, C/G, kH, kW) view (flipped, transposed): c.direct reads it in place.
Forward = Callable[..., np.ndarray]


def _phase(r: int, stride: int, dilation: int, k: int, pad: int):
    """(the taps that reach input phase r along one axis, flipped, as a slice; how many; their
    dilation; the padding before), or None when no tap reaches the phase."""
    taps = [i for i in range(k) if (r + pad - i * dilation) % stride == 0]
    if not taps:
        return None
    e = dilation // gcd(dilation, stride)
    first_out = (r + pad - taps[0] * dilation) // stride  # the output the first tap reads
    step = stride // gcd(dilation, stride)
    flipped = slice(taps[-1], taps[0] - 1 if taps[0] else None, -step)  # a view, not a gather
    return flipped, len(taps), e, (len(taps) - 1) * e - first_out


class DataProblem(NamedTuple):
    """One input phase (rh, rw) of the grad of input: its forward problem, and the filter's taps
    (flipped) it runs, as slices of w_t along kh and kw."""
    rh: int
    rw: int
    spec: ConvSpec
    taps_h: slice
    taps_w: slice


def data_problems(spec: ConvSpec) -> list:
    """The forward problems of spec's grad of input, one per input phase that some tap reaches."""
    sh, sw = spec.stride
    problems = []
    for rh in range(min(sh, spec.h)):
        for rw in range(min(sw, spec.w)):
            ph = _phase(rh, sh, spec.dilation[0], spec.kh, spec.padding[0])
            pw = _phase(rw, sw, spec.dilation[1], spec.kw, spec.padding[2])
            if not (ph and pw):
                continue
            (taps_h, mh, eh, pad_h), (taps_w, mw, ew, pad_w) = ph, pw
            out_h, out_w = len(range(rh, spec.h, sh)), len(range(rw, spec.w, sw))
            sub = ConvSpec(spec.n, spec.c_out, spec.out_h, spec.out_w, spec.c_in, mh, mw, (1, 1),
                           (pad_h, out_h + (mh - 1) * eh - spec.out_h - pad_h,
                            pad_w, out_w + (mw - 1) * ew - spec.out_w - pad_w), (eh, ew), spec.groups, spec.dtype)
            problems.append(DataProblem(rh, rw, sub, taps_h, taps_w))
    return problems


def backward_data(forward: Forward, spec: ConvSpec, grad_y: np.ndarray, w: np.ndarray) -> np.ndarray:
    sh, sw = spec.stride
    G, og, cg = spec.groups, spec.c_out // spec.groups, spec.c_in // spec.groups
    # w_t[g, c, o] = w[g*og + o, c]: the filter with the channels' roles swapped, per group (a view)
    w_t = w.reshape(G, og, cg, spec.kh, spec.kw).transpose(0, 2, 1, 3, 4)
    problems = data_problems(spec)
    full = len(problems) == min(sh, spec.h) * min(sw, spec.w)  # else some inputs get no gradient: zeros
    grad_x = (outputs.empty if full else outputs.zeros)(spec.input_shape, spec.dtype)
    for rh, rw, sub, taps_h, taps_w in problems:
        w_sub = w_t[:, :, :, taps_h, taps_w]
        if sh == sw == 1:
            forward(sub, grad_y, w_sub, None, grad_x)
        else:
            grad_x[:, :, rh::sh, rw::sw] = forward(sub, grad_y, w_sub, None, None)
    return grad_x


def weight_problem(spec: ConvSpec) -> ConvSpec:
    """The forward problem of spec's grad of weight (the module's docstring)."""
    G = spec.groups
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    pt, pl = spec.padding[0], spec.padding[2]
    sub = ConvSpec(spec.c_in // G, G * spec.n, spec.h, spec.w, spec.c_out, spec.out_h, spec.out_w, (dh, dw),
                   (pt, (spec.kh - 1) * dh + (spec.out_h - 1) * sh + 1 - spec.h - pt,
                    pl, (spec.kw - 1) * dw + (spec.out_w - 1) * sw + 1 - spec.w - pl),
                   (sh, sw), G, spec.dtype)
    assert (sub.out_h, sub.out_w) == (spec.kh, spec.kw)
    return sub


def backward_weight(forward: Forward, spec: ConvSpec, grad_y: np.ndarray, x: np.ndarray) -> np.ndarray:
    G, cg = spec.groups, spec.c_in // spec.groups
    # images: the cg channels of a group; channels: (group, image) pairs; filter: gy per output channel
    x_t = np.ascontiguousarray(
        x.reshape(spec.n, G, cg, spec.h, spec.w).transpose(2, 1, 0, 3, 4).reshape(cg, G * spec.n, spec.h, spec.w))
    gy_t = np.ascontiguousarray(grad_y.transpose(1, 0, 2, 3))
    return np.ascontiguousarray(forward(weight_problem(spec), x_t, gy_t, None, None).transpose(1, 0, 2, 3))
