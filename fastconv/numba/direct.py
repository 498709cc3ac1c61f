"""Direct conv2d in Numba, the twin of csrc/direct.c.  The forward kernel is below; the backward
passes run it on the transposed problems of fastconv/common/transpose.py.

Its vector ISA is LLVM's for the host CPU, not FASTCONV_ISA's path: fastconv/numba/_options.py says why,
with measurements.

For every output row segment (image n, group g, row oh, pixels vs:ve) one task:
  pack_row_panel   panel[v, k] = x[n, g*cg + c, oh*sh - pt + i*dh, (vs + v)*sw - pl + j*dw] for
                   k = (c, i, j), zero where the tap falls in the padding: stride, dilation and
                   padding are settled once per segment, so the hot loop has no bounds checks;
  microkernel      an MR x NR tile of dot products over a block of k between weight rows and
                   panel rows (edge tiles repeat the last row, and the store drops the repeats);
  store            y[n, o, oh, vs + v] = tile + bias for the first k block, += tile after.
The weight needs no packing here: OIHW flattened is already [o][k] with k contiguous.  The panel
is pixel-major (C's is tap-major) because LLVM vectorizes a reduction along contiguous k into
register accumulators, while C spells out its register tile with vector types instead.  (Written
as scalar broadcast-FMA tiles over a tap-major panel, LLVM's loop vectorizer vectorizes the k loop
with gathers instead, so the dot-product form is the one that compiles well from Numba.)

Tile and blocking, measured on AVX2 (16 ymm registers):
- MR x NR = 4 x 3 keeps 12 accumulators plus 4 weight loads in registers, 7 loads per 12 FMAs.
  Wider tiles (3x4, 2x6) spill accumulators; 2x4 needs 6 loads per 8 FMAs.
- A row is split into segments so its panel stays within PANEL_BYTES (it is re-read from L2 for
  every block of MR output channels); this doubled conv3_2 (56 x 2304 taps = 516 KB per row).
- k is blocked by at most KC taps, so the MR + NR rows a tile streams stay near L1 for large K.
"""
import numpy as np
from numba import prange

from ..common import outputs, transpose
from ..spec import activation_code
from ._activation import activate
from ._options import driver, helper, launch_threads

MR = 4  # output channels per tile
NR = 3  # pixels per tile
KC = 4096  # most taps per k block
PANEL_BYTES = 256 * 1024  # most bytes per panel (about half an L2)


@helper
def pack_row_panel(x, panel, n, c0, cg, oh, vs, kh, kw, sh, sw, pt, pl, dh, dw):
    H, W = x.shape[2], x.shape[3]
    for c in range(cg):
        for i in range(kh):
            ih = oh * sh - pt + i * dh
            for j in range(kw):
                k = (c * kh + i) * kw + j
                iw0 = vs * sw + j * dw - pl
                for v in range(panel.shape[0]):
                    iw = v * sw + iw0
                    if 0 <= ih < H and 0 <= iw < W:
                        panel[v, k] = x[n, c0 + c, ih, iw]
                    else:
                        panel[v, k] = 0.0


@helper
def microkernel(wmat, panel, o0, v0, k0, k1, tile):
    """tile[r, q] = dot(wmat[o0 + r, k0:k1], panel[v0 + q, k0:k1]) for an MR x NR tile."""
    last_o, last_v = wmat.shape[0] - 1, panel.shape[0] - 1
    w0 = wmat[o0, k0:k1]
    w1 = wmat[min(o0 + 1, last_o), k0:k1]
    w2 = wmat[min(o0 + 2, last_o), k0:k1]
    w3 = wmat[min(o0 + 3, last_o), k0:k1]
    p0 = panel[v0, k0:k1]
    p1 = panel[min(v0 + 1, last_v), k0:k1]
    p2 = panel[min(v0 + 2, last_v), k0:k1]
    a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = a30 = a31 = a32 = wmat.dtype.type(0)
    for k in range(k1 - k0):  # zero-based, so indexing needs no negative-index fixup
        a00 += w0[k] * p0[k]
        a01 += w0[k] * p1[k]
        a02 += w0[k] * p2[k]
        a10 += w1[k] * p0[k]
        a11 += w1[k] * p1[k]
        a12 += w1[k] * p2[k]
        a20 += w2[k] * p0[k]
        a21 += w2[k] * p1[k]
        a22 += w2[k] * p2[k]
        a30 += w3[k] * p0[k]
        a31 += w3[k] * p1[k]
        a32 += w3[k] * p2[k]
    tile[0, 0], tile[0, 1], tile[0, 2] = a00, a01, a02
    tile[1, 0], tile[1, 1], tile[1, 2] = a10, a11, a12
    tile[2, 0], tile[2, 1], tile[2, 2] = a20, a21, a22
    tile[3, 0], tile[3, 1], tile[3, 2] = a30, a31, a32


