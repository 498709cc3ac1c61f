/* Depthwise conv2d, the twin of fastconv/numba/depthwise.py: groups = C_in, one input channel per
 * group and og = C_out / groups outputs of it (the channel multiplier), any stride, padding and
 * dilation, all three passes.  (The forward serves any cg x og per group, as it once ran the grad
 * of input's transposed problems; the Python side keeps it to depthwise problems,
 * fastconv/common/depthwise.py.)
 *
 * A depthwise layer does 2 * kH * kW flops per output and per input element it reads: its limit is
 * memory traffic, not multiply-adds, and a GEMM (im2col) or a channel-blocked microkernel (direct)
 * spends its time on packing and on tiles that are mostly padding.
 * So each plane is worked along its rows, in the NCHW layout it arrives in, as one flat run:
 *   copy_plane   the input plane, once per task, into a zero-padded copy split by stride phase
 *                in both axes (fc_flat.h, which direct_flat.c shares): tap (c, i, j) of every
 *                output reads it at one offset from the output's flat index oh * pitch + ow, so the
 *                outputs are computed as one flat run (the columns past each row computed and
 *                dropped): a 7x7 plane is 63 flat outputs, 4 zmm, not 7 rows of one mostly empty
 *                vector each, and the hot loop has no bounds checks and no gathers;
 *   flat_tile    NV vectors of that run in registers: bias, then per tap one broadcast weight
 *                and NV unaligned loads of xq, FMAs; stored to a small buffer (a chunk of rows
 *                that stays in L1) whose rows are copied into y;
 *   weight grad  per tap the dot products of gy's rows with the tap's rows of xq (out_w columns
 *                each, the last vector masked), in vector partial sums, summed over the batch in
 *                a fixed order (deterministic at any thread count);
 *   grad input   the inputs split by stride phase instead, all reading one copy of each gy plane
 *                (fc_dw_data_window below says how), each phase a flat run as in the forward.
 * Tasks: runs of consecutive planes (n, g), a few per thread (dynamic scheduling); a 7x7 plane is
 * too small a task alone.  Each thread owns one plane copy of cg channels and its gathered
 * weights.  The copy is bounded by the Python side (fastconv/common/depthwise.py's COPY_LIMIT), so a
 * hostile dilation or padding goes to another kernel instead of failing here.
 *
 * On AVX-512 and AVX2, multiplier 1 takes a channel-blocked path instead, as ONNX Runtime's and
 * oneDNN's NCHWc depthwise kernels do, but reading and writing NCHW: a plane of 14x14 or 7x7 is
 * so little work per copy (a 7x7 output is 4 vectors of the flat run, 9 taps) that the phase-split
 * copy, the row ends and the per-plane set-up were most of the time (576@14x14 stride 2 ran at
 * 2 GB/s), and on larger planes the blocks still won a little.  Per task item (image, block of VLEN channels):
 *   block_fill   the block's input planes, transposed into a zero-padded (rows, cols, VLEN) copy:
 *                every pixel one vector of VLEN channels, lanes past the last channel zero;
 *   block_tile   PX outputs of a row in registers, each a vector of the block's channels: per tap
 *                one vector of the block's weights and PX aligned loads, FMAs -- no lane idle on
 *                a 7x7 plane, no copy split by stride phase (a stride is a step between pixels);
 *   then each output row's vectors, transposed back into the block's y rows.
 * It is chosen when the padded copy of one block fits FC_DW_BLOCK_BYTES (within L2) and there are
 * channels for half a vector or more (fc_dw_blocked; BENCHMARKS.md has the A/B).
 *
 * The hot loops are compiled once per vector ISA (fc_per_isa.h: generic, avx2, avx512, each with
 * its vector width FC_VBYTES) and the shape's isa picks one per call.
 *
 * The file is a template in two levels: it includes itself once per dtype with FC_T / FC_SFX set,
 * and each of those once per ISA.
 */
#ifndef FC_T

#include "fc_flat.h"
#if FC_X86
#include <immintrin.h> /* AVX-512's masked loads and stores, for the ends of short rows */
#endif

#define FC_DW_TASKS_PER_THREAD 8 /* runs of planes per thread: balance without tiny tasks */
#define FC_DW_NV 4               /* vectors of the flat run per register tile */

#define FC_DW_CHUNK_ELEMS 2048 /* flat outputs per chunk: 8 KB of float32 */
#ifndef FC_DW_BLOCK_BYTES
#define FC_DW_BLOCK_BYTES (1 << 20) /* the channel-blocked path up to this padded copy per block (in L2) */
#endif
#ifndef FC_DW_LAYOUT /* 0: chosen per problem, 1: rows, 2: channel blocks wherever they serve (A/B builds) */
#define FC_DW_LAYOUT 0
#endif

/* The channel-blocked path's zero-padded copy: the input rows and columns its outputs read. */
static int64_t fc_dw_block_rows(const fc_conv2d_shape *s) {
    return (s->out_h - 1) * s->stride_h + (s->kh - 1) * s->dilation_h + 1;
}
static int64_t fc_dw_block_cols(const fc_conv2d_shape *s) {
    return (s->out_w - 1) * s->stride_w + (s->kw - 1) * s->dilation_w + 1;
}

/* 1 when the channel-blocked path runs s, for vectors of vlen elements of `elem` bytes: one input
 * and one output channel per group (the multiplier's planes stay on the rows), channels for at
 * least half a vector, a block's copy within bound, and a vector ISA.  On AVX2 it once lost
 * 1.1-4x to the rows, when its partial loads and stores went through libc's memcpy; with masked
 * ones (AMD EPYC Zen 3, 2 threads, MobileNet-v2's ten depthwise shapes) it runs them in 0.36-1.16x
 * the rows' time at batch 1 and 0.36-0.96x at batch 8, the slower two being 112x112 and 56x56
 * planes at stride 1 and batch 1.  The generic path (SSE2's 4 lanes) keeps the rows: its blocks
 * were 0.5-1.25x the rows' time at batch 8 (BENCHMARKS.md). */
