/* Direct conv2d forward, the twin of fastconv/numba/direct.py.
 *
 * Per image n and group g the convolution is the product y[o][p] = sum_k w[o][k] * x_k[p] over the
 * taps k = (c, i, j) and the output pixels p = oh * out_w + ow (row-major, so a run of p is a run
 * of y).  It is computed GotoBLAS-style, in tasks of (n, g, a run of pixels, a run of channels):
 *   pack_weights     once per call, wpack[g][tap block][o-block][kc][MR], MR output channels
 *                    interleaved per tap, zero rows past og;
 *   pack_row_panel   per task and tap block [k0, k0 + kc), the panel of its pixel run as NR-pixel
 *                    blocks [v][kc][NR]: panel[v][k - k0][q] = x[n, g*cg + c, oh*sh - pt + i*dh,
 *                    ow*sw - pl + j*dw] with p = v*NR + q, zero where the tap falls in the padding
 *                    or past the run.  The "row" may span several output rows (so 14x14 layers
 *                    fill whole tiles); stride, dilation and padding are settled here, so the hot
 *                    loop has no bounds checks and reads contiguous memory only;
 *   microkernel      acc[MR][NR] = sum over the kc taps of wpack[k][MR] * panel[v][k][NR], MR output
 *                    channels by NR pixels held in registers (2 vectors per row of acc);
 *   store            y[n, o, p] = acc + bias on the first tap block, y += acc on the later ones (the
 *                    tile of y is prefetched while the microkernel runs), the last one activating
 *                    it in registers (a pass over the task's outputs, even in L2, cost 6-18% of a
 *                    1x1 layer whose few taps make it a stream of stores).
 * Cache blocking (GotoBLAS): a kc x NR panel block (16 KB) stays in L1 while the microkernel sweeps
 * mc channel blocks over it; that mc x kc weight block (contiguous, <= 192 KB) stays in L2 while it
 * meets every NR-block of the run; the run's panel for one tap block (<= 256 KB) is packed just
 * before use.  Weights are read from L3 once per task and tap block instead of once per output row.
 * Tasks: runs of at most 16 NR-blocks, shorter so each thread gets a few tasks (dynamic scheduling
 * balances them); channels are split too only when the plane has too few NR-blocks (14x14 layers
 * at batch 1 on many threads), since each channel run packs its panel again.
 *
 * One microkernel per vector ISA (fc_internal.h: FC_ISA_*), the register tile sized for its
 * register file, chosen per call from the shape's isa (the Python side's choice, FASTCONV_ISA,
 * never above what the CPU runs):
 *   generic  16-byte vectors (SSE2, or whatever the compiler makes of GCC's vector extension),
 *            FC_MR 6 x 2 vectors;
 *   avx2     32-byte vectors, FMA: FC_MR 6 x 2 vectors = 12 accumulators plus two panel loads and
 *            one broadcast in the 16 ymm registers (the BLIS/OpenBLAS Haswell shape);
 *   avx512   64-byte vectors, 32 zmm registers: 16 channels x 1 vector = 16 accumulators, the
 *            panel vector, broadcasts folded into the FMAs.  Tile chosen by measurement (AMD EPYC
 *            Zen 4, 2 threads, float32, c.direct / c.im2col time in the same interleaved rounds,
 *            mean of 2 runs on VGG conv1_1, conv3_2, conv5_1 and ResNet conv1, layer2 s2, layer3;
 *            geometric mean, lower is better): avx2's 6 x 2 ymm 1.106; avx512 8 x 2 zmm 1.130,
 *            12 x 1 1.146, 16 x 1 0.986, 24 x 1 1.123.  Zen 4 runs a zmm FMA as two ymm halves, so
 *            the win is the register file, and a 32-pixel tile (x 2 zmm) wastes small planes; on
 *            cores with two 512-bit FMA units the same shape has twice the peak to reach.
 * Vectorization, checked in the assembly (objdump -d, conv_task_f32_avx2, gcc 12 -O3): the
 * microkernel loop is 2 aligned ymm loads, 6 vbroadcastss and 12 vfmadd231ps per tap with all 12
 * accumulators in registers (f64: the same with 4-wide vectors); the avx512 task the same in zmm.
 * -ffp-contract=fast is what lets GCC fuse under -std=c11.
 *
 * The file is a template in two levels: it includes itself once per dtype (FC_T / FC_SFX), and
 * each dtype once per ISA (FC_ISA_SFX, FC_VBYTES, FC_ISA_MR, FC_TARGET).
 */
