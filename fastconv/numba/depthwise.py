"""Depthwise conv2d in Numba, the twin of csrc/depthwise.c (its header has the why): groups =
C_in, any channel multiplier, stride, padding and dilation, all three passes.

Per task, a run of consecutive planes (n, g), as in C:
  copy_plane   the zero-padded copy of an input plane split by stride phase in both axes, rows
               of `pitch` = out_w + (kw - 1) * dw // sw columns, flat; tap (c, i, j) of output
               (oh, ow) reads it at toff[c, i, j] + oh * pitch + ow (numba/_flat.py, shared with
               numba/direct_flat.py; csrc/fc_flat.h derives it);
  forward      the outputs as one flat run per chunk of rows: the bias, then per tap one loop
               acc[f] += w * xq[toff + f] over the whole run, which LLVM vectorizes (contiguous,
               indexed from 0, so no wraparound checks; one loop per tap and chunk, not per row);
               the rows of acc (pitch apart, the columns past out_w dropped) are copied into y;
  grad input   per plane the copies of its og gy planes' window (common/depthwise.py's data_window,
               unsplit), then per input phase (rh, rw) the same flat run over the taps that reach
               the phase, its rows written into gx's rows of the phase (stride sw apart);
  weight grad  per tap one dot product of the whole flat run: gy's rows copied at the copy's pitch,
               zero past out_w, against the tap's run of the copy (a long reduction LLVM vectorizes
               under FASTMATH's reassoc; per row, out_w columns of 7-14 left it scalar, 0.3-0.5x
               torch's speed on AMD EPYC Zen 3).  The zeros meet real inputs past out_w, and
               0 x inf is NaN where PyTorch has none, so a non-finite sum is summed again by rows,
               out_w columns each (the exact terms; C ends its rows with masked loads instead).
               Summed over the batch in order.
Numba's vector ISA is LLVM's for the host CPU, not FASTCONV_ISA's path (fastconv/numba/_options.py).
"""
import numpy as np
from numba import prange

from .. import threads
from ..common import depthwise, outputs
from ..spec import activation_code
from ._activation import activate
from ._flat import copy_plane, layout, tap_offsets
from ._options import driver, helper, launch_threads

TASKS_PER_THREAD = 8  # runs of planes per thread, as in C
CHUNK_ELEMS = 2048  # flat outputs per chunk of rows: its buffer stays in L1 (as in C)