static int fc_dw_blocked(const fc_conv2d_shape *s, int64_t vlen, int64_t elem) {
    if (s->groups != s->c_in || s->c_out != s->c_in || FC_DW_LAYOUT == 1) return 0;
    if (FC_DW_LAYOUT == 2) return 1;
    return fc_isa(s->isa) != FC_ISA_GENERIC && 2 * s->groups >= vlen &&
           fc_dw_block_rows(s) * fc_dw_block_cols(s) * vlen * elem <= FC_DW_BLOCK_BYTES;
}

/* Output rows per chunk of the flat run (its buffer stays in L1). */
static int64_t fc_dw_chunk(const fc_conv2d_shape *s, const fc_flat_layout *L) {
    return fc_max64(1, fc_min64(s->out_h, FC_DW_CHUNK_ELEMS / L->pitch));
}

/* Runs of consecutive planes (or groups) for `nt` threads. */
static int64_t fc_dw_run(int64_t items, int64_t nt) {
    const int64_t tasks = fc_min64(items, FC_DW_TASKS_PER_THREAD * nt);
    return (items + tasks - 1) / tasks;
}

/* The grad of input, directly (not the forward on transpose.py's problems, one call and one gy copy
 * per stride phase, then a strided scatter in NumPy: 2.6x a stride-1 layer's time at stride 2 on
 * AMD EPYC Zen 3).  gx[ih][iw] sums w[i][j] * gy[oh][ow] over the taps with oh * sh = ih + pt - i * dh.
 * Split the inputs by phase, ih = u * sh + rh: tap i reaches phase rh when (rh + pt - i * dh) % sh
 * is 0, and then reads gy row u + d_i, d_i = (rh + pt - i * dh) / sh, the same for every u (columns
 * alike).  So every phase reads one zero-padded copy of the gy plane, the window of rows
 * [r0, r0 + rows) and columns [c0, c0 + pitch) that some tap reaches, at one offset per tap, and its
 * outputs are a flat run as in the forward; the phases' runs are written into gx's rows, two column
 * phases interleaved at stride 2. */
typedef struct {
    int64_t r0, rows, c0, pitch;
} fc_dw_window;

/* The taps of phase r along one axis (stride, dilation, k taps, padding pad): their indices and
 * offsets d, in tap[]/d[] (k entries at most); returns how many. */
static int64_t fc_dw_phase_taps(int64_t r, int64_t stride, int64_t dilation, int64_t k, int64_t pad, int64_t *tap,
                                int64_t *d) {
    int64_t m = 0;
    for (int64_t i = 0; i < k; i++) {
        const int64_t a = r + pad - i * dilation;
        if (((a % stride) + stride) % stride == 0) {
            tap[m] = i;
            d[m++] = a / stride; /* exact */
        }
    }
    return m;
}

/* Inputs of phase r along an axis of `size` inputs at this stride. */
static int64_t fc_dw_phase_len(int64_t r, int64_t stride, int64_t size) {
    return r < size ? (size - r + stride - 1) / stride : 0;
}

/* The gy indices [*lo, *hi) that the taps of one axis reach, over the phases of its `size` inputs
 * (tap, d: scratch for fc_dw_phase_taps). */
static void fc_dw_axis_window(int64_t stride, int64_t dilation, int64_t k, int64_t pad, int64_t size, int64_t *lo,
                              int64_t *hi, int64_t *tap, int64_t *d) {
    *lo = INT64_MAX;
    *hi = INT64_MIN;
    for (int64_t r = 0; r < fc_min64(stride, size); r++) {
        const int64_t m = fc_dw_phase_taps(r, stride, dilation, k, pad, tap, d), len = fc_dw_phase_len(r, stride, size);
        for (int64_t t = 0; t < m; t++) {
            *lo = fc_min64(*lo, d[t]);
            *hi = fc_max64(*hi, len - 1 + d[t] + 1);
        }
    }
    if (*lo > *hi) *lo = *hi = 0; /* no tap reaches any input: gx is zero */
}

/* tap, d: scratch of max(kh, kw) entries. */
static fc_dw_window fc_dw_data_window(const fc_conv2d_shape *s, int64_t *tap, int64_t *d) {
    fc_dw_window win;
    int64_t hi;
    fc_dw_axis_window(s->stride_h, s->dilation_h, s->kh, s->pad_top, s->h, &win.r0, &hi, tap, d);
    win.rows = hi - win.r0;
    fc_dw_axis_window(s->stride_w, s->dilation_w, s->kw, s->pad_left, s->w, &win.c0, &hi, tap, d);
    /* at least phase 0's inputs per row: the runs' rows are this pitch apart in the buffers too */
    win.pitch = fc_max64(hi - win.c0, fc_dw_phase_len(0, s->stride_w, s->w));
    return win;
}

/* Elements of one gy plane's copy: the window, a zero row past it and a vector (what the runs read). */
static int64_t fc_dw_data_psize(const fc_dw_window *win, int64_t vlen) {
    return (win->rows + 1) * win->pitch + vlen;
}

#define FC_T float
#define FC_IT int32_t /* the integer of FC_T's size, and that size: the transposes' shuffle indices */
#define FC_TBYTES 4
#define FC_SFX(name) name##_f32
#include "depthwise.c"
#undef FC_T
#undef FC_IT
#undef FC_TBYTES
#undef FC_SFX

#define FC_T double
#define FC_IT int64_t
#define FC_TBYTES 8
#define FC_SFX(name) name##_f64
#include "depthwise.c"
#undef FC_T
#undef FC_IT
#undef FC_TBYTES
#undef FC_SFX

#elif !defined(FC_ISA_SFX) /* level 1, per dtype: the hot loops once per ISA, then the entries */

#define FC_PER_ISA_FILE "depthwise.c"
#include "fc_per_isa.h"
#undef FC_PER_ISA_FILE

typedef void (*FC_SFX(dw_fwd_fn))(const FC_T *, const FC_T *, const fc_weight_strides *, const FC_T *,
                                  FC_T *, const fc_conv2d_shape *, const int64_t *, int64_t, int64_t, FC_T *);