#ifndef FC_T

#include "fc_internal.h"

/* The register tile of the AVX-512 microkernel: output channels x vectors of pixels (measured:
 * see the header; -D overrides them for such measurements). */
#ifndef FC_MR_AVX512
#define FC_MR_AVX512 16
#endif
#ifndef FC_NV_AVX512
#define FC_NV_AVX512 1
#endif
/* Cache blocks, in bytes so float and double block alike: the kc x NR panel block (L1), the
 * mc x kc weight block (L2), and the longest pixel run of one task, in NR-pixel blocks. */
#define FC_KC_BYTES (16 << 10)
#define FC_MC_BYTES (192 << 10)
#define FC_MAX_RUN_BLOCKS 16
#define FC_TASKS_PER_THREAD 4

/* How the work of one call is cut into tasks; the same for every dtype. */
typedef struct {
    int64_t cg, og, K;        /* channels per group in and out, taps per output channel */
    int64_t P, vblocks;       /* output pixels per plane, and NR-pixel blocks covering them */
    int64_t oblocks;          /* MR-channel blocks per group */
    int64_t kc, mc;           /* tap block; channel block in MR-blocks */
    int64_t run, runs;        /* NR-blocks per pixel run, runs per plane */
    int64_t ochunk, ochunks;  /* MR-blocks per channel run, channel runs per group */
    int64_t tasks;
} fc_direct_plan;


static fc_direct_plan fc_direct_make_plan(const fc_conv2d_shape *s, int64_t nt, int64_t mr, int64_t nr,
                                          int64_t elem) {
    fc_direct_plan p;
    p.cg = s->c_in / s->groups;
    p.og = s->c_out / s->groups;
    p.K = p.cg * s->kh * s->kw;
    p.P = s->out_h * s->out_w;
    p.vblocks = fc_ceil_div(p.P, nr);
    p.oblocks = fc_ceil_div(p.og, mr);
    /* Equal tap blocks of at most FC_KC_BYTES / (NR * elem) taps. */
    p.kc = fc_ceil_div(p.K, fc_ceil_div(p.K, FC_KC_BYTES / (nr * elem)));
    p.mc = fc_max64(1, FC_MC_BYTES / (mr * p.kc * elem));
    /* Pixel runs of at most FC_MAX_RUN_BLOCKS, shorter when that gives each thread
     * FC_TASKS_PER_THREAD tasks (dynamic scheduling evens out the threads, and a descheduled
     * thread on a busy machine is not waited for); the channels are split only when even runs of
     * one block are too few, since every channel run packs its panel again. */
    const int64_t planes = s->n * s->groups, want = FC_TASKS_PER_THREAD * nt;
    p.runs = fc_min64(p.vblocks, fc_max64(fc_ceil_div(p.vblocks, FC_MAX_RUN_BLOCKS), fc_ceil_div(want, planes)));
    p.ochunks = fc_max64(1, fc_min64(p.oblocks, fc_ceil_div(want, planes * p.runs)));
    p.run = fc_ceil_div(p.vblocks, p.runs);
    p.runs = fc_ceil_div(p.vblocks, p.run);
    p.ochunk = fc_ceil_div(p.oblocks, p.ochunks);
    p.ochunks = fc_ceil_div(p.oblocks, p.ochunk);
    p.tasks = planes * p.runs * p.ochunks;
    return p;
}

#define FC_T float
#define FC_SFX(name) name##_f32
#include "direct.c"
#undef FC_T
#undef FC_SFX

