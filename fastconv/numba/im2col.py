"""im2col + GEMM conv2d in Numba (forward and backward), the twin of csrc/im2col.c.

Per image n and group g the convolution is Y_g[og][P] = W_g[og][K] . cols[K][P] with
K = cg*kH*kW taps and P = out_h*out_w pixels.  It runs as tasks of (n, g, a chunk of output rows),
and at batch 1 of a 1x1 or of a 7x7 output plane also a part of the output channels, the parts
sharing their chunk's columns, so that its threads share one plane without thin GEMMs; at batch > 1
on a 7x7 plane with many output channels a task is a run of images side by side in one GEMM
(fold):
  unfold_rows   cols[k][p] = x[n, g*cg + c, oh*sh - pt + i*dh, ow*sw - pl + j*dw] for
                k = (c, i, j) and the chunk's pixels, zero in the padding; a 1x1 stride-1
                unpadded convolution needs no unfold (the input already is cols);
  gemm          Y_g[:, chunk] = bias + W_g . cols through OpenBLAS: the same scipy-openblas32
                library, hence the same sgemm/dgemm code, as c.im2col (numba/_blas.py), run
                single-threaded in each task of a prange over tasks, so there is one thread pool
                (Numba's), not Numba and OpenBLAS pools spinning against each other.

Its vector ISA is LLVM's for the host CPU, not FASTCONV_ISA's path: fastconv/numba/_options.py says why,
with measurements.
The column buffer of each thread is bounded: n_threads * chunk <= config.workspace_bytes() (rows
are chunked by C's rule, task_rows below, at least one output row per chunk).
Backward passes reuse the phases: grad of weight = dY . cols^T (unfold_rows shared by all
threads, gemm split by grad_w's longer side; a tiny one over runs of images, weight_run), grad of
input = col2im_rows(W^T . dY) (tasks split by
input channels).  The wrappers, not the drivers, settle the chunking and allocate every buffer.

Why OpenBLAS through an ExternalFunction, not ``np.dot`` in jitted code: speed is not the reason.
Float32 n x n matmuls, every OpenBLAS copy at the same thread count, contenders interleaved with
a 0.1 s pause and an untimed call before each timed one, median of 9 (GFLOP/s, 2-core AMD EPYC):
                          2 threads             1 thread
                       n=1024   n=2048      n=1024   n=2048
    numpy ``a @ b``      172      178          92       94
    np.dot in njit       177      184          91       94
    ExternalFunction     178      184          92       94
The "np.dot in njit runs at 1/3 of numpy" seen earlier was the measuring, two effects compounding.
The process holds three OpenBLAS copies (numpy's, scipy's, scipy-openblas32), each with a thread
pool whose threads busy-wait for a while after a call: alternating two copies back to back without
a pause, each ran at 86-115 GFLOP/s instead of 172-184.  And once fastconv is imported, np.dot in
njit (scipy's cython_blas) runs this single-threaded copy, not scipy's (see common/openblas.py): 94
GFLOP/s at n=2048, against 157 when scipy's BLAS was loaded before fastconv.  The ExternalFunction
is chosen because it calls the C backend's very library (same code, one copy to keep single-
threaded) and keeps ``cache=True`` working.  (Recipe: each contender an njit function calling
np.dot(a, b, c) or gemm(...); fastconv.bench.time_interleaved(contenders, 9); thread counts set
with threadpoolctl.threadpool_limits(n) and openblas.lib.scipy_openblas_set_num_threads(n).)

Numba's cache notices edits only in this file: the helpers live here, and numba/_blas.py, the
one dependency compiled into these kernels, is ABI (BLAS_ABI below: tests/test_numba_blas.py
fails when _blas.py changes and this file does not, which would leave stale cached kernels).
"""
import numpy as np
from numba import get_thread_id, prange

from ..common import config, outputs
from ..common.im2col import why_not
from ..spec import activation_code
from ..threads import for_problem
from ._activation import activate
from ._blas import gemm
from ._options import driver, helper, launch_threads