typedef void (*FC_SFX(dw_block_fn))(const FC_T *, const FC_T *, const fc_weight_strides *, const FC_T *, FC_T *,
                                    const fc_conv2d_shape *, int64_t, int64_t, FC_T *);
typedef void (*FC_SFX(dw_bwd_data_fn))(const FC_T *, const FC_T *, FC_T *, const fc_conv2d_shape *,
                                       const fc_dw_window *, int64_t, int64_t, FC_T *);
typedef void (*FC_SFX(dw_bwd_weight_fn))(const FC_T *, const FC_T *, FC_T *, const fc_conv2d_shape *,
                                         const int64_t *, int64_t, int64_t, FC_T *);
/* Vector elements of the ISA a call runs (its copies' slack is a vector), from that ISA's level 2. */
#define FC_DW_VLEN(isa) (FC_ISA_PICK(isa, dw_vlen)())

/* The channel-blocked path: tasks of consecutive (image, block) items, one padded block copy, a
 * row of outputs, the block's weights and bias per thread. */
static int FC_SFX(fc_dw_fwd_blocked)(const FC_T *x, const FC_T *w, const fc_weight_strides *ws, const FC_T *bias,
                                     FC_T *y, const fc_conv2d_shape *s, int64_t nt) {
    const int64_t vlen = FC_DW_VLEN(s->isa), blocks = (s->c_in + vlen - 1) / vlen, items = s->n * blocks;
    const int64_t per_thread = fc_round_up(fc_dw_block_rows(s) * fc_dw_block_cols(s) * vlen, 16) +
                               fc_round_up(fc_round_up(s->out_w, vlen) * vlen, 16) +
                               fc_round_up((s->kh * s->kw + 1) * vlen, 16);
    const int64_t run = fc_dw_run(items, nt), tasks = (items + run - 1) / run;
    const FC_SFX(dw_block_fn) task = FC_ISA_PICK(s->isa, dw_block_task);
    FC_T *work = fc_alloc((size_t)(nt * per_thread) * sizeof(FC_T));
    if (!work) return FC_ENOMEM;
    FC_OMP_PARALLEL_FOR(nt)
    for (int64_t t = 0; t < tasks; t++)
        task(x, w, ws, bias, y, s, t * run, fc_min64(items, (t + 1) * run), work + (int64_t)FC_THREAD_ID() * per_thread);
    fc_free(work);
    return FC_OK;
}

int FC_SFX(fc_conv2d_fwd_depthwise)(const FC_T *x, const FC_T *w, const fc_weight_strides *ws,
                                    const FC_T *bias, FC_T *y, const fc_conv2d_shape *s, int n_threads) {
    const int64_t nt = n_threads > 0 ? n_threads : 1, cg = s->c_in / s->groups, og = s->c_out / s->groups;
    const int64_t taps = s->kh * s->kw, planes = s->n * s->groups;
    const fc_weight_strides contiguous = {og * cg * taps, cg * taps, taps, s->kw, 1};
    if (fc_dw_blocked(s, FC_DW_VLEN(s->isa), (int64_t)sizeof(FC_T)))
        return FC_SFX(fc_dw_fwd_blocked)(x, w, ws ? ws : &contiguous, bias, y, s, nt);
    const fc_flat_layout L = fc_flat_make_layout(s, s->out_h, FC_DW_VLEN(s->isa));
    /* per thread: the copies, a chunk's buffer, the gathered weights (each 64-byte aligned) */
    const int64_t per_thread = fc_round_up(cg * L.csize, 16) + fc_round_up(fc_dw_chunk(s, &L) * L.pitch, 16) + 16 +
                               fc_round_up(cg * taps, 16);
    const int64_t run = fc_dw_run(planes, nt), tasks = (planes + run - 1) / run;
    const FC_SFX(dw_fwd_fn) task = FC_ISA_PICK(s->isa, dw_fwd_task);
    FC_T *work = fc_alloc((size_t)(nt * per_thread) * sizeof(FC_T));
    int64_t *toff = fc_flat_tap_offsets(s, &L, cg);
    if (!work || !toff) {
        fc_free(work);
        fc_free(toff);
        return FC_ENOMEM;
    }
    if (!ws) ws = &contiguous;
    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++)
        task(x, w, ws, bias, y, s, toff, t * run, fc_min64(planes, (t + 1) * run),
             work + (int64_t)FC_THREAD_ID() * per_thread);
    fc_free(work);
    fc_free(toff);
    return FC_OK;
}

int FC_SFX(fc_conv2d_bwd_data_depthwise)(const FC_T *gy, const FC_T *w, FC_T *gx, const fc_conv2d_shape *s,
                                         int n_threads) {
    const int64_t nt = n_threads > 0 ? n_threads : 1, og = s->c_out / s->groups, vlen = FC_DW_VLEN(s->isa);
    const int64_t planes = s->n * s->groups, kmax = fc_max64(s->kh, s->kw);
    int64_t *scratch = fc_alloc((size_t)(2 * kmax) * sizeof(int64_t));
    if (!scratch) return FC_ENOMEM;
    const fc_dw_window win = fc_dw_data_window(s, scratch, scratch + kmax);
    fc_free(scratch);
    const int64_t U = fc_dw_phase_len(0, s->stride_h, s->h), chunk = fc_max64(1, fc_min64(U, FC_DW_CHUNK_ELEMS / win.pitch));
    /* per thread: og gy copies, a chunk's buffer per column phase written together (two at most:
     * stride 2's pair, interleaved), the phase's weights and tap offsets */
    const int64_t per_thread = fc_round_up(og * fc_dw_data_psize(&win, vlen), 16) +
                               2 * (fc_round_up(chunk * win.pitch, 16) + 16) + fc_round_up(og * s->kh * s->kw, 16) +
                               fc_round_up((og * s->kh * s->kw + 2 * (s->kh + s->kw)) * (int64_t)(sizeof(int64_t) / sizeof(FC_T)), 16);
    const int64_t run = fc_dw_run(planes, nt), tasks = (planes + run - 1) / run;
    const FC_SFX(dw_bwd_data_fn) task = FC_ISA_PICK(s->isa, dw_bwd_data_task);
    FC_T *work = fc_alloc((size_t)(nt * per_thread) * sizeof(FC_T));
    if (!work) return FC_ENOMEM;
    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++)
        task(gy, w, gx, s, &win, t * run, fc_min64(planes, (t + 1) * run), work + (int64_t)FC_THREAD_ID() * per_thread);
    fc_free(work);
    return FC_OK;
}

