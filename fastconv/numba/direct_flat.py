"""Direct conv2d along the flat rows of a stride-phase copy in Numba, the twin of
csrc/direct_flat.c (its header has the why: first layers, where a panel per 16-pixel piece costs a
third of direct's time).  The grad of input runs the forward on the transposed problems of
fastconv/common/transpose.py; there is no weight gradient (fastconv/common/flat.py says why).

Per task (image n, group g, run of output rows, run of MR-channel blocks), as in C:
  copy_plane   the input rows of the task's output rows, every input channel of the group, into
               the padded copy split by stride phase (numba/_flat.py): tap k of flat output f
               reads it at toff[k] + f;
  flat tile    per block of MR output channels and per piece of the flat run, MR rows of
               accumulators (the bias, then per tap acc[r][f] += w[k][r] * xq[toff[k] + f], the
               MR rows in one loop over f, which LLVM vectorizes: one load of the copy per MR
               FMAs); the rows (out_w of each pitch) are copied into y.
C holds its tile in registers; here the accumulator rows of a piece stay in L1 instead (LLVM
vectorizes along f, not over a register tile spelled out in scalars), the weights are always
packed per call (C reads large ones in place), and every task makes its own copy (C's threads keep
theirs across the tasks of one run of rows).  Numba's vector ISA is
LLVM's for the host CPU, not FASTCONV_ISA's path (fastconv/numba/_options.py).
"""
import numpy as np
from numba import prange

from .. import threads
from ..common import flat, outputs, transpose
from ..spec import activation_code
from ._activation import activate
from ._flat import copy_plane, layout, tap_offsets
from ._options import driver, launch_threads

MR = 4  # output channels per block (the loop over f below is written out for 4)
PIECE = 512  # flat outputs per piece: MR accumulator rows of 8 KB (float32) stay in L1
# The task plan of csrc/direct_flat.c, with its bounds
TILE_BYTES = 32 << 10
COPY_BYTES = 512 << 10
TASKS_PER_THREAD = 4


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def plan(spec, nt: int) -> tuple:
    """(rows per task, runs of rows, MR-blocks per task, runs of blocks): fc_flat_make_plan's rule,
    with a PIECE of flat outputs as the tile that runs of rows are not cut below."""
    cg, og, elem = spec.c_in // spec.groups, spec.c_out // spec.groups, np.dtype(spec.dtype).itemsize
    oblocks, planes, want = _ceil_div(og, MR), spec.n * spec.groups, TASKS_PER_THREAD * nt
    pitch = spec.out_w + (spec.kw - 1) * spec.dilation[1] // spec.stride[1]
    chunk = max(1, min(spec.out_h, TILE_BYTES // (MR * pitch * elem)))
    while chunk > 1 and cg * flat.copy_elements(spec, chunk) * elem > COPY_BYTES:
        chunk //= 2
    chunks = _ceil_div(spec.out_h, chunk)
    ochunks = max(1, min(oblocks, _ceil_div(want, planes * chunks)))
    ochunk = _ceil_div(oblocks, ochunks)
    ochunks = _ceil_div(oblocks, ochunk)
    tile_rows = min(spec.out_h, _ceil_div(PIECE, pitch))
    chunks = max(chunks, min(_ceil_div(spec.out_h, tile_rows), _ceil_div(want, planes * ochunks)))
    chunk = _ceil_div(spec.out_h, chunks)
    return chunk, _ceil_div(spec.out_h, chunk), ochunk, ochunks


@driver
def _conv2d_forward(x, wp, bp, y, sh, sw, pt, pl, dh, dw, kh, kw, groups, chunk, chunks, ochunk, ochunks, act, slope):
    N, C = x.shape[0], x.shape[1]
    oblocks, K = wp.shape[1], wp.shape[2]
    OH, OW = y.shape[2], y.shape[3]
    cg, og = C // groups, y.shape[1] // groups
    pitch, rows, psize, csize = layout(chunk, OW, kh, kw, sh, sw, dh, dw)
    toff = tap_offsets(cg, kh, kw, sh, sw, dh, dw, pitch, psize, csize)
    for t in prange(N * groups * chunks * ochunks):
        h, u = t % ochunks, t // ochunks % chunks
        g, n = t // (ochunks * chunks) % groups, t // (ochunks * chunks * groups)
        oh0 = u * chunk
        nrows = min(chunk, OH - oh0)
        F = nrows * pitch
        xq = np.empty(cg * csize, x.dtype)
        for c in range(cg):
            copy_plane(x, n, g * cg + c, xq, c * csize, oh0, pt, pl, sh, sw, rows, pitch, psize)
        acc = np.empty((MR, F), x.dtype)
        for b in range(h * ochunk, min(oblocks, (h + 1) * ochunk)):
            for f0 in range(0, F, PIECE):
                f1 = min(F, f0 + PIECE)
                a0, a1, a2, a3 = acc[0, f0:f1], acc[1, f0:f1], acc[2, f0:f1], acc[3, f0:f1]
                a0[:], a1[:], a2[:], a3[:] = bp[g, b, 0], bp[g, b, 1], bp[g, b, 2], bp[g, b, 3]
                for k in range(K):
                    src = xq[toff[k] + f0:toff[k] + f1]
                    w0, w1, w2, w3 = wp[g, b, k, 0], wp[g, b, k, 1], wp[g, b, k, 2], wp[g, b, k, 3]
                    for f in range(f1 - f0):
                        s = src[f]
                        a0[f] += w0 * s
                        a1[f] += w1 * s
                        a2[f] += w2 * s
                        a3[f] += w3 * s
            for r in range(min(MR, og - b * MR)):
                for q in range(nrows):
                    y[n, g * og + b * MR + r, oh0 + q, :] = acc[r, q * pitch:q * pitch + OW]
                    if act:
                        activate(y[n, g * og + b * MR + r, oh0 + q, :], act, slope)


def _packed(spec, w, bias):
    """wp[g, b, k, r] = w[g * og + b * MR + r, k] and bp[g, b, r] = its bias, zero past og."""
    G, og = spec.groups, spec.c_out // spec.groups
    oblocks, K = _ceil_div(og, MR), spec.c_in // G * spec.kh * spec.kw
    wg = np.zeros((G, oblocks * MR, K), spec.dtype)
    wg[:, :og] = np.reshape(w, (G, og, K))  # a grouped view from transpose.py too
    bp = np.zeros((G, oblocks * MR), spec.dtype)
    if bias is not None:
        bp[:, :og] = bias.reshape(G, og)
    return (np.ascontiguousarray(wg.reshape(G, oblocks, MR, K).transpose(0, 1, 3, 2)),
            bp.reshape(G, oblocks, MR))


def conv2d_forward(spec, x, w, bias, out=None, *, act=None):
    y = outputs.empty(spec.output_shape, spec.dtype) if out is None else out
    wp, bp = _packed(spec, w, bias)
    launch_threads(spec)
    _conv2d_forward(x, wp, bp, y, *spec.stride, spec.padding[0], spec.padding[2], *spec.dilation, spec.kh, spec.kw,
                    spec.groups, *plan(spec, threads.for_problem(spec)), *activation_code(act))
    return y


def conv2d_backward_data(spec, grad_y, w):
    return transpose.backward_data(conv2d_forward, spec, grad_y, w)