#define FC_T double
#define FC_SFX(name) name##_f64
#include "direct.c"
#undef FC_T
#undef FC_SFX

#elif !defined(FC_ISA_SFX) /* level 1, per dtype: one kernel per ISA, and the entry that picks one */

#define FC_ISA_SFX(name) FC_SFX(name##_generic)
#define FC_VBYTES 16
#define FC_ISA_MR 6
#define FC_ISA_NV 2
#define FC_TARGET
#include "direct.c"
#undef FC_ISA_SFX
#undef FC_VBYTES
#undef FC_ISA_MR
#undef FC_ISA_NV
#undef FC_TARGET

#if FC_X86
#define FC_ISA_SFX(name) FC_SFX(name##_avx2)
#define FC_VBYTES 32
#define FC_ISA_MR 6
#define FC_ISA_NV 2
#define FC_TARGET FC_TARGET_AVX2
#include "direct.c"
#undef FC_ISA_SFX
#undef FC_VBYTES
#undef FC_ISA_MR
#undef FC_ISA_NV
#undef FC_TARGET

#define FC_ISA_SFX(name) FC_SFX(name##_avx512)
#define FC_VBYTES 64
#define FC_ISA_MR FC_MR_AVX512
#define FC_ISA_NV FC_NV_AVX512
#define FC_TARGET FC_TARGET_AVX512
#include "direct.c"
#undef FC_ISA_SFX
#undef FC_VBYTES
#undef FC_ISA_MR
#undef FC_ISA_NV
#undef FC_TARGET
#endif

int FC_SFX(fc_conv2d_fwd_direct)(const FC_T *x, const FC_T *w, const fc_weight_strides *ws,
                                 const FC_T *bias, FC_T *y, const fc_conv2d_shape *s, int n_threads,
                                 double *profile) {
    switch (fc_isa(s->isa)) {
#if FC_X86
    case FC_ISA_AVX512: return FC_SFX(direct_fwd_avx512)(x, w, ws, bias, y, s, n_threads, profile);
    case FC_ISA_AVX2: return FC_SFX(direct_fwd_avx2)(x, w, ws, bias, y, s, n_threads, profile);
#endif
    default: return FC_SFX(direct_fwd_generic)(x, w, ws, bias, y, s, n_threads, profile);
    }
}

#else /* level 2, the kernel for one dtype (FC_T) and one ISA (FC_ISA_SFX) */

#define FC_MR FC_ISA_MR
typedef FC_T FC_ISA_SFX(fc_vec) __attribute__((vector_size(FC_VBYTES)));  /* one vector register */
#define VEC FC_ISA_SFX(fc_vec)
#define VLEN ((int64_t)(FC_VBYTES / sizeof(FC_T)))
#define NV FC_ISA_NV /* vectors of pixels per row of the register tile */
#define NR (NV * VLEN) /* pixels per microkernel tile */

/* The same register, for loads and stores at any element boundary (the tiles of y). */
typedef FC_T FC_ISA_SFX(fc_vec_unaligned) __attribute__((vector_size(FC_VBYTES), aligned(sizeof(FC_T))));
#define VECU FC_ISA_SFX(fc_vec_unaligned)

/* One MR-channel block b of group g into wg, the packed weights of the group, laid out as
 * [tap block][o-block][kc][MR] so that the mc x kc weight block of a task is one contiguous
 * stream: wg[(k0 * oblocks + b * kc) * MR + (k - k0) * MR + r] = w[g][b*MR + r][k], zero past og.
 * w is read through its strides, so a flipped or transposed view costs no extra copy. */
