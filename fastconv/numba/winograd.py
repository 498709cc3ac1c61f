"""Winograd F(m x m, 3 x 3) conv2d in Numba, m = 2 and 4 (numba.winograd_f2k3, numba.winograd_f4k3):
the twin of csrc/winograd.c.  The forward kernel is below; grad of input runs it on the flipped,
channel-transposed problem of fastconv/common/transpose.py (a strided 5-D weight view, negative padding
when the layer's padding exceeds 2, and ``out=``).  Grad of weight (_conv2d_backward_weight) is the
forward's transpose in w, as in C: the input's tiles transformed as here, grad_y's m x m tiles by
AT^T (ag2/ag4, grad_tiles), their products summed over the tiles by one OpenBLAS GEMM per xi, and
grad_w = G^T M G.

Its vector ISA is LLVM's for the host CPU, not FASTCONV_ISA's path: fastconv/numba/_options.py says why,
with measurements.

With alpha = m + 2 the output is cut into tiles of m x m pixels, tiles_h = ceil(out_h / m) by
tiles_w = ceil(out_w / m) per image, numbered across the batch (image, tile row, tile column); tile
(th, tw) reads the alpha x alpha input patch at row th*m - pad_top, column tw*m - pad_left (zero
outside the input).  With xi = (r, s) one of the alpha^2 transformed positions (stored as
s*alpha + r, see input_tiles), the phases are:
  transform_filter  U[g][xi][o][c] = (G w[g*og + o, c] G^T)[xi], summed in float64 and rounded
                    once; once per weight values: fastconv.common.winograd.transformed keeps U.
  Per task (group g, a block of T <= LANES consecutive tiles, a share of the output channels),
  on buffers private to the thread:
  transform_input   V[c][xi][t] = (BT d_{c,t} B)[xi] for the block's tiles, every channel of g;
  batched_gemm      M[o][xi][t] = sum_c U[g][xi][o][c] V[c][xi][t]: alpha^2 GEMMs per chunk of
                    OC output channels, by OpenBLAS (single-threaded in each task: the library
                    and binding of numba.im2col, numba/_blas.py);
  transform_output  y tile = AT M_{o,t} A + bias, clipped at the right and bottom edges.
A block may span tile rows and images (the batch's tiles are one sequence), so the GEMMs stay wide
on small images.  Tasks are a multiple of the threads while each keeps MIN_T tiles; with fewer
tiles (deep layers at batch 1) the output channels are split instead, each share transforming the
block's input again (a few percent of its GEMMs).  V and M of all threads stay within
fastconv.common.config.workspace_bytes(): V holds cc <= cg channels (the GEMMs then accumulate chunk by
chunk, transforming the input again per chunk of output channels), M oc channels, at least one.

The transforms vectorize across the tiles of a block: every formula runs along a row of LANES
lanes, one lane per tile.  transform_input copies the alpha input rows of each tile row the block
touches into a band (zero where the padding is; no bounds checks after), gathers each tile's
patch into lanes (alpha^2 scalar moves per tile and channel, the one scalar step), then applies BT
along the columns and along the rows straight into V; transform_output applies AT the same way
from M, scatters the m x m results into an output band and copies its rows into y.  LLVM
vectorizes a loop that reads several rows of one array and writes several rows of another only
when their strides are compile-time constants and the offsets are folded into views
(``src[offset:]``): otherwise it needs more run-time alias checks than it allows and the loop
stays scalar (bt4 along rows: 67 ns against 5 ns per tile and channel).  So V and M have LANES
(constant) lanes per row, and the loops index views with constant strides.  Checked in the
assembly (``_conv2d_forward.inspect_asm``): bt2/bt4/at2/at4 are ymm vaddps/vsubps/vfmadd*ps.
BT and AT are small integers: bt2/bt4/at2/at4 spell them out with shared subexpressions (a test
applies them to unit vectors and compares with winograd_points exactly); constants are typed by
the data (``f(4)``), as a Python literal would widen float32 lanes to float64.

Where the time goes (float32, 2 threads, quiet machine; the GEMMs alone, the transforms alone,
FILTERS' check that the weights did not change): F4 on VGG-16 conv3_2 / conv4_2 / conv5_1 at
batch 1, 13.5 / 15.0 / 9.1 ms: GEMMs 72 / 77 / 71 %, transforms 23 / 18 / 14 %, weight check 4 /
10 / 14 %; at batch 8 the GEMMs take 80-85 %.  OpenBLAS repacks U on every call, so narrow GEMMs
(few tiles: conv5_1 at batch 1 has 16) stream U (37.7 MB for F4 at 512 channels) from memory at
~30 GFLOP/s per thread, against ~65 with 98 tiles; c.winograd's own microkernel reads U packed
once per weight and is ~1.8x faster there.

Compile time (cold cache, float32, both tile sizes in one specialization): ~13 s for the forward
driver, ~3 s for transform_filter.  Both transform passes share one call site (input_tiles,
output_tiles), which halved it.  Numba's cache notices edits only in this file: the helpers live
here, and numba/_blas.py is ABI (BLAS_ABI, as in numba/im2col.py; tests/test_winograd.py checks it).
"""
import numpy as np
from numba import get_thread_id, prange