int FC_SFX(fc_conv2d_bwd_weight_depthwise)(const FC_T *gy, const FC_T *x, FC_T *gw,
                                           const fc_conv2d_shape *s, int n_threads) {
    const int64_t nt = n_threads > 0 ? n_threads : 1, og = s->c_out / s->groups;
    const fc_flat_layout L = fc_flat_make_layout(s, s->out_h, FC_DW_VLEN(s->isa));
    /* per thread: the copy of x, og * taps sums */
    const int64_t per_thread = fc_round_up(L.csize, 16) + fc_round_up(og * s->kh * s->kw, 16);
    const int64_t run = fc_dw_run(s->groups, nt), tasks = (s->groups + run - 1) / run;
    const FC_SFX(dw_bwd_weight_fn) task = FC_ISA_PICK(s->isa, dw_bwd_weight_task);
    FC_T *work = fc_alloc((size_t)(nt * per_thread) * sizeof(FC_T));
    int64_t *toff = fc_flat_tap_offsets(s, &L, 1);
    if (!work || !toff) {
        fc_free(work);
        fc_free(toff);
        return FC_ENOMEM;
    }
    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++)
        task(gy, x, gw, s, toff, t * run, fc_min64(s->groups, (t + 1) * run),
             work + (int64_t)FC_THREAD_ID() * per_thread);
    fc_free(work);
    fc_free(toff);
    return FC_OK;
}

#undef FC_DW_VLEN

#else /* level 2, the hot loops for one dtype (FC_T) and one ISA (FC_ISA_SFX, FC_TARGET, FC_VBYTES) */

typedef FC_T FC_ISA_SFX(fc_dw_vec) __attribute__((vector_size(FC_VBYTES), aligned(sizeof(FC_T))));
#define VEC FC_ISA_SFX(fc_dw_vec) /* one vector register, loaded and stored at any element */
#define VLEN ((int64_t)(FC_VBYTES / sizeof(FC_T)))

#define FC_VEC_U VEC
#include "fc_flat_copy.h"
#undef FC_VEC_U

FC_TARGET static int64_t FC_ISA_SFX(dw_vlen)(void) { return VLEN; }

#if FC_X86 && FC_VBYTES == 32
/* AVX2's mask of a vector's first len (< VLEN) lanes of FC_T, for vmaskmov (the lanes off it are
 * neither read nor written): the ends of rows in the weight gradient and the channel blocks. */