FC_TARGET static void FC_ISA_SFX(pack_weights)(const FC_T *FC_RESTRICT w, const fc_weight_strides *ws,
                                 FC_T *FC_RESTRICT wg, const fc_conv2d_shape *s,
                                 const fc_direct_plan *pl, int64_t g, int64_t b) {
    for (int64_t r = 0; r < FC_MR; r++) {
        const int64_t o = b * FC_MR + r;
        const FC_T *src = w + g * ws->g + o * ws->o;
        int64_t c = 0, i = 0, j = 0; /* tap k = (c * kh + i) * kw + j */
        for (int64_t k0 = 0; k0 < pl->K; k0 += pl->kc) {
            const int64_t kc = fc_min64(pl->kc, pl->K - k0);
            FC_T *dst = wg + (k0 * pl->oblocks + b * kc) * FC_MR + r;
            for (int64_t k = 0; k < kc; k++) {
                dst[k * FC_MR] = o < pl->og ? src[c * ws->c + i * ws->i + j * ws->j] : (FC_T)0;
                if (++j == s->kw) {
                    j = 0;
                    if (++i == s->kh) {
                        i = 0;
                        c++;
                    }
                }
            }
        }
    }
}

/* xg points at channel 0 of group g in image n.  Packs taps [k0, k0 + kc) of the run of pixels
 * [p0, p0 + np) as ceil(np / NR) blocks of [kc][NR]. */
FC_TARGET FC_INLINE void FC_ISA_SFX(pack_row_panel)(
        const FC_T *FC_RESTRICT xg, FC_T *FC_RESTRICT panel, const fc_conv2d_shape *s,
        int64_t k0, int64_t kc, int64_t p0, int64_t np) {
    const int64_t H = s->h, W = s->w, sw = s->stride_w, out_w = s->out_w;
    const int64_t padded = fc_round_up(np, NR);
    const int64_t oh0 = p0 / out_w, ow0 = p0 % out_w;
    int64_t c = k0 / (s->kh * s->kw), i = k0 / s->kw % s->kh, j = k0 % s->kw; /* tap k0 + k */
    for (int64_t k = 0; k < kc; k++) {
        const int64_t ih0 = i * s->dilation_h - s->pad_top, iw0 = j * s->dilation_w - s->pad_left;
        const FC_T *xc = xg + c * H * W;
        int64_t oh = oh0, ow = ow0;
        /* Pieces that stay inside one output row and one NR-block. */
        for (int64_t q = 0; q < np;) {
            const int64_t len = fc_min64(fc_min64(NR - q % NR, out_w - ow), np - q);
            FC_T *dst = panel + ((q / NR) * kc + k) * NR + q % NR;
            const int64_t ih = oh * s->stride_h + ih0;
            const int64_t iwa = ow * sw + iw0, iwb = iwa + (len - 1) * sw;
            if (ih < 0 || ih >= H) {
                for (int64_t t = 0; t < len; t++) dst[t] = 0;
            } else if (iwa >= 0 && iwb < W) {
                const FC_T *src = xc + ih * W + iwa;
                if (sw == 1 && len == NR) {
                    for (int v = 0; v < NV; v++) *(VECU *)(dst + v * VLEN) = *(const VECU *)(src + v * VLEN);
                } else {
                    for (int64_t t = 0; t < len; t++) dst[t] = src[t * sw];
                }
            } else {
                const FC_T *src = xc + ih * W;
                for (int64_t t = 0; t < len; t++) {
                    const int64_t iw = iwa + t * sw;
                    dst[t] = iw >= 0 && iw < W ? src[iw] : (FC_T)0;
                }
            }
            q += len;
            ow += len;
            if (ow == out_w) {
                ow = 0;
                oh++;
            }
        }
        for (int64_t q = np; q < padded; q++) panel[((q / NR) * kc + k) * NR + q % NR] = 0;
        if (++j == s->kw) {
            j = 0;
            if (++i == s->kh) {
                i = 0;
                c++;
            }
        }
    }
}