from ..common import config, outputs, transpose, winograd
from ..common.nonfinite import NonFinite, finite
from ..threads import for_problem, get_num_threads
from ..common.winograd_points import matrices
from ..spec import activation_code
from ._activation import activate
from ._blas import gemm
from ._options import driver, helper, launch_threads

BLAS_ABI = "c4efe2326a699faf"  # sha256 of numba/_blas.py, first 16 hex digits

LANES = 128  # most tiles per task: the lanes of the transforms, the n of the GEMMs
MIN_T = 64  # fewer tiles per task than this, and the output channels are split instead
OC = 256  # output channels per batched_gemm + transform_output round
U = np.uint64  # flat indices (see numba/im2col.py gather: signed ones defeat vectorization)


# ----------------------------------------------------------------------------- the transforms
# Each applies one transform along rows, across tiles: for k < count, inputs src[j*sj + k]
# (j < alpha), outputs dst[s*ds + k].  Called on views (src[offset:]) with constant sj and ds,
# the loops vectorize; with run-time strides or offsets they stay scalar.

@helper
def bt2(src, sj, dst, ds, count):
    """BT of F(2,3) (points 0, 1, -1): v = (x0 - x2, x1 + x2, x2 - x1, x3 - x1)."""
    sj, ds = U(sj), U(ds)
    for k in range(U(count)):
        x0, x1, x2, x3 = src[k], src[k + sj], src[k + 2 * sj], src[k + 3 * sj]
        dst[k] = x0 - x2
        dst[k + ds] = x1 + x2
        dst[k + 2 * ds] = x2 - x1
        dst[k + 3 * ds] = x3 - x1


@helper
def bt4(src, sj, dst, ds, count):
    """BT of F(4,3) (points 0, 1, -1, 2, -2)."""
    f = dst.dtype.type
    c2, c4, c5 = f(2), f(4), f(5)
    sj, ds = U(sj), U(ds)
    for k in range(U(count)):
        x0, x1, x2 = src[k], src[k + sj], src[k + 2 * sj]
        x3, x4, x5 = src[k + 3 * sj], src[k + 4 * sj], src[k + 5 * sj]
        a = c4 * x2 - x4
        b = c4 * x1 - x3
        e = x4 - x2
        h = c2 * (x3 - x1)
        dst[k] = c4 * x0 - c5 * x2 + x4
        dst[k + ds] = a + b
        dst[k + 2 * ds] = a - b
        dst[k + 3 * ds] = e + h
        dst[k + 4 * ds] = e - h
        dst[k + 5 * ds] = c4 * x1 - c5 * x3 + x5


@helper
def at2(src, sj, dst, ds, count, beta):
    """AT of F(2,3), plus beta: y = (x0 + x1 + x2, x1 - x2 + x3) + beta."""
    sj, ds = U(sj), U(ds)
    for k in range(U(count)):
        x0, x1, x2, x3 = src[k], src[k + sj], src[k + 2 * sj], src[k + 3 * sj]
        dst[k] = x0 + x1 + x2 + beta
        dst[k + ds] = x1 - x2 + x3 + beta