FC_TARGET FC_INLINE __m256i FC_ISA_SFX(lanes_below)(int64_t len) {
    return sizeof(FC_T) == 4 ? _mm256_cmpgt_epi32(_mm256_set1_epi32((int)len), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
                             : _mm256_cmpgt_epi64(_mm256_set1_epi64x(len), _mm256_setr_epi64x(0, 1, 2, 3));
}
#endif

/* out[0 : nv vectors] = b + the sum over the taps t of wl[t] * xq[toff[t] + 0 : nv vectors]. */
FC_TARGET FC_INLINE void FC_ISA_SFX(flat_tile)(const FC_T *FC_RESTRICT xq, const int64_t *FC_RESTRICT toff,
                                               const FC_T *FC_RESTRICT wl, int64_t taps, FC_T b,
                                               FC_T *FC_RESTRICT out, const int nv) {
    VEC acc[FC_DW_NV];
    for (int v = 0; v < nv; v++) acc[v] = (VEC){0} + b;
    for (int64_t t = 0; t < taps; t++) {
        const FC_T *p = xq + toff[t];
        const FC_T wv = wl[t];
        for (int v = 0; v < nv; v++) acc[v] += wv * *(const VEC *)(p + v * VLEN);
    }
    for (int v = 0; v < nv; v++) *(VEC *)(out + v * VLEN) = acc[v];
}

/* Planes [p0, p1) of (n, g), each: the copies of its cg input channels, then its og output planes,
 * chunk by chunk of output rows. */
FC_TARGET static void FC_ISA_SFX(dw_fwd_task)(const FC_T *x, const FC_T *w, const fc_weight_strides *ws,
                                              const FC_T *bias, FC_T *y, const fc_conv2d_shape *s,
                                              const int64_t *toff, int64_t p0, int64_t p1, FC_T *work) {
    const int64_t cg = s->c_in / s->groups, og = s->c_out / s->groups, taps = cg * s->kh * s->kw;
    const int64_t OH = s->out_h, OW = s->out_w;
    const fc_flat_layout L = fc_flat_make_layout(s, s->out_h, VLEN);
    FC_T *xq = work, *buf = xq + fc_round_up(cg * L.csize, 16);
    const int64_t chunk = fc_dw_chunk(s, &L);
    FC_T *wl = buf + fc_round_up(chunk * L.pitch, 16) + 16;
    for (int64_t p = p0; p < p1; p++) {
        const int64_t n = p / s->groups, g = p % s->groups;
        for (int64_t c = 0; c < cg; c++)
            FC_ISA_SFX(copy_plane)(x + ((n * s->c_in + g * cg + c) * s->h) * s->w, xq + c * L.csize, s, &L, 0);
        for (int64_t o = 0; o < og; o++) {
            const int64_t oc = g * og + o;
            FC_T *wt = wl;
            for (int64_t c = 0; c < cg; c++)
                for (int64_t i = 0; i < s->kh; i++)
                    for (int64_t j = 0; j < s->kw; j++)
                        *wt++ = w[g * ws->g + o * ws->o + c * ws->c + i * ws->i + j * ws->j];
            const FC_T b = bias ? bias[oc] : (FC_T)0;
            FC_T *yp = y + (n * s->c_out + oc) * OH * OW;
            for (int64_t oh0 = 0; oh0 < OH; oh0 += chunk) {
                const int64_t rows = fc_min64(chunk, OH - oh0), f0 = oh0 * L.pitch;
                const int64_t nvec = (rows * L.pitch + VLEN - 1) / VLEN;
                int64_t v = 0;
                for (; v + FC_DW_NV <= nvec; v += FC_DW_NV)
                    FC_ISA_SFX(flat_tile)(xq + f0 + v * VLEN, toff, wl, taps, b, buf + v * VLEN, FC_DW_NV);
                for (; v < nvec; v++)
                    FC_ISA_SFX(flat_tile)(xq + f0 + v * VLEN, toff, wl, taps, b, buf + v * VLEN, 1);
                if (s->act) FC_ACTIVATE(buf, rows * L.pitch, s); /* the chunk, in L1 (its pads too) */
                for (int64_t r = 0; r < rows; r++)
                    FC_ISA_SFX(copy_run)(yp + (oh0 + r) * OW, buf + r * L.pitch, OW);
            }
        }
    }
}

/* The channel-blocked path (the header): VECA is a whole pixel of a block, aligned. */
typedef FC_T FC_ISA_SFX(fc_dw_veca) __attribute__((vector_size(FC_VBYTES)));
#define VECA FC_ISA_SFX(fc_dw_veca)
#define PX (FC_VBYTES == 64 ? 8 : 4) /* outputs per register tile: accumulators beside a weight and the loads */
typedef FC_IT FC_ISA_SFX(fc_dw_ivec) __attribute__((vector_size(FC_VBYTES)));
#define IVEC FC_ISA_SFX(fc_dw_ivec)

/* r[0:VLEN] = its transpose (r[k][l] <- r[l][k]), in log2(VLEN) stages of two-input shuffles
 * (vpermt2ps on AVX-512): stage b swaps r[i][j] and r[i + b][j - b] for every i without and j
 * with bit b, so after all bits row and lane indices have traded places.  64 shuffles for 16x16
 * floats, where element-wise stores were most of the channel-blocked path's time. */
#define FC_DW_KEEP(b, j) (((j) & (b)) ? VLEN_PP + (j) - (b) : (j))
#define FC_DW_TAKE(b, j) (((j) & (b)) ? VLEN_PP + (j) : (j) + (b))
#define FC_DW_L2(F, b) F(b, 0), F(b, 1)
#define FC_DW_L4(F, b) FC_DW_L2(F, b), F(b, 2), F(b, 3)
#define FC_DW_L8(F, b) FC_DW_L4(F, b), F(b, 4), F(b, 5), F(b, 6), F(b, 7)
#define FC_DW_L16(F, b) FC_DW_L8(F, b), F(b, 8), F(b, 9), F(b, 10), F(b, 11), F(b, 12), F(b, 13), F(b, 14), F(b, 15)
#define VLEN_PP (FC_VBYTES / FC_TBYTES) /* VLEN for the preprocessor */
#if VLEN_PP == 16
#define FC_DW_LANES FC_DW_L16
#elif VLEN_PP == 8
#define FC_DW_LANES FC_DW_L8
#elif VLEN_PP == 4
#define FC_DW_LANES FC_DW_L4
#else
#define FC_DW_LANES FC_DW_L2
#endif
/* one stage: constant masks, so each pair is two vpermt2ps and r stays in registers */
#define FC_DW_STAGE(b)                                                                                \
    _Pragma("GCC unroll 16") for (int i = 0; i < VLEN_PP; i++) if (!(i & (b))) {                       \
        const VECA a = r[i], c = r[i + (b)];                                                          \
        r[i] = __builtin_shuffle(a, c, (IVEC){FC_DW_LANES(FC_DW_KEEP, b)});                           \
        r[i + (b)] = __builtin_shuffle(a, c, (IVEC){FC_DW_LANES(FC_DW_TAKE, b)});                     \
    }
FC_TARGET FC_INLINE void FC_ISA_SFX(transpose_vecs)(VECA *r) {
#if VLEN_PP >= 16
    FC_DW_STAGE(8)
#endif
#if VLEN_PP >= 8
    FC_DW_STAGE(4)
#endif
#if VLEN_PP >= 4
    FC_DW_STAGE(2)
#endif
    FC_DW_STAGE(1)
}
#undef FC_DW_STAGE
#undef FC_DW_LANES
#undef VLEN_PP

/* The vector at p whose first len (<= VLEN) elements the caller uses, and their store; `room`
 * elements from p lie inside the plane (room >= len).  Where the room holds a whole vector it is
 * loaded or stored whole: the lanes past len are whatever lies there (the fill never stores the
 * pixels they become; a store's spill lands on later outputs of the plane, written after it).
 * Else only len elements are touched: AVX-512's and AVX2's masked loads and stores, a loop on the
 * generic path.  (AVX2 went through a buffer and libc's memcpy, two calls per vector: most of the
 * blocked path's time on a 14x14 plane.) */
FC_TARGET FC_INLINE VECA FC_ISA_SFX(load_part)(const FC_T *p, int64_t len, int64_t room) {
    VECA v;
    if (room >= VLEN) {
        memcpy(&v, p, sizeof v);
        return v;
    }
#if FC_X86 && FC_VBYTES == 64
    const unsigned bits = (1u << len) - 1u;
    if (sizeof(FC_T) == 4) {
        const __m512 t = _mm512_maskz_loadu_ps((__mmask16)bits, p);
        memcpy(&v, &t, sizeof v);
    } else {
        const __m512d t = _mm512_maskz_loadu_pd((__mmask8)bits, p);
        memcpy(&v, &t, sizeof v);
    }
#elif FC_X86 && FC_VBYTES == 32
    if (sizeof(FC_T) == 4) {
        const __m256 t = _mm256_maskload_ps((const float *)p, FC_ISA_SFX(lanes_below)(len));
        memcpy(&v, &t, sizeof v);
    } else {
        const __m256d t = _mm256_maskload_pd((const double *)p, FC_ISA_SFX(lanes_below)(len));
        memcpy(&v, &t, sizeof v);
    }
#else
    v = (VECA){0};
    for (int64_t k = 0; k < len; k++) v[k] = p[k];
#endif
    return v;
}
FC_TARGET FC_INLINE void FC_ISA_SFX(store_part)(FC_T *p, VECA v, int64_t len, int64_t room) {
    if (room >= VLEN) {
        memcpy(p, &v, sizeof v);
        return;
    }
#if FC_X86 && FC_VBYTES == 64
    const unsigned bits = (1u << len) - 1u;
    if (sizeof(FC_T) == 4) {
        __m512 t;
        memcpy(&t, &v, sizeof t);
        _mm512_mask_storeu_ps(p, (__mmask16)bits, t);
    } else {
        __m512d t;
        memcpy(&t, &v, sizeof t);
        _mm512_mask_storeu_pd(p, (__mmask8)bits, t);
    }
#elif FC_X86 && FC_VBYTES == 32
    if (sizeof(FC_T) == 4) {
        __m256 t;
        memcpy(&t, &v, sizeof t);
        _mm256_maskstore_ps((float *)p, FC_ISA_SFX(lanes_below)(len), t);
    } else {
        __m256d t;
        memcpy(&t, &v, sizeof t);
        _mm256_maskstore_pd((double *)p, FC_ISA_SFX(lanes_below)(len), t);
    }
#else
    for (int64_t k = 0; k < len; k++) p[k] = v[k];
#endif
}

/* out[p] = bb + the sum over the taps (i, j) of wb[i][j] * xp[p * sw + i * dh * cols + j * dw], for
 * p < px outputs of one row, each a vector of the block's channels. */
FC_TARGET FC_INLINE void FC_ISA_SFX(block_tile)(const FC_T *FC_RESTRICT xp, const FC_T *FC_RESTRICT wb,
                                                const FC_T *FC_RESTRICT bb, FC_T *FC_RESTRICT out,
                                                const fc_conv2d_shape *s, int64_t cols, const int px) {
    VECA acc[PX];
    for (int p = 0; p < px; p++) acc[p] = *(const VECA *)bb;
    const int64_t step = s->stride_w * VLEN;
    for (int64_t i = 0; i < s->kh; i++)
        for (int64_t j = 0; j < s->kw; j++) {
            const VECA wv = *(const VECA *)(wb + (i * s->kw + j) * VLEN);
            const FC_T *q = xp + (i * s->dilation_h * cols + j * s->dilation_w) * VLEN;
            for (int p = 0; p < px; p++) acc[p] += wv * *(const VECA *)(q + p * step);
        }
    for (int p = 0; p < px; p++) *(VECA *)(out + p * VLEN) = acc[p];
}

/* Items [i0, i1) of (image n, block of VLEN channels), each: the block's weights and bias (when the
 * block changes), its padded transposed copy, then per output row the tiles and the transpose back
 * into y.  Lanes past the last channel are zero in the copy and the weights, and never stored. */
FC_TARGET static void FC_ISA_SFX(dw_block_task)(const FC_T *x, const FC_T *w, const fc_weight_strides *ws,
                                                const FC_T *bias, FC_T *y, const fc_conv2d_shape *s, int64_t i0,
                                                int64_t i1, FC_T *work) {
    const int64_t C = s->c_in, blocks = (C + VLEN - 1) / VLEN, taps = s->kh * s->kw;
    const int64_t H = s->h, W = s->w, OH = s->out_h, OW = s->out_w, pt = s->pad_top, pl = s->pad_left;
    const int64_t rows = fc_dw_block_rows(s), cols = fc_dw_block_cols(s);
    /* the copy's columns inside x (a padding may be negative: a crop, fastconv/common/transpose.py) */
    const int64_t lo = fc_max64(0, fc_min64(pl, cols)), hi = fc_max64(lo, fc_min64(cols, pl + W));
    FC_T *xb = work, *rb = xb + fc_round_up(rows * cols * VLEN, 16), *wb = rb + fc_round_up(fc_round_up(OW, VLEN) * VLEN, 16);
    FC_T *bb = wb + taps * VLEN;
    int64_t have = -1; /* the block whose weights wb holds */
    for (int64_t it = i0; it < i1; it++) {
        const int64_t n = it / blocks, blk = it % blocks, c0 = blk * VLEN, nc = fc_min64(VLEN, C - c0);
        if (blk != have) {
            for (int64_t l = 0; l < VLEN; l++) {
                const int64_t c = c0 + l;
                for (int64_t i = 0; i < s->kh; i++)
                    for (int64_t j = 0; j < s->kw; j++)
                        wb[(i * s->kw + j) * VLEN + l] = l < nc ? w[c * ws->g + i * ws->i + j * ws->j] : (FC_T)0;
                bb[l] = l < nc && bias ? bias[c] : (FC_T)0;
            }
            have = blk;
        }
        for (int64_t r = 0; r < rows; r++) { /* block_fill */
            FC_T *dst = xb + r * cols * VLEN;
            const int64_t ih = r - pt;
            if (ih < 0 || ih >= H || nc < VLEN) {
                FC_ISA_SFX(copy_run)(dst, NULL, cols * VLEN);
                if (ih < 0 || ih >= H) continue;
            } else {
                FC_ISA_SFX(copy_run)(dst, NULL, lo * VLEN);
                FC_ISA_SFX(copy_run)(dst + hi * VLEN, NULL, (cols - hi) * VLEN);
            }
            const FC_T *src = x + ((n * C + c0) * H + ih) * W - pl; /* channel l's row: src + l * H * W */
            for (int64_t q = lo; q < hi; q += VLEN) { /* VLEN columns of VLEN channels, transposed */
                const int64_t room = (H - ih) * W - (q - pl); /* elements from src + q to the plane's end */
                VECA t[VLEN];
                for (int64_t l = 0; l < VLEN; l++)
                    t[l] = l < nc ? FC_ISA_SFX(load_part)(src + l * H * W + q, fc_min64(VLEN, hi - q), room) : (VECA){0};
                FC_ISA_SFX(transpose_vecs)(t);
                for (int64_t k = 0; k < fc_min64(VLEN, hi - q); k++) *(VECA *)(dst + (q + k) * VLEN) = t[k];
            }
        }
        for (int64_t oh = 0; oh < OH; oh++) {
            const FC_T *xr = xb + oh * s->stride_h * cols * VLEN;
            int64_t ow = 0;
            for (; ow + PX <= OW; ow += PX)
                FC_ISA_SFX(block_tile)(xr + ow * s->stride_w * VLEN, wb, bb, rb + ow * VLEN, s, cols, PX);
            switch (OW - ow) { /* the row's last outputs, in one tile of a constant width */
#define FC_DW_LAST(k) \
    case k: FC_ISA_SFX(block_tile)(xr + ow * s->stride_w * VLEN, wb, bb, rb + ow * VLEN, s, cols, k); break;
                FC_DW_LAST(1) FC_DW_LAST(2) FC_DW_LAST(3)
#if FC_VBYTES == 64
                FC_DW_LAST(4) FC_DW_LAST(5) FC_DW_LAST(6) FC_DW_LAST(7)
#endif
#undef FC_DW_LAST
                default: break;
            }
            if (s->act) FC_ACTIVATE(rb, OW * VLEN, s); /* the row of the block, in L1 */
            FC_T *yr = y + ((n * C + c0) * OH + oh) * OW; /* channel l's row: yr + l * OH * OW */
            for (int64_t q = 0; q < OW; q += VLEN) { /* VLEN outputs of VLEN channels, transposed back */
                VECA t[VLEN];
                for (int64_t k = 0; k < VLEN; k++) t[k] = *(const VECA *)(rb + (q + k) * VLEN);
                FC_ISA_SFX(transpose_vecs)(t);
                for (int64_t l = 0; l < nc; l++)
                    FC_ISA_SFX(store_part)(yr + l * OH * OW + q, t[l], fc_min64(VLEN, OW - q), (OH - oh) * OW - q);
            }
        }
    }
}

#undef VECA
#undef IVEC
#undef PX

/* gx of planes [p0, p1) of (n, c) (fc_dw_data_window's comment): per plane the copies of its og gy
 * planes, then per input row phase rh and chunk of its rows the flat runs of the column phases,
 * written into gx's rows (phases whose taps miss every input run no taps: zeros). */
FC_TARGET static void FC_ISA_SFX(dw_bwd_data_task)(const FC_T *gy, const FC_T *w, FC_T *gx,
                                                   const fc_conv2d_shape *s, const fc_dw_window *win, int64_t p0,
                                                   int64_t p1, FC_T *work) {
    const int64_t og = s->c_out / s->groups, H = s->h, W = s->w, OH = s->out_h, OW = s->out_w;
    const int64_t sh = s->stride_h, sw = s->stride_w, pitch = win->pitch, taps = s->kh * s->kw;
    /* the copy as fc_flat's layout of a stride-1 problem whose padding places the window */
    fc_conv2d_shape cs = *s;
    cs.h = OH;
    cs.w = OW;
    cs.stride_h = cs.stride_w = 1;
    cs.pad_top = -win->r0;
    cs.pad_left = -win->c0;
    const fc_flat_layout L = {pitch, win->rows, fc_dw_data_psize(win, VLEN), fc_dw_data_psize(win, VLEN)};
    const int64_t U0 = fc_dw_phase_len(0, sh, H), chunk = fc_max64(1, fc_min64(U0, FC_DW_CHUNK_ELEMS / pitch));
    const int64_t pairs = sw == 2 && W >= 2 ? 2 : 1; /* column phases computed together */
    FC_T *xq = work, *bufs[2];
    bufs[0] = xq + fc_round_up(og * L.psize, 16);
    bufs[1] = bufs[0] + fc_round_up(chunk * pitch, 16) + 16;
    FC_T *wl = bufs[1] + fc_round_up(chunk * pitch, 16) + 16;
    int64_t *toff = (int64_t *)(wl + fc_round_up(og * taps, 16)), *tap_i = toff + og * taps;
    int64_t *d_i = tap_i + s->kh, *tap_j = d_i + s->kh, *d_j = tap_j + s->kw; /* one phase's taps per axis */
    for (int64_t p = p0; p < p1; p++) {
        const int64_t n = p / s->groups, g = p % s->groups;
        for (int64_t o = 0; o < og; o++)
            FC_ISA_SFX(copy_plane)(gy + (n * s->c_out + g * og + o) * OH * OW, xq + o * L.psize, &cs, &L, 0);
        FC_T *gp = gx + (n * s->c_in + g) * H * W;
        for (int64_t rh = 0; rh < fc_min64(sh, H); rh++) {
            const int64_t U = fc_dw_phase_len(rh, sh, H);
            for (int64_t rw0 = 0; rw0 < fc_min64(sw, W); rw0 += pairs) {
                for (int64_t u0 = 0; u0 < U; u0 += chunk) {
                    const int64_t rows = fc_min64(chunk, U - u0), nvec = (rows * pitch + VLEN - 1) / VLEN;
                    for (int64_t k = 0; k < pairs; k++) {
                        /* the phase's taps, (o, i, j) in order, and where each reads the copies */
                        const int64_t mh = fc_dw_phase_taps(rh, sh, s->dilation_h, s->kh, s->pad_top, tap_i, d_i);
                        const int64_t mw = fc_dw_phase_taps(rw0 + k, sw, s->dilation_w, s->kw, s->pad_left, tap_j, d_j);
                        int64_t m = 0;
                        for (int64_t o = 0; o < og; o++)
                            for (int64_t a = 0; a < mh; a++)
                                for (int64_t b = 0; b < mw; b++, m++) {
                                    wl[m] = w[((g * og + o) * s->kh + tap_i[a]) * s->kw + tap_j[b]];
                                    toff[m] = o * L.psize + (d_i[a] - win->r0) * pitch + d_j[b] - win->c0 + u0 * pitch;
                                }
                        int64_t v = 0;
                        for (; v + FC_DW_NV <= nvec; v += FC_DW_NV)
                            FC_ISA_SFX(flat_tile)(xq + v * VLEN, toff, wl, m, 0, bufs[k] + v * VLEN, FC_DW_NV);
                        for (; v < nvec; v++) FC_ISA_SFX(flat_tile)(xq + v * VLEN, toff, wl, m, 0, bufs[k] + v * VLEN, 1);
                    }
                    for (int64_t r = 0; r < rows; r++) {
                        FC_T *dst = gp + ((u0 + r) * sh + rh) * W;
                        const FC_T *b0 = bufs[0] + r * pitch, *b1 = bufs[1] + r * pitch;
                        if (sw == 1) {
                            FC_ISA_SFX(copy_run)(dst, b0, W);
                        } else if (pairs == 2) { /* stride 2: the two column phases interleaved */
                            const int64_t half = W / 2;
                            for (int64_t q = 0; q < half; q++) {
                                dst[2 * q] = b0[q];
                                dst[2 * q + 1] = b1[q];
                            }
                            if (W % 2) dst[W - 1] = b0[half];
                        } else {
                            for (int64_t q = 0; rw0 + q * sw < W; q++) dst[rw0 + q * sw] = b0[q];
                        }
                    }
                }
            }
        }
    }
}

/* sum over q < len of a[q] * b[q], in vector partial sums and then a fixed order. */
FC_TARGET FC_INLINE FC_T FC_ISA_SFX(dot_run)(const FC_T *FC_RESTRICT a, const FC_T *FC_RESTRICT b, int64_t len,
                                             VEC *acc) {
    int64_t q = 0;
    for (; q + VLEN <= len; q += VLEN) *acc += *(const VEC *)(a + q) * *(const VEC *)(b + q);
    FC_T tail = 0;
#if FC_X86 && FC_VBYTES == 64
    if (q < len) { /* masked-off lanes read nothing: no 0 x NaN from past the row */
        const unsigned bits = (1u << (len - q)) - 1u;
        VEC t;
        if (sizeof(FC_T) == 4) {
            const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps((__mmask16)bits, a + q),
                                           _mm512_maskz_loadu_ps((__mmask16)bits, b + q));
            memcpy(&t, &p, sizeof t);
        } else {
            const __m512d p = _mm512_mul_pd(_mm512_maskz_loadu_pd((__mmask8)bits, a + q),
                                            _mm512_maskz_loadu_pd((__mmask8)bits, b + q));
            memcpy(&t, &p, sizeof t);
        }
        *acc += t;
    }
#elif FC_X86 && FC_VBYTES == 32
    /* The same with AVX's masked loads: the scalar tail was a chain of dependent FMAs, 28 cycles
     * for a row of 7, most of a 7x7 plane's weight gradient (AMD EPYC Zen 3: dw960_7 0.32 ms, 0.59x
     * torch's). */
    if (q < len) {
        VEC t;
        const __m256i m = FC_ISA_SFX(lanes_below)(len - q);
        if (sizeof(FC_T) == 4) {
            const __m256 p = _mm256_mul_ps(_mm256_maskload_ps((const float *)a + q, m),
                                           _mm256_maskload_ps((const float *)b + q, m));
            memcpy(&t, &p, sizeof t);
        } else {
            const __m256d p = _mm256_mul_pd(_mm256_maskload_pd((const double *)a + q, m),
                                            _mm256_maskload_pd((const double *)b + q, m));
            memcpy(&t, &p, sizeof t);
        }
        *acc += t;
    }
#else
    for (; q < len; q++) tail += a[q] * b[q];
#endif
    return tail;
}