BLAS_ABI = "c4efe2326a699faf"  # sha256 of numba/_blas.py, first 16 hex digits

# The chunking constants of csrc/im2col.c (FC_IM2COL_*), where their measurements are recorded.
CHUNK_BYTES = 4 << 20  # bytes of a chunk of cols when the GEMM barely reuses its columns
WIDE_OG = 256  # from this many output channels per group, the GEMM hides the DRAM traffic ...
MIN_COLUMNS = 2048  # ... and is given at least this many columns
SPLIT_OG = 64  # at batch 1, output channels per part at least (1x1s, 7x7 planes: forward_split)
FOLD_PIXELS = 100  # the forward folds images into one GEMM on planes of fewer pixels (fold) ...
FOLD_COLUMNS = 512  # ... up to this many columns per GEMM
FOLD_MACS = 1 << 22  # the weight gradient of a problem this small: the whole batch in one GEMM (weight_run)
U = np.uint64  # the type of flat indices in the copy loops (see gather)


def direct_cols(spec) -> bool:
    """A 1x1, stride-1, unpadded convolution needs no unfold: the input plane already is cols."""
    return (spec.kh == spec.kw == 1 and spec.stride == (1, 1) and spec.padding[0] == spec.padding[2] == 0
            and spec.out_h == spec.h and spec.out_w == spec.w)