@helper
def at4(src, sj, dst, ds, count, beta):
    """AT of F(4,3), plus beta."""
    f = dst.dtype.type
    c2, c4, c8 = f(2), f(4), f(8)
    sj, ds = U(sj), U(ds)
    for k in range(U(count)):
        x0, x1, x2 = src[k], src[k + sj], src[k + 2 * sj]
        x3, x4, x5 = src[k + 3 * sj], src[k + 4 * sj], src[k + 5 * sj]
        a, b = x1 + x2, x1 - x2
        c, d = x3 + x4, x3 - x4
        dst[k] = x0 + a + c + beta
        dst[k + ds] = b + c2 * d + beta
        dst[k + 2 * ds] = a + c4 * c + beta
        dst[k + 3 * ds] = b + c8 * d + x5 + beta


@helper
def ag2(src, sj, dst, ds, count):
    """AT^T of F(2,3), for the weight gradient: an m-vector g spread to alpha, (g0, g0 + g1, g0 - g1, g1)."""
    sj, ds = U(sj), U(ds)
    for k in range(U(count)):
        g0, g1 = src[k], src[k + sj]
        dst[k] = g0
        dst[k + ds] = g0 + g1
        dst[k + 2 * ds] = g0 - g1
        dst[k + 3 * ds] = g1


@helper
def ag4(src, sj, dst, ds, count):
    """AT^T of F(4,3), for the weight gradient."""
    f = dst.dtype.type
    c2, c4, c8 = f(2), f(4), f(8)
    sj, ds = U(sj), U(ds)
    for k in range(U(count)):
        g0, g1, g2, g3 = src[k], src[k + sj], src[k + 2 * sj], src[k + 3 * sj]
        a, b = g0 + g2, g1 + g3
        c, d = g0 + c4 * g2, c2 * g1 + c8 * g3
        dst[k] = g0
        dst[k + ds] = a + b
        dst[k + 2 * ds] = a - b
        dst[k + 3 * ds] = c + d
        dst[k + 4 * ds] = c - d
        dst[k + 5 * ds] = g3


# ----------------------------------------------------------------------------- moving data

@helper
def copy(src, dst, count):
    """dst[:count] = src[:count] (views)."""
    for k in range(U(count)):
        dst[k] = src[k]


@helper
def fill(dst, count, value):
    for k in range(U(count)):
        dst[k] = value


@helper
def tile_slots(ti, si, t0, nt, m, tiles_h, tiles_w, band_in, band_out):
    """Lay out the block's tiles t0 .. t0 + nt - 1 in bands, one slot per tile row they touch:
    si[:, s] = image, tile row, first and last + 1 tile column of slot s; ti[0, q] = where the
    alpha x alpha input patch of tile q starts in the input band (band_in elements per slot),
    ti[1, q] where its m x m outputs go in the output band (band_out per slot).  Returns the
    number of slots."""
    slots, prev = 0, -1
    for q in range(nt):
        t = t0 + q
        row = t // tiles_w  # n * tiles_h + th
        tw = t - row * tiles_w
        if row != prev:
            si[0, slots], si[1, slots], si[2, slots] = row // tiles_h, row % tiles_h, tw
            slots += 1
            prev = row
        si[3, slots - 1] = tw + 1
        ti[0, q] = (slots - 1) * band_in + tw * m
        ti[1, q] = (slots - 1) * band_out + tw * m
    return slots


@helper
def fill_band(xf, plane, H, W, band, si, slots, m, a, pt, pl, wb):
    """band[(s*a + i)*wb + j] = x[image of slot s][plane][th*m - pt + i, j - pl] for the columns of
    the slot's tiles where that is inside the input (plane = (offset of the channel's plane in
    image 0, elements per image)).  The rest of the band, the padding, stays as transform_input
    cleared it: zero, the same for every channel."""
    base, image = plane
    for s in range(slots):
        src = base + si[0, s] * image
        c0, c1 = si[2, s] * m, si[3, s] * m + a - m  # the slot's columns
        v0 = min(max(c0, pl), c1)
        v1 = max(v0, min(c1, W + pl))  # [v0, v1): inside the input
        for i in range(a):
            ih = si[1, s] * m - pt + i
            if 0 <= ih < H:
                copy(xf[src + ih * W + v0 - pl:], band[(s * a + i) * wb + v0:], v1 - v0)


@helper
def gather_tiles(band, D, ti, ns, wb, a):
    """D[(j*a + i)*LANES + q] = the input patch of tile q at row i, column j (transposed: see
    input_tiles), from the band (no checks: the band holds the zeros of the padding)."""
    for q in range(ns):
        src = band[ti[0, q]:]
        for i in range(a):
            for j in range(a):
                D[U((j * a + i) * LANES + q)] = src[U(i * wb + j)]