/* gw of groups [g0, g1): per group, over the batch in order, the copy of x's plane and, per output
 * channel and tap, the dot products of gy's rows with the tap's rows of the copy.  Only the out_w
 * columns of each row: the copy's columns past them hold real inputs, and 0 x NaN there would put
 * NaN where PyTorch has none. */
FC_TARGET static void FC_ISA_SFX(dw_bwd_weight_task)(const FC_T *gy, const FC_T *x, FC_T *gw,
                                                     const fc_conv2d_shape *s, const int64_t *toff,
                                                     int64_t g0, int64_t g1, FC_T *work) {
    const int64_t og = s->c_out / s->groups, taps = s->kh * s->kw, OH = s->out_h, OW = s->out_w;
    const fc_flat_layout L = fc_flat_make_layout(s, s->out_h, VLEN);
    FC_T *xq = work, *sums = xq + fc_round_up(L.csize, 16);
    for (int64_t g = g0; g < g1; g++) {
        for (int64_t k = 0; k < og * taps; k++) sums[k] = 0;
        for (int64_t n = 0; n < s->n; n++) {
            FC_ISA_SFX(copy_plane)(x + ((n * s->c_in + g) * s->h) * s->w, xq, s, &L, 0);
            for (int64_t o = 0; o < og; o++) {
                const FC_T *gp = gy + ((n * s->c_out + g * og + o) * OH) * OW;
                for (int64_t t = 0; t < taps; t++) {
                    const FC_T *xt = xq + toff[t];
                    VEC a0 = {0}, a1 = {0}; /* two chains: an FMA's latency is two of its issue slots */
                    FC_T tail = 0;
                    int64_t oh = 0;
                    for (; oh + 2 <= OH; oh += 2) {
                        tail += FC_ISA_SFX(dot_run)(gp + oh * OW, xt + oh * L.pitch, OW, &a0);
                        tail += FC_ISA_SFX(dot_run)(gp + (oh + 1) * OW, xt + (oh + 1) * L.pitch, OW, &a1);
                    }
                    if (oh < OH) tail += FC_ISA_SFX(dot_run)(gp + oh * OW, xt + oh * L.pitch, OW, &a0);
                    FC_T lanes[VLEN], total = tail;
                    a0 += a1;
                    memcpy(lanes, &a0, sizeof lanes);
                    for (int64_t q = 0; q < VLEN; q++) total += lanes[q];
                    sums[o * taps + t] += total;
                }
            }
        }
        memcpy(gw + g * og * taps, sums, (size_t)(og * taps) * sizeof(FC_T));
    }
}

#undef VEC
#undef VLEN

#endif
