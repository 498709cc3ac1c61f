/* Depthwise conv2d, the twin of fastconv/numba/depthwise.py: groups = C_in, one input channel per
 * group and og = C_out / groups outputs of it (the channel multiplier), any stride, padding and
 * dilation.  Forward and grad of weight here; the grad of input runs the forward on the transposed
 * problems of fastconv/common/transpose.py, which are again one small group per channel (og
 * inputs, one output), so the forward serves any cg x og per group and the Python side keeps it
 * to depthwise problems (fastconv/common/depthwise.py).
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
 *                a fixed order (deterministic at any thread count).
 * Tasks: runs of consecutive planes (n, g), a few per thread (dynamic scheduling); a 7x7 plane is
 * too small a task alone.  Each thread owns one plane copy of cg channels and its gathered
 * weights.  The copy is bounded by the Python side (fastconv/common/depthwise.py's COPY_LIMIT), so a hostile dilation or
 * padding goes to another kernel instead of failing here.
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

/* Output rows per chunk of the flat run (its buffer stays in L1). */
static int64_t fc_dw_chunk(const fc_conv2d_shape *s, const fc_flat_layout *L) {
    return fc_max64(1, fc_min64(s->out_h, FC_DW_CHUNK_ELEMS / L->pitch));
}

/* Runs of consecutive planes (or groups) for `nt` threads. */
static int64_t fc_dw_run(int64_t items, int64_t nt) {
    const int64_t tasks = fc_min64(items, FC_DW_TASKS_PER_THREAD * nt);
    return (items + tasks - 1) / tasks;
}

#define FC_T float
#define FC_SFX(name) name##_f32
#include "depthwise.c"
#undef FC_T
#undef FC_SFX

#define FC_T double
#define FC_SFX(name) name##_f64
#include "depthwise.c"
#undef FC_T
#undef FC_SFX

#elif !defined(FC_ISA_SFX) /* level 1, per dtype: the hot loops once per ISA, then the entries */

#define FC_PER_ISA_FILE "depthwise.c"
#include "fc_per_isa.h"
#undef FC_PER_ISA_FILE

typedef void (*FC_SFX(dw_fwd_fn))(const FC_T *, const FC_T *, const fc_weight_strides *, const FC_T *,
                                  FC_T *, const fc_conv2d_shape *, const int64_t *, int64_t, int64_t, FC_T *);
typedef void (*FC_SFX(dw_bwd_weight_fn))(const FC_T *, const FC_T *, FC_T *, const fc_conv2d_shape *,
                                         const int64_t *, int64_t, int64_t, FC_T *);
/* Vector elements of the ISA a call runs (its copies' slack is a vector), from that ISA's level 2. */
#define FC_DW_VLEN(isa) (FC_ISA_PICK(isa, dw_vlen)())

int FC_SFX(fc_conv2d_fwd_depthwise)(const FC_T *x, const FC_T *w, const fc_weight_strides *ws,
                                    const FC_T *bias, FC_T *y, const fc_conv2d_shape *s, int n_threads) {
    const int64_t nt = n_threads > 0 ? n_threads : 1, cg = s->c_in / s->groups, og = s->c_out / s->groups;
    const int64_t taps = s->kh * s->kw, planes = s->n * s->groups;
    const fc_weight_strides contiguous = {og * cg * taps, cg * taps, taps, s->kw, 1};
    const fc_flat_layout L = fc_flat_make_layout(s, s->out_h, FC_DW_VLEN(s->isa));
    /* per thread: the copies, a chunk's buffer, the gathered weights (each 64-byte aligned) */
    const int64_t per_thread = fc_round_up(cg * L.csize, 16) + fc_round_up(fc_dw_chunk(s, &L) * L.pitch, 16) + 16 +
                               fc_round_up(cg * taps, 16);
    const int64_t run = fc_dw_run(planes, nt), tasks = (planes + run - 1) / run;
    const FC_SFX(dw_fwd_fn) task = FC_ISA_PICK(s->isa, dw_fwd_task);
    FC_T *work = fc_alloc((size_t)(nt * per_thread) * sizeof(FC_T));
    int64_t *toff = fc_flat_tap_offsets(s, &L, cg);
    if (!work || !toff) {
        free(work);
        free(toff);
        return FC_ENOMEM;
    }
    if (!ws) ws = &contiguous;
    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++)
        task(x, w, ws, bias, y, s, toff, t * run, fc_min64(planes, (t + 1) * run),
             work + (int64_t)FC_THREAD_ID() * per_thread);
    free(work);
    free(toff);
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
        free(work);
        free(toff);
        return FC_ENOMEM;
    }
    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++)
        task(gy, x, gw, s, toff, t * run, fc_min64(s->groups, (t + 1) * run),
             work + (int64_t)FC_THREAD_ID() * per_thread);
    free(work);
    free(toff);
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
                for (int64_t r = 0; r < rows; r++)
                    FC_ISA_SFX(copy_run)(yp + (oh0 + r) * OW, buf + r * L.pitch, OW);
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