@helper
def scatter_tiles(D, band, ti, ns, wb, m):
    """The m x m outputs of tile q, D[(j*(m + 2) + i)*LANES + q] at row i, column j, into the
    output band."""
    for q in range(ns):
        dst = band[ti[1, q]:]
        for i in range(m):
            for j in range(m):
                dst[U(i * wb + j)] = D[U((j * (m + 2) + i) * LANES + q)]


@helper
def flush_band(band, yf, plane, OH, OW, si, slots, m, wb):
    """y[image of slot s][plane][th*m + i, columns of the slot's tiles] = the output band, clipped
    at the bottom and right edges."""
    base, image = plane
    for s in range(slots):
        c0, c1 = si[2, s] * m, min(si[3, s] * m, OW)
        oh0 = si[1, s] * m
        dst = base + si[0, s] * image + oh0 * OW
        for i in range(min(m, OH - oh0)):
            copy(band[(s * m + i) * wb + c0:], yf[dst + i * OW + c0:], c1 - c0)


# ----------------------------------------------------------------------------- the phases
# A 2-D transform is a 1-D one along the columns, then along the rows.  Both passes read a row
# of LANES per input (stride LANES) and write with stride alpha*LANES: pass 1 takes tile[i][j]
# stored as D[j][i] to E[r][j], pass 2 takes E[r][j] to V[s][r].  So one call site serves both
# passes (half the code to compile), and V, U and M index xi = (r, s) as s*alpha + r.

@helper
def input_tiles(ns, D, E, v, a):
    """v[(s*a + r)*LANES + q] = (BT d_q B)[r, s] for the tiles q < ns gathered in D."""
    for p in range(2):
        src, dst = (D, E) if p == 0 else (E, v)
        for x in range(a):
            if a == 6:
                bt4(src[x * 6 * LANES:], LANES, dst[x * LANES:], 6 * LANES, ns)
            else:
                bt2(src[x * 4 * LANES:], LANES, dst[x * LANES:], 4 * LANES, ns)


@helper
def output_tiles(mo, beta, ns, D, E, a):
    """D[(j*a + i)*LANES + q] = (AT M_q A)[i, j] + beta from mo[(s*a + r)*LANES + q]."""
    for p in range(2):
        src, dst = (mo, E) if p == 0 else (E, D)
        b = beta if p == 1 else D.dtype.type(0)
        for x in range(a if p == 0 else a - 2):
            if a == 6:
                at4(src[x * 6 * LANES:], LANES, dst[x * LANES:], 6 * LANES, ns, b)
            else:
                at2(src[x * 4 * LANES:], LANES, dst[x * LANES:], 4 * LANES, ns, b)


@helper
def transform_input(xf, C, H, W, c0, cc, nt, m, pt, pl, ti, si, slots, wb, V, band, D, E):
    """V[(c*alpha^2 + xi)*LANES + q] for the block's tiles q < nt and channels c0 .. c0 + cc - 1
    (wb: the input band's row length)."""
    a = m + 2
    fill(band, slots * a * wb, 0)  # clear_band: the padding's zeros, once for all channels
    for c in range(cc):
        fill_band(xf, ((c0 + c) * H * W, C * H * W), H, W, band, si, slots, m, a, pt, pl, wb)
        v = V[c * a * a * LANES:]
        if m == 4:  # (literal sizes: unrolled)
            gather_tiles(band, D, ti, nt, wb, 6)
        else:
            gather_tiles(band, D, ti, nt, wb, 4)
        input_tiles(nt, D, E, v, a)


@helper
def batched_gemm(u, g, o0, ob, c0, cc, nt, beta, V, M):
    """M[(o*alpha^2 + xi)*LANES + q] (+)= sum_c U[g][xi][o0 + o][c0 + c] V[(c*alpha^2 + xi)*LANES + q]
    for o < ob, q < nt: one OpenBLAS GEMM per xi."""
    A2, og, cg = u.shape[1], u.shape[2], u.shape[3]
    for xi in range(A2):
        gemm(False, False, ob, nt, cc, 1.0, u, ((g * A2 + xi) * og + o0) * cg + c0, cg,
             V, xi * LANES, A2 * LANES, beta, M, xi * LANES, A2 * LANES)


