/* Direct conv2d forward, the twin of fastconv/numba/direct.py.
 *
 * For every output row (image n, group g, row oh) one task:
 *   pack_row_panel   panel[k][v] = x[n, g*cg + c, oh*sh - pt + i*dh, v*sw - pl + j*dw] for
 *                    k = (c, i, j) and v < out_w (rounded up to NR), zero where the tap falls in
 *                    the padding: stride, dilation and padding are settled here, once per row, so
 *                    the hot loop has no bounds checks and no strided loads;
 *   microkernel      acc[MR][NR] = sum_k wpack[k][MR] * panel[k][NR], MR output channels by NR
 *                    pixels held in registers (2 vectors per row of acc);
 *   store            y[n, o, oh, v] = acc + bias for the valid part of the tile.
 * Weights are packed once per call (pack_weights) as [group][o-block][k][MR], zero-padded rows.
 *
 * The file is a template: it includes itself once per dtype with FC_T / FC_SFX set.
 */
#ifndef FC_T

#include "fc_internal.h"

#define FC_MR 8 /* output channels per microkernel tile */

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

#else /* template body, FC_T is the element type */

typedef FC_T FC_SFX(fc_vec) __attribute__((vector_size(64)));  /* one AVX-512 register */
#define VEC FC_SFX(fc_vec)
#define VLEN ((int64_t)(64 / sizeof(FC_T)))
#define NR (2 * VLEN) /* pixels per microkernel tile: two vectors */

static void FC_SFX(pack_weights)(const FC_T *FC_RESTRICT w, FC_T *FC_RESTRICT wpack,
                                 int64_t groups, int64_t og, int64_t K) {
    const int64_t blocks = (og + FC_MR - 1) / FC_MR;
    for (int64_t g = 0; g < groups; g++)
        for (int64_t b = 0; b < blocks; b++) {
            FC_T *dst = wpack + (g * blocks + b) * K * FC_MR;
            for (int64_t r = 0; r < FC_MR; r++) {
                const int64_t o = b * FC_MR + r;
                const FC_T *src = w + (g * og + o) * K;
                for (int64_t k = 0; k < K; k++)
                    dst[k * FC_MR + r] = o < og ? src[k] : (FC_T)0;
            }
        }
}

/* xg points at channel 0 of group g in image n; panel has K rows of `width` (>= out_w) values. */
static void FC_SFX(pack_row_panel)(const FC_T *FC_RESTRICT xg, FC_T *FC_RESTRICT panel,
                                   const fc_conv2d_shape *s, int64_t cg, int64_t oh, int64_t width) {
    const int64_t H = s->h, W = s->w, sw = s->stride_w;
    for (int64_t c = 0; c < cg; c++)
        for (int64_t i = 0; i < s->kh; i++) {
            const int64_t ih = oh * s->stride_h - s->pad_top + i * s->dilation_h;
            for (int64_t j = 0; j < s->kw; j++) {
                FC_T *dst = panel + ((c * s->kh + i) * s->kw + j) * width;
                if (ih < 0 || ih >= H) {
                    memset(dst, 0, (size_t)width * sizeof(FC_T));
                    continue;
                }
                const FC_T *src = xg + (c * H + ih) * W;
                const int64_t iw0 = j * s->dilation_w - s->pad_left; /* iw = v * sw + iw0 */
                const int64_t v_lo = iw0 >= 0 ? 0 : fc_min64((-iw0 + sw - 1) / sw, s->out_w);
                const int64_t v_hi = iw0 >= W ? v_lo : fc_max64(v_lo, fc_min64(s->out_w, (W - 1 - iw0) / sw + 1));
                for (int64_t v = 0; v < v_lo; v++) dst[v] = 0;
                if (sw == 1)
                    memcpy(dst + v_lo, src + v_lo + iw0, (size_t)(v_hi - v_lo) * sizeof(FC_T));
                else
                    for (int64_t v = v_lo; v < v_hi; v++) dst[v] = src[v * sw + iw0];
                for (int64_t v = v_hi; v < width; v++) dst[v] = 0;
            }
        }
}