@driver
def _conv2d_forward(x, w, bias, y, sh, sw, pt, pl, dh, dw, groups, act, slope):
    """y = activation(conv2d(x, w) + bias); y is preallocated (N, O, OH, OW); bias has O entries
    (zeros if none); act, slope: fastconv.spec.activation_code's."""
    N = x.shape[0]
    O, cg, kh, kw = w.shape
    OH, OW = y.shape[2], y.shape[3]
    og = O // groups
    K = cg * kh * kw
    wmat = w.reshape(O, K)
    # Row segments of vc pixels (a multiple of NR), as even as possible, each panel <= PANEL_BYTES.
    nv = (OW * K * x.itemsize + PANEL_BYTES - 1) // PANEL_BYTES
    vc = ((OW + nv - 1) // nv + NR - 1) // NR * NR
    nv = (OW + vc - 1) // vc
    # k blocks of kc taps (a multiple of 8, one ymm of float32), as even as possible, kc <= KC.
    nk = (K + KC - 1) // KC
    kc = ((K + nk - 1) // nk + 7) // 8 * 8
    for t in prange(N * groups * OH * nv):
        vb = t % nv
        oh = (t // nv) % OH
        g = (t // (nv * OH)) % groups
        n = t // (nv * OH * groups)
        vs = vb * vc
        nvp = min(OW, vs + vc) - vs  # pixels in this segment
        panel = np.empty((nvp, K), dtype=x.dtype)
        tile = np.empty((MR, NR), dtype=x.dtype)
        pack_row_panel(x, panel, n, g * cg, cg, oh, vs, kh, kw, sh, sw, pt, pl, dh, dw)
        wg = wmat[g * og:(g + 1) * og]
        for k0 in range(0, K, kc):
            k1 = min(K, k0 + kc)
            for o0 in range(0, og, MR):
                for v0 in range(0, nvp, NR):
                    microkernel(wg, panel, o0, v0, k0, k1, tile)
                    for r in range(min(MR, og - o0)):
                        o = g * og + o0 + r
                        for q in range(min(NR, nvp - v0)):
                            if k0 == 0:
                                y[n, o, oh, vs + v0 + q] = tile[r, q] + bias[o]
                            else:
                                y[n, o, oh, vs + v0 + q] += tile[r, q]
        if act:  # the segment is final: its activation, while it is in cache
            for o in range(g * og, (g + 1) * og):
                activate(y[n, o, oh, vs:vs + nvp], act, slope)


def conv2d_forward(spec, x, w, bias, out=None, *, act=None):
    y = outputs.empty(spec.output_shape, spec.dtype) if out is None else out
    w = np.ascontiguousarray(w).reshape(spec.weight_shape)  # a grouped view from transpose.py
    bias = bias if bias is not None else np.zeros(spec.c_out, spec.dtype)
    launch_threads(spec)
    _conv2d_forward(x, w, bias, y, *spec.stride, spec.padding[0], spec.padding[2], *spec.dilation, spec.groups,
                    *activation_code(act))
    return y


def conv2d_backward_data(spec, grad_y, w):
    return transpose.backward_data(conv2d_forward, spec, grad_y, w)


def conv2d_backward_weight(spec, grad_y, x):
    return transpose.backward_weight(conv2d_forward, spec, grad_y, x)