@helper
def transform_output(M, yf, bias, O, OH, OW, o0, ob, nt, m, ti, si, slots, wb, band, D, E, act, slope):
    """activation(y[:, o0 + o]) on the block's tiles from M[(o*alpha^2 + xi)*LANES + q], o < ob,
    q < nt (wb: the output band's row length)."""
    a = m + 2
    for o in range(ob):
        mo = M[o * a * a * LANES:]
        output_tiles(mo, bias[o0 + o], nt, D, E, a)
        if act:  # the tiles' outputs, in L1 (D's unused entries too)
            activate(D[:a * a * LANES], act, slope)
        if m == 4:
            scatter_tiles(D, band, ti, nt, wb, 4)
        else:
            scatter_tiles(D, band, ti, nt, wb, 2)
        flush_band(band, yf, ((o0 + o) * OH * OW, O * OH * OW), OH, OW, si, slots, m, wb)


@driver
def _conv2d_forward(x, u, bias, y, V, M, D, E, BI, BO, TI, SI, m, pt, pl, T, oc, cc, oparts, act, slope):
    """y = activation(conv2d(x, w) + bias) from U = transform_filter(w), shape (groups, alpha^2, og, cg).
    Per thread: V (cc * alpha^2 * LANES), M (oc * alpha^2 * LANES), D and E (alpha^2 * LANES),
    the bands BI and BO, TI (2, LANES), SI (4, LANES)."""
    N, C, H, W = x.shape
    G, og, cg = u.shape[0], u.shape[2], u.shape[3]
    O, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    a = m + 2
    tiles_h, tiles_w = (OH + m - 1) // m, (OW + m - 1) // m
    wi, wo = tiles_w * m + 2, tiles_w * m  # band rows: input, output
    tiles = N * tiles_h * tiles_w
    blocks = (tiles + T - 1) // T
    share = (og + oparts - 1) // oparts
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    for task in prange(G * blocks * oparts):
        part, blk, g = task % oparts, (task // oparts) % blocks, task // (oparts * blocks)
        t0 = blk * T
        nt = min(T, tiles - t0)
        o_lo, o_hi = part * share, min(og, part * share + share)
        me = get_thread_id()
        Vm, Mm, Dm, Em, bi, bo, ti, si = V[me], M[me], D[me], E[me], BI[me], BO[me], TI[me], SI[me]
        slots = tile_slots(ti, si, t0, nt, m, tiles_h, tiles_w, a * wi, m * wo)
        for o0 in range(o_lo, o_hi, oc):
            ob = min(oc, o_hi - o0)
            for c0 in range(0, cg, cc):
                ncc = min(cc, cg - c0)
                if cc < cg or o0 == o_lo:  # V holds every channel: transformed once per task
                    transform_input(xf, C, H, W, g * cg + c0, ncc, nt, m, pt, pl, ti, si, slots, wi, Vm, bi, Dm, Em)
                batched_gemm(u, g, o0, ob, c0, ncc, nt, 0.0 if c0 == 0 else 1.0, Vm, Mm)
            transform_output(Mm, yf, bias, O, OH, OW, g * og + o0, ob, nt, m, ti, si, slots, wo, bo, Dm, Em,
                             act, slope)


@helper
def grad_tiles(ns, D, E, v, a):
    """v[(s*a + r)*LANES + q] = (AT^T g_q AT)[r, s] for the m x m tiles q < ns gathered in D (the
    layout of input_tiles, so products with its V pair the same positions).  Pass 1 spreads each
    tile column to alpha (E: alpha x m), pass 2 each of those rows."""
    for x in range(a - 2):
        if a == 6:
            ag4(D[x * 4 * LANES:], LANES, E[x * LANES:], 4 * LANES, ns)
        else:
            ag2(D[x * 2 * LANES:], LANES, E[x * LANES:], 2 * LANES, ns)
    for x in range(a):
        if a == 6:
            ag4(E[x * 4 * LANES:], LANES, v[x * LANES:], 6 * LANES, ns)
        else:
            ag2(E[x * 2 * LANES:], LANES, v[x * LANES:], 4 * LANES, ns)


@driver
def _conv2d_backward_weight(x, gy, gw, V, M, D, E, S, BI, TI, SI, ACC, gt, m, pt, pl, tc):
    """gw = conv2d's weight gradient, group by group and chunk by chunk of tc tiles (csrc/winograd.c's
    plan): V[p][xi][t] holds the chunk's transforms of the input channels (p < cg) and of grad_y's
    channels (p = cg + o); M[xi][o][c] sums V[cg + o][xi] . V[c][xi] over the chunk's tiles, one
    OpenBLAS GEMM per xi; gw = G^T M G (gt: G^T G's entries per tap and xi, float64).  Per thread:
    D, E and the staging S (alpha^2 * LANES), the band BI, TI (2, LANES), SI (4, LANES), ACC (cg)."""
    N, C, H, W = x.shape
    O, OH, OW = gy.shape[1], gy.shape[2], gy.shape[3]
    G, og, cg = C // gw.shape[1], gw.shape[0] // (C // gw.shape[1]), gw.shape[1]
    a = m + 2
    A2 = a * a
    tiles_h, tiles_w = (OH + m - 1) // m, (OW + m - 1) // m
    wi = tiles_w * m + 2  # band rows (the input's; grad_y's are m shorter)
    tiles = N * tiles_h * tiles_w
    planes, tcs = cg + og, V.shape[2]
    xf, gyf = x.reshape(x.size), gy.reshape(gy.size)
    gwf, mf = gw.reshape(gw.size), M.reshape(M.size)
    f = gw.dtype.type
    for g in range(G):
        for t0c in range(0, tiles, tc):
            nv = min(tc, tiles - t0c)
            blocks = (nv + LANES - 1) // LANES
            for task in prange(planes * blocks):
                p, blk = task // blocks, task % blocks
                t0 = t0c + blk * LANES
                nt = min(LANES, t0c + nv - t0)
                me = get_thread_id()
                Dm, Em, Sm, bi, ti, si = D[me], E[me], S[me], BI[me], TI[me], SI[me]
                if p < cg:
                    slots = tile_slots(ti, si, t0, nt, m, tiles_h, tiles_w, a * wi, a * wi)
                    fill(bi, slots * a * wi, 0)
                    fill_band(xf, ((g * cg + p) * H * W, C * H * W), H, W, bi, si, slots, m, a, pt, pl, wi)
                    if m == 4:
                        gather_tiles(bi, Dm, ti, nt, wi, 6)
                    else:
                        gather_tiles(bi, Dm, ti, nt, wi, 4)
                    input_tiles(nt, Dm, Em, Sm, a)
                else:
                    slots = tile_slots(ti, si, t0, nt, m, tiles_h, tiles_w, m * wi, m * wi)
                    fill(bi, slots * m * wi, 0)
                    fill_band(gyf, ((g * og + p - cg) * OH * OW, O * OH * OW), OH, OW, bi, si, slots, m, m,
                              0, 0, wi)
                    if m == 4:
                        gather_tiles(bi, Dm, ti, nt, wi, 4)
                    else:
                        gather_tiles(bi, Dm, ti, nt, wi, 2)
                    grad_tiles(nt, Dm, Em, Sm, a)
                for xi in range(A2):
                    copy(Sm[xi * LANES:], V[p, xi, t0 - t0c:], nt)
            for xi in prange(A2):
                gemm(False, True, og, cg, nv, 1.0, V, (cg * A2 + xi) * tcs, A2 * tcs, V, xi * tcs, A2 * tcs,
                     0.0 if t0c == 0 else 1.0, M, xi * og * cg, cg)
        for o in prange(og):
            acc = ACC[get_thread_id()]
            for tap in range(9):
                fill(acc, cg, 0)
                for xi in range(A2):
                    coef = f(gt[tap, xi])
                    if coef != 0:
                        src = mf[(xi * og + o) * cg:]
                        for c in range(cg):
                            acc[c] += coef * src[c]
                out = gwf[(g * og + o) * cg * 9 + tap:]
                for c in range(cg):
                    out[c * 9] = acc[c]


@helper
def combine3(src, s0, s1, s2, dst, c0, c1, c2, count):
    """dst[k] = c0*src0[k] + c1*src1[k] + c2*src2[k] on views src[s0:], src[s1:], src[s2:]."""
    a, b, c = src[s0:], src[s1:], src[s2:]
    for k in range(U(count)):
        dst[k] = c0 * a[k] + c1 * b[k] + c2 * c[k]


@driver
def _transform_filter(wt, u, gm, tmp):
    """u[g, b*alpha + a, o, c] = sum_ij gm[a, i] gm[b, j] wt[g*og + o, i, j, c], in float64:
    wt is (O, 3, 3, cg) (channels last, so the loops run along c), gm the float64 G, tmp a
    float64 (threads, alpha*3*cg) scratch."""
    G, A2, og, cg = u.shape
    A = gm.shape[0]
    uf = u.reshape(u.size)
    wf = wt.reshape(wt.size)
    for row in prange(G * og):
        g, o = row // og, row % og
        t = tmp[get_thread_id()]
        w0 = row * 9 * cg
        for a in range(A):  # t[a][j] = G[a] . w[:, j]
            for j in range(3):
                combine3(wf, w0 + j * cg, w0 + (3 + j) * cg, w0 + (6 + j) * cg, t[(a * 3 + j) * cg:],
                         gm[a, 0], gm[a, 1], gm[a, 2], cg)
        for a in range(A):  # u[b][a] = t[a] . G[b]
            for b in range(A):
                combine3(t, a * 3 * cg, (a * 3 + 1) * cg, (a * 3 + 2) * cg, uf[((g * A2 + b * A + a) * og + o) * cg:],
                         gm[b, 0], gm[b, 1], gm[b, 2], cg)


# ----------------------------------------------------------------------------- wrappers

def plan(spec, m, threads, workspace_bytes, itemsize):
    """(T, oc, cc, oparts): tiles per task (at most LANES), output channels per GEMM round, input
    channels per transform_input round, output-channel shares per block of tiles.  Tasks are a
    multiple of the threads while each keeps MIN_T tiles; below that, output channels are split.
    V and M of all threads stay within the workspace (cc and oc shrink, at least 1)."""
    A2 = (m + 2) ** 2
    G, og, cg = spec.groups, spec.c_out // spec.groups, spec.c_in // spec.groups
    tiles = spec.n * -(-spec.out_h // m) * -(-spec.out_w // m)
    blocks = -(-tiles // LANES)
    even = -(-(-(-G * blocks // threads) * threads) // G)  # blocks for a multiple of the threads
    blocks = even if -(-tiles // even) >= MIN_T else max(blocks, min(even, tiles // MIN_T))
    T = -(-tiles // blocks)
    oparts = min(-(-threads // (G * blocks)), -(-og // 16)) if G * blocks < threads else 1
    oc = min(OC, -(-og // oparts))
    per_channel = threads * itemsize * A2 * LANES  # of V or M, all threads
    cc = min(cg, max(1, workspace_bytes // per_channel - oc))
    oc = min(oc, max(1, workspace_bytes // per_channel - cc))
    return T, oc, cc, oparts


# The wrappers, shaped as their C twins' (fastconv/c/winograd.py): per tile m, the transformed
# filter through the shared cache, the forward, and the input gradient as a forward on the
# transposed problem.

_G = {m: matrices(m, "float64")[1] for m in (2, 4)}


def _transformed_filter(name, m, spec, w, source=None):
    """U (groups, alpha^2, og, cg) for w (or for the transposed view w of source): fastconv.common.
    winograd.transformed."""
    def transform(w5):  # a (groups, og, cg, 3, 3) weight of any strides
        alpha = m + 2
        G, og, cg = w5.shape[:3]
        wt = np.ascontiguousarray(w5.transpose(0, 1, 3, 4, 2)).reshape(G * og, 3, 3, cg)
        u = winograd.buffer(G * alpha ** 2 * og * cg, w5.dtype).reshape(G, alpha ** 2, og, cg)
        tmp = np.empty((get_num_threads(), alpha * 3 * cg))
        launch_threads()
        _transform_filter(wt, u, _G[m], tmp)
        return u, finite(u)

    return winograd.transformed(name, spec, w, transform, source)


def _forward(m, spec, x, w, bias, out=None, source=None, act=None):
    """source: for grad of input, the OIHW weights the transposed view w is made of."""
    a = m + 2
    u = _transformed_filter(f"numba.winograd_f{m}k3", m, spec, w, source)
    x = np.ascontiguousarray(x)
    y = outputs.empty(spec.output_shape, spec.dtype) if out is None else out
    bias = bias if bias is not None else np.zeros(spec.c_out, spec.dtype)
    nt = for_problem(spec)  # one thread for a small problem, as every kernel
    T, oc, cc, oparts = plan(spec, m, nt, config.workspace_bytes(), y.itemsize)
    tiles_w = -(-spec.out_w // m)
    slots = min(T, -(-T // tiles_w) + 1)  # tile rows a block touches, at most
    dt = spec.dtype
    V = np.empty((nt, cc * a * a * LANES), dt)
    M = np.empty((nt, oc * a * a * LANES), dt)
    D = np.empty((nt, a * a * LANES), dt)
    E = np.empty((nt, a * a * LANES), dt)
    BI = np.empty((nt, slots * a * (tiles_w * m + 2)), dt)
    BO = np.empty((nt, slots * m * tiles_w * m), dt)
    TI = np.empty((nt, 2, LANES), np.int64)
    SI = np.empty((nt, 4, LANES), np.int64)
    launch_threads(spec)
    _conv2d_forward(x, u, bias, y, V, M, D, E, BI, BO, TI, SI, m, spec.padding[0], spec.padding[2],
                    T, oc, cc, oparts, *activation_code(act))
    return y


WGRAD_BYTES = 4 << 20  # the weight gradient's transforms per chunk of tiles (csrc/winograd.c's FC_WINO_WGRAD_BYTES)


def _gram(m):
    """gt[i*3 + j, r*alpha + s] = G[s, i] G[r, j]: grad_w[i, j] = sum_xi gt[i*3 + j, xi] M[xi]."""
    g = _G[m]
    return np.einsum("si,rj->ijrs", g, g).reshape(9, -1)


_GT = {m: _gram(m) for m in (2, 4)}


def _backward_weight(m, spec, grad_y, x):
    a = m + 2
    G, og, cg = spec.groups, spec.c_out // spec.groups, spec.c_in // spec.groups
    dt = spec.dtype
    gw = outputs.empty(spec.weight_shape, dt)
    tiles_w = -(-spec.out_w // m)
    tiles = spec.n * -(-spec.out_h // m) * tiles_w
    per_tile = a * a * (cg + og) * gw.itemsize
    tc = min(tiles, max(LANES, min(config.workspace_bytes(), WGRAD_BYTES) // per_tile // LANES * LANES))
    nt = for_problem(spec)
    slots = min(LANES, -(-LANES // tiles_w) + 1)  # tile rows a block touches, at most
    V = np.empty((cg + og, a * a, tc), dt)
    M = np.empty((a * a, og, cg), dt)
    D, E, S = (np.empty((nt, a * a * LANES), dt) for _ in range(3))
    BI = np.empty((nt, slots * a * (tiles_w * m + 2)), dt)
    TI = np.empty((nt, 2, LANES), np.int64)
    SI = np.empty((nt, 4, LANES), np.int64)
    ACC = np.empty((nt, cg), dt)
    launch_threads(spec)
    _conv2d_backward_weight(np.ascontiguousarray(x), np.ascontiguousarray(grad_y), gw, V, M, D, E, S, BI, TI, SI,
                            ACC, _GT[m], m, spec.padding[0], spec.padding[2], tc)
    if not finite(gw):  # inf or NaN in grad_y or x (fastconv/common/nonfinite.py): im2col serves it
        raise NonFinite(f"numba.winograd_f{m}k3")
    return gw


def _backward_data(m, spec, grad_y, w):
    def forward(sub, gy, w_t, bias, out):
        return _forward(m, sub, gy, w_t, bias, out, source=w)

    return transpose.backward_data(forward, spec, grad_y, w)


def conv2d_forward_f2k3(spec, x, w, bias, out=None, *, act=None):
    return _forward(2, spec, x, w, bias, out, act=act)


def conv2d_forward_f4k3(spec, x, w, bias, out=None, *, act=None):
    return _forward(4, spec, x, w, bias, out, act=act)


def conv2d_backward_data_f2k3(spec, grad_y, w):
    return _backward_data(2, spec, grad_y, w)


def conv2d_backward_data_f4k3(spec, grad_y, w):
    return _backward_data(4, spec, grad_y, w)


def conv2d_backward_weight_f2k3(spec, grad_y, x):
    return _backward_weight(2, spec, grad_y, x)


def conv2d_backward_weight_f4k3(spec, grad_y, x):
    return _backward_weight(4, spec, grad_y, x)