def task_rows(spec, k, buffers, workspace_bytes, itemsize) -> int:
    """Output rows per chunk when each of `buffers` buffers holds k rows of columns (C's
    fc_im2col_rows): within the budget, and at least one."""
    og, OH, OW = spec.c_out // spec.groups, spec.out_h, spec.out_w
    if direct_cols(spec):
        return OH
    row_bytes = k * OW * itemsize
    by_cache = CHUNK_BYTES // row_bytes
    by_gemm = -(-MIN_COLUMNS // OW) if og >= WIDE_OG else 0
    return max(1, min(OH, max(by_cache, by_gemm), workspace_bytes // (buffers * row_bytes)))


def forward_split(spec, nt, rows) -> tuple:
    """(rows, oparts): the forward's rows per chunk and output-channel parts (C's rule in
    fc_conv2d_fwd_im2col, where the measurements are).  With too few tasks for the threads (batch 1)
    a 1x1 (its columns are the input) or a plane too small to give each thread SPLIT_OG columns
    splits its output channels, the parts sharing their chunk's columns; anything else its rows."""
    planes, og = spec.n * spec.groups, spec.c_out // spec.groups
    tasks = planes * -(-spec.out_h // rows)
    if tasks >= nt:
        return rows, 1
    if og >= nt * SPLIT_OG and (spec.kh * spec.kw == 1 or spec.out_h * spec.out_w < nt * SPLIT_OG):
        return rows, -(-nt // tasks)
    return max(1, min(rows, (spec.out_h * planes + nt - 1) // nt // planes)), 1  # a task per thread


def fold(spec, nt, rows, workspace_bytes, itemsize) -> int:
    """Images per task of the forward and of the grad of input, 1 for none (C's fc_im2col_fold,
    where the measurements are): at batch > 1, on planes of fewer than FOLD_PIXELS pixels with
    WIDE_OG output channels per group or more, a run of images side by side in one GEMM, as many
    runs per group as there are threads, at most FOLD_COLUMNS columns, within the budget."""
    P, og = spec.out_h * spec.out_w, spec.c_out // spec.groups
    if spec.n < 2 or rows < spec.out_h or P >= FOLD_PIXELS or og < WIDE_OG:
        return 1
    runs = -(-nt // spec.groups)
    fold = min(-(-spec.n // runs), FOLD_COLUMNS // P, workspace_bytes // (nt * (_taps(spec) + og) * P * itemsize))
    return fold if fold >= 2 else 1


def weight_run(spec, workspace_bytes, itemsize) -> int:
    """Images per GEMM of the weight gradient, 1 for one per image (C's fc_im2col_weight_run, where
    the measurements are): of a tiny problem as many as the budget holds."""
    P, og = spec.out_h * spec.out_w, spec.c_out // spec.groups
    if spec.n < 2 or og * _taps(spec) * spec.n * P > FOLD_MACS:
        return 1
    run = min(spec.n, workspace_bytes // ((_taps(spec) + og) * P * itemsize))
    return run if run >= 2 else 1


def _shape(spec):
    """What the phases read besides the arrays' shapes (C's fc_conv2d_shape), as one int tuple."""
    return (spec.kh, spec.kw, spec.out_h, spec.out_w, *spec.stride, spec.padding[0], spec.padding[2],
            *spec.dilation, spec.groups)


@helper
def inside(offset, stride, size, outputs):
    """The outputs v in [lo, hi) whose tap v*stride + offset lies in [0, size) (C's fc_inside)."""
    lo = 0 if offset >= 0 else min((-offset + stride - 1) // stride, outputs)
    hi = lo if offset >= size else max(lo, min(outputs, (size - 1 - offset) // stride + 1))
    return lo, hi


@helper
def fill(dst, at, count, value):
    """dst[at:at + count] = value (flat; unsigned indices, see gather)."""
    a = U(at)
    for v in range(U(count)):
        dst[a + v] = value


@helper
def gather(src, start, stride, dst, at, count):
    """dst[at + v] = src[start + v*stride] for v < count, on flat arrays.  The indices are unsigned
    because Numba wraps negative signed indices, a select per element that kept LLVM from
    vectorizing these loops: written with signed indices, or with per-row array slices, unfold_rows
    and col2im_rows ran 2-7x slower (VGG-16 conv1_2, conv3_2, conv5_1)."""
    s0, a0, st = U(start), U(at), U(stride)
    if stride == 1:  # the common case, as a plain copy that LLVM vectorizes
        for v in range(U(count)):
            dst[a0 + v] = src[s0 + v]
    else:
        for v in range(U(count)):
            dst[a0 + v] = src[s0 + v * st]


@helper
def scatter_add(src, at, dst, start, stride, count):
    """dst[start + v*stride] += src[at + v] for v < count, on flat arrays (the adjoint of gather)."""
    s0, a0, st = U(start), U(at), U(stride)
    for v in range(U(count)):
        dst[s0 + v * st] += src[a0 + v]


@helper
def unfold_rows(x, n, c0, cg, oh0, rows, cols, off, ld, s):
    """cols[off + k*ld + q] for the pixels q = (oh - oh0)*out_w + ow of output rows
    [oh0, oh0 + rows) and the taps k = (c, i, j) of channels c0 .. c0 + cg."""
    kh, kw, _, OW, sh, sw, pt, pl, dh, dw, _ = s
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(x.size)
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                dst = off + ((c * kh + i) * kw + j) * ld
                iw0 = j * dw - pl  # iw = ow * sw + iw0
                v_lo, v_hi = inside(iw0, sw, W, OW)
                for r in range(rows):
                    ih = (oh0 + r) * sh - pt + i * dh
                    if ih < 0 or ih >= H:
                        fill(cols, dst + r * OW, OW, 0)
                        continue
                    src = ((n * C + c0 + c) * H + ih) * W + iw0
                    fill(cols, dst + r * OW, v_lo, 0)
                    gather(xf, src + v_lo * sw, sw, cols, dst + r * OW + v_lo, v_hi - v_lo)
                    fill(cols, dst + r * OW + v_hi, OW - v_hi, 0)


@helper
def fold_task(t, groups, fold, images):
    """(group, first image, images) of task t of a folded driver, the groups varying fastest."""
    g, n0 = t % groups, t // groups * fold
    return g, n0, min(fold, images - n0)


@helper
def col2im_rows(dcols, off, ld, gx, n, c0, cg, oh0, rows, s):
    """gx[n, c0 + c, ih, iw] += dcols[off + k*ld + q], the adjoint of unfold_rows (same walk, scatter)."""
    kh, kw, _, OW, sh, sw, pt, pl, dh, dw, _ = s
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    gxf = gx.reshape(gx.size)
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                src = off + ((c * kh + i) * kw + j) * ld
                iw0 = j * dw - pl
                v_lo, v_hi = inside(iw0, sw, W, OW)
                for r in range(rows):
                    ih = (oh0 + r) * sh - pt + i * dh
                    if ih < 0 or ih >= H:
                        continue
                    dst = ((n * C + c0 + c) * H + ih) * W + iw0
                    scatter_add(dcols, src + r * OW + v_lo, gxf, dst + v_lo * sw, sw, v_hi - v_lo)


@driver
def _unfold_chunks(x, cols, s, rows):
    """cols[chunk] for every (image, group, chunk of rows), the threads splitting them by input
    channel: the columns the output-channel parts of a chunk share."""
    kh, kw, OH, OW, _, _, _, _, _, _, groups = s
    N, C = x.shape[0], x.shape[1]
    cg, chunks = C // groups, (OH + rows - 1) // rows
    for u in prange(N * groups * chunks * cg):
        c, pc = u % cg, u // cg
        chunk, g, n = pc % chunks, (pc // chunks) % groups, pc // (chunks * groups)
        r = min(rows, OH - chunk * rows)
        unfold_rows(x, n, g * cg + c, 1, chunk * rows, r, cols[pc], c * kh * kw * r * OW, r * OW, s)


@driver
def _conv2d_forward(x, w, bias, y, cols, s, rows, oparts, direct, shared, act, slope):
    """y = activation(conv2d(x, w) + bias); tasks are (image, group, chunk of rows, part of the
    output channels).  cols is (threads, K * rows * out_w): one buffer per thread, or (shared) one
    per chunk, filled by _unfold_chunks."""
    kh, kw, OH, OW, _, _, _, _, _, _, groups = s
    N, C, H, W = x.shape
    O = w.shape[0]
    cg, og = C // groups, O // groups
    K, P = cg * kh * kw, OH * OW
    chunks = (OH + rows - 1) // rows
    oblock = (og + oparts - 1) // oparts
    yf = y.reshape(y.size)
    for t in prange(N * groups * chunks * oparts):
        o0, tc = (t % oparts) * oblock, t // oparts
        m = min(oblock, og - o0)
        chunk, g, n = tc % chunks, (tc // chunks) % groups, tc // (chunks * groups)
        oh0 = chunk * rows
        r = min(rows, OH - oh0)
        width = r * OW
        yg = (n * O + g * og + o0) * P + oh0 * OW  # where Y_g[o0:, chunk] starts in y
        if m <= 0:
            continue
        for o in range(m):
            fill(yf, yg + o * P, width, bias[g * og + o0 + o])
        if direct:  # B is the input plane itself
            gemm(False, False, m, width, K, 1.0, w, (g * og + o0) * K, K,
                 x, (n * C + g * cg) * H * W + oh0 * OW, P, 1.0, y, yg, P)
        else:
            mine = cols[tc] if shared else cols[get_thread_id()]
            if not shared:
                unfold_rows(x, n, g * cg, cg, oh0, r, mine, 0, width, s)
            gemm(False, False, m, width, K, 1.0, w, (g * og + o0) * K, K, mine, 0, width, 1.0, y, yg, P)
        if act:  # the task's outputs, just written by the GEMM
            for o in range(m):
                activate(yf[yg + o * P:yg + o * P + width], act, slope)


@driver
def _conv2d_forward_folded(x, w, bias, y, work, s, fold, act, slope):
    """y = activation(conv2d(x, w) + bias) with `fold` images per task (the function fold): the task's
    images unfolded side by side, one GEMM into the thread's buffer (work, one row per thread), then
    copied out plane by plane with the bias and the activation."""
    kh, kw, OH, OW, _, _, _, _, _, _, groups = s
    N, C = x.shape[0], x.shape[1]
    O = w.shape[0]
    cg, og = C // groups, O // groups
    K, P = cg * kh * kw, OH * OW
    yf = y.reshape(y.size)
    for t in prange(groups * ((N + fold - 1) // fold)):
        g, n0, nb = fold_task(t, groups, fold, N)
        width = nb * P
        mine = work[get_thread_id()]
        for j in range(nb):
            unfold_rows(x, n0 + j, g * cg, cg, 0, OH, mine, j * P, width, s)
        gemm(False, False, og, width, K, 1.0, w, g * og * K, K, mine, 0, width, 0.0, mine, K * width, width)
        for j in range(nb):
            for o in range(og):
                dst, src, bo = ((n0 + j) * O + g * og + o) * P, K * width + o * width + j * P, bias[g * og + o]
                for p in range(P):
                    yf[U(dst) + U(p)] = mine[U(src) + U(p)] + bo
                if act:
                    activate(yf[dst:dst + P], act, slope)


@driver
def _conv2d_backward_weight(gy, x, gw, cols, s, rows, direct, parts):
    """gw += sum over images and pixels of dY . cols^T; gw is zeroed, cols one shared buffer.  The
    GEMM is split by grad_w's longer side, its columns (taps) where K >= og (csrc/im2col.c)."""
    kh, kw, OH, OW, _, _, _, _, _, _, groups = s
    N, C, H, W = x.shape
    O = gw.shape[0]
    cg, og, taps = C // groups, O // groups, kh * kw
    K, P = cg * taps, OH * OW
    chunks = (OH + rows - 1) // rows
    by_columns = K >= og
    side = K if by_columns else og
    block = (side + parts - 1) // parts
    block = (block + 15) // 16 * 16
    xf = x.reshape(x.size)
    for n in range(N):
        for g in range(groups):
            for chunk in range(chunks):
                oh0 = chunk * rows
                r = min(rows, OH - oh0)
                width = r * OW
                gyg = (n * O + g * og) * P + oh0 * OW
                b, b0, ldb = xf, (n * C + g * cg) * H * W + oh0 * OW, P
                if not direct:
                    for c in prange(cg):  # the threads unfold the shared chunk together
                        unfold_rows(x, n, g * cg + c, 1, oh0, r, cols, c * taps * width, width, s)
                    b, b0, ldb = cols, 0, width
                for part in prange(parts):  # each thread owns its columns (or rows) of grad_w
                    lo = part * block
                    m = min(block, side - lo)
                    if m > 0 and by_columns:
                        gemm(False, True, og, m, width, 1.0, gy, gyg, P, b, b0 + lo * ldb, ldb,
                             1.0, gw, g * og * K + lo, K)
                    elif m > 0:
                        gemm(False, True, m, K, width, 1.0, gy, gyg + lo * P, P, b, b0, ldb,
                             1.0, gw, (g * og + lo) * K, K)


@driver
def _conv2d_backward_weight_runs(gy, x, gw, work, s, run, parts):
    """gw = sum over images and pixels of dY . cols^T over runs of `run` images, each run's columns
    and dY laid out [row][image][pixel] in work (one buffer), so one GEMM reduces over all the run's
    pixels; the threads unfold a run together, then split its GEMM by grad_w's longer side."""
    kh, kw, OH, OW, _, _, _, _, _, _, groups = s
    N, C = x.shape[0], x.shape[1]
    O = gw.shape[0]
    cg, og, taps = C // groups, O // groups, kh * kw
    K, P = cg * taps, OH * OW
    by_columns = K >= og
    side = K if by_columns else og
    block = (side + parts - 1) // parts
    block = (block + 15) // 16 * 16
    gyf = gy.reshape(gy.size)
    for g in range(groups):
        for n0 in range(0, N, run):
            nb = min(run, N - n0)
            width = nb * P
            dyt = K * width  # where dY starts in work
            for u in prange(nb * (cg + 1)):  # image j's channel c, or (c == cg) its dY
                j, c = u // (cg + 1), u % (cg + 1)
                if c < cg:
                    unfold_rows(x, n0 + j, g * cg + c, 1, 0, OH, work, c * taps * width + j * P, width, s)
                else:
                    for o in range(og):
                        gather(gyf, ((n0 + j) * O + g * og + o) * P, 1, work, dyt + o * width + j * P, P)
            beta = 1.0 if n0 else 0.0
            for part in prange(parts):
                lo = part * block
                m = min(block, side - lo)
                if m > 0 and by_columns:
                    gemm(False, True, og, m, width, 1.0, work, dyt, width, work, lo * width, width,
                         beta, gw, g * og * K + lo, K)
                elif m > 0:
                    gemm(False, True, m, K, width, 1.0, work, dyt + lo * width, width, work, 0, width,
                         beta, gw, (g * og + lo) * K, K)


@driver
def _conv2d_backward_data_folded(gy, w, gx, work, s, fold):
    """gx = col2im(W^T . dY) with `fold` images per task (the function fold); gx is zeroed, work one
    row per thread: the task's dY side by side, one GEMM into the rest of the row, col2im image by
    image."""
    kh, kw, OH, OW, _, _, _, _, _, _, groups = s
    N, C = gx.shape[0], gx.shape[1]
    O = w.shape[0]
    cg, og = C // groups, O // groups
    K, P = cg * kh * kw, OH * OW
    gyf = gy.reshape(gy.size)
    for t in prange(groups * ((N + fold - 1) // fold)):
        g, n0, nb = fold_task(t, groups, fold, N)
        width = nb * P
        mine = work[get_thread_id()]
        for j in range(nb):
            for o in range(og):
                gather(gyf, ((n0 + j) * O + g * og + o) * P, 1, mine, o * width + j * P, P)
        gemm(True, False, K, width, og, 1.0, w, g * og * K, K, mine, 0, width, 0.0, mine, og * width, width)
        for j in range(nb):
            col2im_rows(mine, og * width + j * P, width, gx, n0 + j, g * cg, cg, 0, OH, s)


@driver
def _conv2d_backward_data(gy, w, gx, dcols, s, rows, direct, cb):
    """gx = col2im(W^T . dY); gx is zeroed unless direct; dcols one buffer per thread.  Tasks are
    (image, group, block of cb input channels) and each walks every row chunk of its plane alone:
    k = (c, i, j) is channel-major, so the GEMM over the task's rows of W^T yields exactly its
    channels' rows of dcols, and col2im writes only those channels of gx (see csrc/im2col.c)."""
    kh, kw, OH, OW, _, _, _, _, _, _, groups = s
    N, C, H, W = gx.shape
    O = w.shape[0]
    cg, og, taps = C // groups, O // groups, kh * kw
    K, P = cg * taps, OH * OW
    chunks = (OH + rows - 1) // rows
    cblocks = (cg + cb - 1) // cb
    for t in prange(N * groups * cblocks):
        c0, plane = (t % cblocks) * cb, t // cblocks
        nc = min(cb, cg - c0)
        g, n = plane % groups, plane // groups
        wc = g * og * K + c0 * taps  # columns c0*taps.. of W_g, i.e. rows of W_g^T
        for chunk in range(chunks):
            oh0 = chunk * rows
            r = min(rows, OH - oh0)
            width = r * OW
            gyg = (n * O + g * og) * P + oh0 * OW
            if direct:  # the columns are the input plane itself: write it directly
                gemm(True, False, nc, width, og, 1.0, w, wc, K, gy, gyg, P,
                     0.0, gx, (n * C + g * cg + c0) * H * W + oh0 * OW, P)
            else:
                mine = dcols[get_thread_id()]
                gemm(True, False, nc * taps, width, og, 1.0, w, wc, K, gy, gyg, P, 0.0, mine, 0, width)
                col2im_rows(mine, 0, width, gx, n, g * cg + c0, nc, oh0, r, s)


def _check(spec):
    reason = why_not(spec)
    if reason:  # the registry refuses such a spec first; this keeps a direct call from overflowing
        raise ValueError(f"numba.im2col: {reason}")


def _columns(spec, buffers, k, rows):
    """The column buffers: `buffers` of k * rows * out_w elements (none when the input is cols)."""
    size = 0 if direct_cols(spec) else k * rows * spec.out_w
    return np.empty((buffers, size), spec.dtype)


def _taps(spec):
    return spec.c_in // spec.groups * spec.kh * spec.kw


def conv2d_forward(spec, x, w, bias, *, act=None):
    _check(spec)
    nt = for_problem(spec)
    y = outputs.empty(spec.output_shape, spec.dtype)
    bias = bias if bias is not None else np.zeros(spec.c_out, spec.dtype)
    rows = task_rows(spec, _taps(spec), nt, config.workspace_bytes(), y.itemsize)
    images = fold(spec, nt, rows, config.workspace_bytes(), y.itemsize)
    if images > 1:
        work = np.empty((nt, (_taps(spec) + spec.c_out // spec.groups) * images * spec.out_h * spec.out_w), spec.dtype)
        launch_threads(spec)
        _conv2d_forward_folded(x, w, bias, y, work, _shape(spec), images, *activation_code(act))
        return y
    rows, oparts = forward_split(spec, nt, rows)
    cols = _columns(spec, nt, _taps(spec), rows)
    shared = oparts > 1 and not direct_cols(spec)
    launch_threads(spec)
    if shared:
        _unfold_chunks(x, cols, _shape(spec), rows)
    _conv2d_forward(x, w, bias, y, cols, _shape(spec), rows, oparts, direct_cols(spec), shared,
                    *activation_code(act))
    return y


def conv2d_backward_data(spec, grad_y, w):
    _check(spec)
    nt, direct = for_problem(spec), direct_cols(spec)
    grad_x = (outputs.empty if direct else outputs.zeros)(spec.input_shape, spec.dtype)
    cg, planes = spec.c_in // spec.groups, spec.n * spec.groups
    split = min(cg, -(-nt // planes))  # channel blocks per plane: a task per thread
    cb = -(-cg // split)
    rows = task_rows(spec, cb * spec.kh * spec.kw, nt, config.workspace_bytes(), grad_x.itemsize)
    images = fold(spec, nt, rows, config.workspace_bytes(), grad_x.itemsize)
    launch_threads(spec)
    if images > 1:
        if direct:  # the folded driver scatters into gx (np.zeros above otherwise)
            grad_x[...] = 0
        work = np.empty((nt, (_taps(spec) + spec.c_out // spec.groups) * images * spec.out_h * spec.out_w), spec.dtype)
        _conv2d_backward_data_folded(grad_y, w, grad_x, work, _shape(spec), images)
        return grad_x
    dcols = _columns(spec, nt, cb * spec.kh * spec.kw, rows)
    _conv2d_backward_data(grad_y, w, grad_x, dcols, _shape(spec), rows, direct, cb)
    return grad_x


def conv2d_backward_weight(spec, grad_y, x):
    _check(spec)
    nt = for_problem(spec)
    grad_w = outputs.zeros(spec.weight_shape, spec.dtype)
    og, K = spec.c_out // spec.groups, _taps(spec)
    parts = min(nt, (max(K, og) + 15) // 16)  # of grad_w's longer side (as C's)
    run = weight_run(spec, config.workspace_bytes(), grad_w.itemsize)
    launch_threads(spec)
    if run > 1:
        work = np.empty((K + og) * run * spec.out_h * spec.out_w, spec.dtype)
        _conv2d_backward_weight_runs(grad_y, x, grad_w, work, _shape(spec), run, parts)
        return grad_w
    rows = task_rows(spec, K, 1, config.workspace_bytes(), grad_w.itemsize)  # one shared buffer
    cols = _columns(spec, 1, K, rows)[0]
    _conv2d_backward_weight(grad_y, x, grad_w, cols, _shape(spec), rows, direct_cols(spec), parts)
    return grad_w