@driver
def _conv2d_forward(x, w, bias, y, sh, sw, pt, pl, dh, dw, groups, run, act, slope):
    N = x.shape[0]
    O, cg, kh, kw = w.shape
    OH, OW = y.shape[2], y.shape[3]
    og, taps = O // groups, cg * kh * kw
    pitch, rows, psize, csize = layout(OH, OW, kh, kw, sh, sw, dh, dw)
    toff = tap_offsets(cg, kh, kw, sh, sw, dh, dw, pitch, psize, csize)
    chunk = max(1, min(OH, CHUNK_ELEMS // pitch))
    planes = N * groups
    for t in prange((planes + run - 1) // run):
        xq = np.empty(cg * csize, x.dtype)
        acc = np.empty(chunk * pitch, x.dtype)
        for p in range(t * run, min(planes, (t + 1) * run)):
            n, g = p // groups, p % groups
            for c in range(cg):
                copy_plane(x, n, g * cg + c, xq, c * csize, 0, pt, pl, sh, sw, rows, pitch, psize)
            for o in range(og):
                oc = g * og + o
                wl = w[oc].reshape(taps)
                for oh0 in range(0, OH, chunk):
                    nrows = min(chunk, OH - oh0)
                    F, f0 = nrows * pitch, oh0 * pitch
                    b = bias[oc]
                    for f in range(F):
                        acc[f] = b
                    for k in range(taps):
                        wv = wl[k]
                        src = xq[toff[k] + f0:toff[k] + f0 + F]
                        for f in range(F):
                            acc[f] += wv * src[f]
                    if act:  # the chunk, in L1 (its pads too)
                        activate(acc[:F], act, slope)
                    for r in range(nrows):
                        y[n, oc, oh0 + r, :] = acc[r * pitch:r * pitch + OW]


@driver
def _conv2d_backward_data(gy, w, gx, sh, sw, r0, rows, c0, pitch, taps_h, n_h, taps_w, n_w, groups, run):
    N, _, H, W = gx.shape
    O, _, kh, kw = w.shape
    OH, OW = gy.shape[2], gy.shape[3]
    og = O // groups
    psize = (rows + 1) * pitch  # the last run reads up to pitch - 1 past the window
    chunk = max(1, min((H + sh - 1) // sh, CHUNK_ELEMS // pitch))
    planes = N * groups
    for t in prange((planes + run - 1) // run):
        xq = np.empty(og * psize, gy.dtype)
        acc = np.empty(chunk * pitch, gy.dtype)
        for p in range(t * run, min(planes, (t + 1) * run)):
            n, g = p // groups, p % groups
            for o in range(og):  # the window as a stride-1 copy whose padding places it
                copy_plane(gy, n, g * og + o, xq, o * psize, 0, -r0, -c0, 1, 1, rows, pitch, psize)
            for rh in range(n_h.shape[0]):
                U = (H - rh + sh - 1) // sh
                for rw in range(n_w.shape[0]):
                    V = (W - rw + sw - 1) // sw
                    for u0 in range(0, U, chunk):
                        nrows = min(chunk, U - u0)
                        F = nrows * pitch
                        acc[:F] = 0.0
                        for o in range(og):
                            for a in range(n_h[rh]):
                                for b in range(n_w[rw]):
                                    wv = w[g * og + o, 0, taps_h[rh, a, 0], taps_w[rw, b, 0]]
                                    off = o * psize + (taps_h[rh, a, 1] - r0 + u0) * pitch + taps_w[rw, b, 1] - c0
                                    src = xq[off:off + F]
                                    for f in range(F):
                                        acc[f] += wv * src[f]
                        for r in range(nrows):
                            dst = gx[n, g, (u0 + r) * sh + rh]
                            for q in range(V):
                                dst[q * sw + rw] = acc[r * pitch + q]


@helper
def _tap_rows(gp, xq, at, pitch):
    """sum over gy's rows of gp[oh, :out_w] . xq[at + oh * pitch :][:out_w]: the tap's exact sum."""
    s = gp.dtype.type(0)
    for oh in range(gp.shape[0]):
        src = xq[at + oh * pitch:at + oh * pitch + gp.shape[1]]
        for q in range(gp.shape[1]):
            s += gp[oh, q] * src[q]
    return s


@driver
def _conv2d_backward_weight(gy, x, gw, sh, sw, pt, pl, dh, dw, groups, run):
    N = x.shape[0]
    O, _, kh, kw = gw.shape
    OH, OW = gy.shape[2], gy.shape[3]
    og, taps = O // groups, kh * kw
    pitch, rows, psize, csize = layout(OH, OW, kh, kw, sh, sw, dh, dw)
    toff = tap_offsets(1, kh, kw, sh, sw, dh, dw, pitch, psize, csize)
    F = OH * pitch
    for t in prange((groups + run - 1) // run):
        xq = np.empty(csize, x.dtype)
        gq = np.zeros(F, gy.dtype)  # gy's rows at the copy's pitch, zero past out_w
        sums = np.empty(og * taps, gw.dtype)
        for g in range(t * run, min(groups, (t + 1) * run)):
            sums[:] = 0.0
            for n in range(N):
                copy_plane(x, n, g, xq, 0, 0, pt, pl, sh, sw, rows, pitch, psize)
                for o in range(og):
                    gp = gy[n, g * og + o]
                    for oh in range(OH):
                        gq[oh * pitch:oh * pitch + OW] = gp[oh]
                    for k in range(taps):
                        src = xq[toff[k]:toff[k] + F]
                        s = gw.dtype.type(0)
                        for f in range(F):
                            s += gq[f] * src[f]
                        if not np.isfinite(s):  # 0 x inf or NaN past out_w, or a true non-finite
                            s = _tap_rows(gp, xq, toff[k], pitch)
                        sums[o * taps + k] += s
            for o in range(og):
                gw[g * og + o].reshape(taps)[:] = sums[o * taps:(o + 1) * taps]


def _run(items, spec) -> int:
    """Planes (or groups) per task: a few tasks per thread."""
    tasks = min(items, TASKS_PER_THREAD * threads.for_problem(spec))
    return -(-items // tasks)


def conv2d_forward(spec, x, w, bias, out=None, *, act=None):
    y = outputs.empty(spec.output_shape, spec.dtype) if out is None else out
    w = np.ascontiguousarray(w).reshape(spec.weight_shape)  # a grouped view from transpose.py
    bias = bias if bias is not None else np.zeros(spec.c_out, spec.dtype)
    launch_threads(spec)
    _conv2d_forward(x, w, bias, y, *spec.stride, spec.padding[0], spec.padding[2], *spec.dilation, spec.groups,
                    _run(spec.n * spec.groups, spec), *activation_code(act))
    return y


def _tap_table(phases, k):
    """common/depthwise.py's taps per phase as arrays: (phase, tap, (index, offset)) and counts."""
    table, counts = np.zeros((len(phases), max(k, 1), 2), np.int64), np.zeros(len(phases), np.int64)
    for r, taps in enumerate(phases):
        counts[r] = len(taps)
        if taps:
            table[r, :len(taps)] = taps
    return table, counts


def conv2d_backward_data(spec, grad_y, w):
    grad_x = outputs.empty(spec.input_shape, spec.dtype)
    win = depthwise.data_window(spec)
    launch_threads(spec)
    _conv2d_backward_data(grad_y, np.ascontiguousarray(w), grad_x, *spec.stride, win.r0, win.rows, win.c0, win.pitch,
                          *_tap_table(win.taps_h, spec.kh), *_tap_table(win.taps_w, spec.kw), spec.groups,
                          _run(spec.n * spec.groups, spec))
    return grad_x


def conv2d_backward_weight(spec, grad_y, x):
    grad_w = outputs.empty(spec.weight_shape, spec.dtype)
    launch_threads(spec)
    _conv2d_backward_weight(grad_y, x, grad_w, *spec.stride, spec.padding[0], spec.padding[2], *spec.dilation,
                            spec.groups, _run(spec.groups, spec))
    return grad_w