/* acc[r] = sum_k wpack[k][r] * panel[k][0:NR] over kc taps; panel is 64-byte aligned. */
FC_TARGET FC_INLINE void FC_ISA_SFX(microkernel)(
        int64_t kc, const FC_T *FC_RESTRICT wpack, const FC_T *FC_RESTRICT panel,
        VEC acc[FC_MR][NV]) {
    for (int r = 0; r < FC_MR; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = (VEC){0};
    for (int64_t k = 0; k < kc; k++) {
        VEC p[NV];
        for (int v = 0; v < NV; v++) p[v] = *(const VEC *)(panel + k * NR + v * VLEN);
        const FC_T *wk = wpack + k * FC_MR;
#pragma GCC unroll 32
        for (int r = 0; r < FC_MR; r++)
            for (int v = 0; v < NV; v++) acc[r][v] += wk[r] * p[v];
    }
}

/* y points at (o0, p0) of the plane; rows are P apart.  The first tap block writes acc + bias,
 * later ones add acc; act (the shape, on the last tap block, when it has an activation; else NULL)
 * activates the final values in registers.  mr x nr is the valid part of the tile. */
FC_TARGET FC_INLINE void FC_ISA_SFX(store)(
        VEC acc[FC_MR][NV], FC_T *FC_RESTRICT y, int64_t P, int64_t mr, int64_t nr,
        const FC_T *FC_RESTRICT bias, int first, const fc_conv2d_shape *act) {
    if (mr == FC_MR && nr == NR) {
        const int64_t code = act ? act->act : FC_ACT_NONE;
        const FC_T slope = act ? (FC_T)act->act_slope : (FC_T)0;
        for (int r = 0; r < FC_MR; r++) {
            FC_T *yr = y + r * P;
            for (int v = 0; v < NV; v++) {
                VEC a = acc[r][v];
                if (!first)
                    a += *(const VECU *)(yr + v * VLEN);
                else if (bias)
                    a += bias[r];
                FC_ACTIVATE_VEC(a, code, slope);
                *(VECU *)(yr + v * VLEN) = a;
            }
        }
        return;
    }
    FC_T tile[FC_MR][NR] __attribute__((aligned(64)));
    memcpy(tile, acc, sizeof tile);
    for (int64_t r = 0; r < mr; r++) {
        FC_T *yr = y + r * P;
        const FC_T base = bias && first ? bias[r] : (FC_T)0;
        for (int64_t v = 0; v < nr; v++) yr[v] = tile[r][v] + (first ? base : yr[v]);
        if (act) FC_ACTIVATE(yr, nr, act);
    }
}

/* Task t: image n, group g, pixel run u, channel run h (in that order, h fastest). */
FC_TARGET static void FC_ISA_SFX(conv_task)(const FC_T *FC_RESTRICT x, const FC_T *FC_RESTRICT wpack,
                                     const FC_T *FC_RESTRICT bias, FC_T *FC_RESTRICT y,
                                     FC_T *FC_RESTRICT panel, const fc_conv2d_shape *s,
                                     const fc_direct_plan *pl, int64_t t, double *phase) {
    const int64_t h = t % pl->ochunks, u = (t / pl->ochunks) % pl->runs;
    const int64_t g = (t / (pl->ochunks * pl->runs)) % s->groups;
    const int64_t n = t / (pl->ochunks * pl->runs * s->groups);
    const int64_t K = pl->K, P = pl->P;
    const int64_t p0 = u * pl->run * NR, np = fc_min64(P - p0, pl->run * NR);
    const int64_t nv = fc_ceil_div(np, NR);
    const int64_t b0 = h * pl->ochunk, b1 = fc_min64(pl->oblocks, b0 + pl->ochunk);
    const FC_T *wg = wpack + g * pl->oblocks * K * FC_MR;
    FC_T *yg = y + (n * s->c_out + g * pl->og) * P + p0;
    const FC_T *bg = bias ? bias + g * pl->og : NULL;
    VEC acc[FC_MR][NV];
    for (int64_t k0 = 0; k0 < K; k0 += pl->kc) {
        const int64_t kc = fc_min64(pl->kc, K - k0);
        const fc_conv2d_shape *act = s->act && k0 + kc == K ? s : NULL; /* the last tap block activates */
        const double t0 = phase ? fc_now() : 0;
        FC_ISA_SFX(pack_row_panel)(x + (n * s->c_in + g * pl->cg) * s->h * s->w, panel, s, k0, kc, p0, np);
        const double t1 = phase ? fc_now() : 0;
        for (int64_t c0 = b0; c0 < b1; c0 += pl->mc) {
            const int64_t c1 = fc_min64(b1, c0 + pl->mc);
            for (int64_t v = 0; v < nv; v++) {
                const FC_T *pv = panel + v * kc * NR;
                const int64_t nr = fc_min64(NR, np - v * NR);
                for (int64_t b = c0; b < c1; b++) {
                    FC_T *yt = yg + b * FC_MR * P + v * NR;
                    /* The tile of y is read and written after kc taps: fetch it meanwhile. */
                    for (int r = 0; r < FC_MR; r++) {
                        __builtin_prefetch(yt + r * P, 1, 3);
                        __builtin_prefetch(yt + r * P + NR - 1, 1, 3);
                    }
                    FC_ISA_SFX(microkernel)(kc, wg + (k0 * pl->oblocks + b * kc) * FC_MR, pv, acc);
                    FC_ISA_SFX(store)(acc, yt, P, fc_min64(FC_MR, pl->og - b * FC_MR),
                                  nr, bg ? bg + b * FC_MR : NULL, k0 == 0, act);
                }
            }
        }
        if (phase) { /* the stores (and bias) are interleaved with the microkernel: counted with it */
            phase[FC_PHASE_INPUT] += t1 - t0;
            phase[FC_PHASE_GEMM] += fc_now() - t1;
        }
    }
}

static int FC_ISA_SFX(direct_fwd)(const FC_T *x, const FC_T *w, const fc_weight_strides *ws,
                                  const FC_T *bias, FC_T *y, const fc_conv2d_shape *s, int n_threads,
                                  double *profile) {
    const int64_t nt = n_threads > 0 ? n_threads : 1;
    const fc_direct_plan pl = fc_direct_make_plan(s, nt, FC_MR, NR, (int64_t)sizeof(FC_T));
    const int64_t taps = s->kh * s->kw;
    const fc_weight_strides contiguous = {pl.og * pl.K, pl.K, taps, s->kw, 1};
    if (!ws) ws = &contiguous;
    const int64_t panel_size = pl.run * NR * pl.kc;
    /* All workspace up front: one packed weight copy and one panel per thread. */
    FC_T *wpack = fc_alloc((size_t)(s->groups * pl.oblocks * pl.K * FC_MR) * sizeof(FC_T));
    FC_T *panels = fc_alloc((size_t)(nt * panel_size) * sizeof(FC_T));
    double *phases = profile ? calloc((size_t)(FC_PHASES * nt), sizeof(double)) : NULL; /* per thread */
    if (!wpack || !panels || (profile && !phases)) {
        fc_free(wpack);
        fc_free(panels);
        free(phases);
        return FC_ENOMEM;
    }
    FC_OMP_PARALLEL((int)nt)
    {
        double *phase = phases ? phases + FC_PHASES * FC_THREAD_ID() : NULL;
        const double t0 = phase ? fc_now() : 0;
        FC_OMP_FOR
        for (int64_t gb = 0; gb < s->groups * pl.oblocks; gb++)
            FC_ISA_SFX(pack_weights)(w, ws, wpack + gb / pl.oblocks * pl.oblocks * pl.K * FC_MR, s, &pl,
                                 gb / pl.oblocks, gb % pl.oblocks);
        if (phase) phase[FC_PHASE_WEIGHT] += fc_now() - t0; /* with the barrier's wait */
        FC_OMP_FOR
        for (int64_t t = 0; t < pl.tasks; t++)
            FC_ISA_SFX(conv_task)(x, wpack, bias, y, panels + (int64_t)FC_THREAD_ID() * panel_size, s, &pl, t,
                                  phase);
    }
    if (profile)
        for (int64_t i = 0; i < FC_PHASES * nt; i++) profile[i % FC_PHASES] += phases[i];
    fc_free(wpack);
    fc_free(panels);
    free(phases);
    return FC_OK;
}

#undef VEC
#undef VECU
#undef VLEN
#undef NR
#undef NV
#undef FC_MR

#endif
