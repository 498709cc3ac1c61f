"""Direct conv2d forward in Numba, the twin of csrc/direct.c.

For every output row (image n, group g, row oh) one task:
  pack_row_panel   panel[v, k] = x[n, g*cg + c, oh*sh - pt + i*dh, v*sw - pl + j*dw] for
                   k = (c, i, j), zero where the tap falls in the padding: stride, dilation and
                   padding are settled once per row, so the hot loop has no bounds checks;
  microkernel      an MR x NR tile of dot products over k between weight rows and panel rows;
  store            y[n, o, oh, v] = tile + bias.
The weight needs no packing here: OIHW flattened is already [o][k] with k contiguous.  The panel
is pixel-major (C's is tap-major) because LLVM vectorizes a reduction along contiguous k into
register accumulators, while C spells out its register tile with vector types instead.
"""
import numpy as np
from numba import prange

from ..threads import numba_launch_threads
from ._options import driver, helper

MR = 2  # output channels per tile
NR = 4  # pixels per tile


@helper
def pack_row_panel(x, panel, n, c0, cg, oh, kh, kw, sh, sw, pt, pl, dh, dw):
    H, W = x.shape[2], x.shape[3]
    for c in range(cg):
        for i in range(kh):
            ih = oh * sh - pt + i * dh
            for j in range(kw):
                k = (c * kh + i) * kw + j
                iw0 = j * dw - pl
                for v in range(panel.shape[0]):
                    iw = v * sw + iw0
                    if 0 <= ih < H and 0 <= iw < W:
                        panel[v, k] = x[n, c0 + c, ih, iw]
                    else:
                        panel[v, k] = 0.0


@helper
def microkernel(wmat, panel, o0, v0, tile):
    """tile[r, q] = dot(wmat[o0 + r], panel[v0 + q]) for an MR x NR tile (edge tiles padded)."""
    K = wmat.shape[1]
    o1 = min(o0 + 1, wmat.shape[0] - 1)
    v1, v2, v3 = min(v0 + 1, panel.shape[0] - 1), min(v0 + 2, panel.shape[0] - 1), min(v0 + 3, panel.shape[0] - 1)
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = wmat.dtype.type(0)
    for k in range(K):
        w0, w1 = wmat[o0, k], wmat[o1, k]
        p0, p1, p2, p3 = panel[v0, k], panel[v1, k], panel[v2, k], panel[v3, k]
        a00 += w0 * p0
        a01 += w0 * p1
        a02 += w0 * p2
        a03 += w0 * p3
        a10 += w1 * p0
        a11 += w1 * p1
        a12 += w1 * p2
        a13 += w1 * p3
    tile[0, 0], tile[0, 1], tile[0, 2], tile[0, 3] = a00, a01, a02, a03
    tile[1, 0], tile[1, 1], tile[1, 2], tile[1, 3] = a10, a11, a12, a13


@driver
def _conv2d_forward(x, w, bias, y, sh, sw, pt, pl, dh, dw, groups):
    """y = conv2d(x, w) + bias; y is preallocated (N, O, OH, OW); bias has O entries (zeros if none)."""
    N, C = x.shape[0], x.shape[1]
    O, cg, kh, kw = w.shape
    OH, OW = y.shape[2], y.shape[3]
    og = O // groups
    K = cg * kh * kw
    wmat = w.reshape(O, K)
    for t in prange(N * groups * OH):
        oh = t % OH
        g = (t // OH) % groups
        n = t // (OH * groups)
        panel = np.empty((OW, K), dtype=x.dtype)
        tile = np.empty((MR, NR), dtype=x.dtype)
        pack_row_panel(x, panel, n, g * cg, cg, oh, kh, kw, sh, sw, pt, pl, dh, dw)
        wg = wmat[g * og:(g + 1) * og]
        for o0 in range(0, og, MR):
            for v0 in range(0, OW, NR):
                microkernel(wg, panel, o0, v0, tile)
                for r in range(min(MR, og - o0)):
                    o = g * og + o0 + r
                    for q in range(min(NR, OW - v0)):
                        y[n, o, oh, v0 + q] = tile[r, q] + bias[o]


def conv2d_forward(spec, x, w, bias):
    y = np.empty(spec.output_shape, spec.dtype)
    bias = bias if bias is not None else np.zeros(spec.c_out, spec.dtype)
    numba_launch_threads()
    _conv2d_forward(x, w, bias, y, *spec.stride, spec.padding[0], spec.padding[2], *spec.dilation, spec.groups)
    return y