/* acc[r] = sum_k wpack[k][r] * panel[k][0:NR]; panel rows are `width` apart and 64-byte aligned. */
static inline __attribute__((always_inline)) void FC_SFX(microkernel)(
        int64_t K, const FC_T *FC_RESTRICT wpack, const FC_T *FC_RESTRICT panel, int64_t width,
        VEC acc[FC_MR][2]) {
    for (int r = 0; r < FC_MR; r++) acc[r][0] = acc[r][1] = (VEC){0};
    for (int64_t k = 0; k < K; k++) {
        const VEC p0 = *(const VEC *)(panel + k * width);
        const VEC p1 = *(const VEC *)(panel + k * width + VLEN);
        const FC_T *wk = wpack + k * FC_MR;
#pragma GCC unroll 8
        for (int r = 0; r < FC_MR; r++) {
            acc[r][0] += wk[r] * p0;
            acc[r][1] += wk[r] * p1;
        }
    }
}

/* One output row: all output channels of group g, all pixels of row oh of image n. */
FC_HOT static void FC_SFX(conv_row)(const FC_T *FC_RESTRICT x, const FC_T *FC_RESTRICT wpack,
                                    const FC_T *FC_RESTRICT bias, FC_T *FC_RESTRICT y,
                                    FC_T *FC_RESTRICT panel, const fc_conv2d_shape *s,
                                    int64_t n, int64_t g, int64_t oh) {
    const int64_t cg = s->c_in / s->groups, og = s->c_out / s->groups;
    const int64_t K = cg * s->kh * s->kw, width = fc_round_up(s->out_w, NR);
    const int64_t blocks = (og + FC_MR - 1) / FC_MR;
    FC_SFX(pack_row_panel)(x + (n * s->c_in + g * cg) * s->h * s->w, panel, s, cg, oh, width);
    VEC acc[FC_MR][2];
    FC_T tile[FC_MR][NR] __attribute__((aligned(64)));
    for (int64_t v0 = 0; v0 < s->out_w; v0 += NR) {
        const int64_t nr = fc_min64(NR, s->out_w - v0);
        for (int64_t b = 0; b < blocks; b++) {
            FC_SFX(microkernel)(K, wpack + (g * blocks + b) * K * FC_MR, panel + v0, width, acc);
            memcpy(tile, acc, sizeof tile);
            const int64_t mr = fc_min64(FC_MR, og - b * FC_MR);
            for (int64_t r = 0; r < mr; r++) {
                const int64_t o = g * og + b * FC_MR + r;
                const FC_T bo = bias ? bias[o] : (FC_T)0;
                FC_T *yrow = y + ((n * s->c_out + o) * s->out_h + oh) * s->out_w + v0;
                for (int64_t v = 0; v < nr; v++) yrow[v] = tile[r][v] + bo;
            }
        }
    }
}

int FC_SFX(fc_conv2d_fwd_direct)(const FC_T *x, const FC_T *w, const FC_T *bias, FC_T *y,
                                 const fc_conv2d_shape *s, int n_threads) {
    const int64_t cg = s->c_in / s->groups, og = s->c_out / s->groups;
    const int64_t K = cg * s->kh * s->kw, width = fc_round_up(s->out_w, NR);
    const int64_t blocks = (og + FC_MR - 1) / FC_MR;
    const int64_t tasks = s->n * s->groups * s->out_h;
    const int64_t nt = n_threads > 0 ? n_threads : 1;
    /* All workspace up front: one packed weight copy and one row panel per thread. */
    FC_T *wpack = fc_alloc((size_t)(s->groups * blocks * K * FC_MR) * sizeof(FC_T));
    FC_T *panels = fc_alloc((size_t)(nt * K * width) * sizeof(FC_T));
    if (!wpack || !panels) {
        free(wpack);
        free(panels);
        return FC_ENOMEM;
    }
    FC_SFX(pack_weights)(w, wpack, s->groups, og, K);
    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t oh = t % s->out_h, g = (t / s->out_h) % s->groups, n = t / (s->out_h * s->groups);
        FC_T *panel = panels + (int64_t)FC_THREAD_ID() * K * width;
        FC_SFX(conv_row)(x, wpack, bias, y, panel, s, n, g, oh);
    }
    free(wpack);
    free(panels);
    return FC_OK;
}

#undef VEC
#undef VLEN
#undef NR

#endif
