/* Max-pool 2-D forward (values + argmax) and backward, the twin of fastconv/numba/maxpool.py.
 *
 * PyTorch's CPU rules, kept exactly:
 *   - each window starts at maxval = -inf with the index of its first in-bounds tap;
 *   - a tap replaces the max when `val > maxval || isnan(val)`: ties keep the first maximum in
 *     scan order, and a window holding NaN ends on the *last* NaN;
 *   - padding taps are never read (they act as -inf).
 * Forward: tasks of consecutive (n, c) planes, a few per thread.  For each output row the window
 * taps are walked in scan order (i, j) and, for each tap, over all output columns at once, so the
 * inner loop runs along a row of the input and vectorizes; each output still sees its taps in scan
 * order.
 * Without idx (NULL: the caller asked for no indices) the same walk keeps only the running max.
 * Backward: per plane (tasks of consecutive planes, as the forward's) zero the plane, then
 * gx[idx] += gy (overlapping windows add up).
 *
 * The forward's plane loop is compiled once per vector ISA (generic, avx2, avx512, each under its
 * target attribute, as in direct.c) and the shape's isa picks one per call.  Its update of the
 * max (and argmax) is written as selects, not as a conditional store, so that every ISA's build
 * vectorizes it: a conditional store left the AVX2 build mostly scalar and made the AVX-512 one use
 * masked stores.  64x112x112, 3x3/2, batch 1, with indices: avx512 2.1 -> 1.8 ms; avx2 2.0 ms,
 * where the argmax alone as a conditional store took 3.9; the generic build is 5.3-5.9 ms either
 * way; without indices 0.9-1.1 ms on each (Intel Xeon model 167, medians, interleaved).
 * The backward is a scatter (gx[idx] += gy, indices that may repeat): no vector ISA speeds it, so
 * it has one version.
 *
 * The file is a template in two levels: it includes itself once per dtype with FC_T / FC_SFX
 * set, and each of those once per ISA.
 */
#ifndef FC_T

#include "fc_internal.h"

#define FC_POOL_TASKS_PER_THREAD 8 /* runs of planes per thread: balance without sharing lines */

#define FC_T float
#define FC_SFX(name) name##_f32
#include "maxpool.c"
#undef FC_T
#undef FC_SFX

#define FC_T double
#define FC_SFX(name) name##_f64
#include "maxpool.c"
#undef FC_T
#undef FC_SFX

#elif !defined(FC_ISA_SFX) /* level 1, per dtype: the hot loops once per ISA, then the entries */

#define FC_PER_ISA_FILE "maxpool.c"
#include "fc_per_isa.h"
#undef FC_PER_ISA_FILE

/* pool_plane, as FC_ISA_PICK picks it for a call. */
typedef void (*FC_SFX(plane_fn))(const FC_T *FC_RESTRICT, FC_T *FC_RESTRICT, int64_t *FC_RESTRICT,
                                  const fc_pool2d_shape *);

int FC_SFX(fc_maxpool2d_fwd_direct)(const FC_T *x, FC_T *y, int64_t *idx,
                                    const fc_pool2d_shape *s, int n_threads) {
    const int64_t planes = s->n * s->c, in_plane = s->h * s->w, out_plane = s->out_h * s->out_w;
    const FC_SFX(plane_fn) pool_plane = idx ? FC_ISA_PICK(s->isa, pool_plane) : FC_ISA_PICK(s->isa, pool_plane_values);
    /* Tasks of consecutive planes, a few per thread: with one plane a task, neighbouring planes'
     * outputs (a 6x6 plane's values share cache lines with the next's) went to different threads,
     * and the row loop updates them once per tap, so the lines moved between cores at every
     * update: AlexNet's pool5 took 1.6x longer on 2 threads than on one (AMD EPYC Zen 3). */
    const int64_t nt = n_threads > 0 ? n_threads : 1, tasks = fc_min64(planes, FC_POOL_TASKS_PER_THREAD * nt);
    const int64_t run = (planes + tasks - 1) / tasks;
    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++)
        for (int64_t p = t * run; p < fc_min64(planes, (t + 1) * run); p++)
            pool_plane(x + p * in_plane, y + p * out_plane, idx ? idx + p * out_plane : NULL, s);
    return FC_OK;
}

int FC_SFX(fc_maxpool2d_bwd_direct)(const FC_T *gy, const int64_t *idx, FC_T *gx,
                                    const fc_pool2d_shape *s, int n_threads) {
    const int64_t planes = s->n * s->c, in_plane = s->h * s->w, out_plane = s->out_h * s->out_w;
    const int64_t nt = n_threads > 0 ? n_threads : 1, tasks = fc_min64(planes, FC_POOL_TASKS_PER_THREAD * nt);
    const int64_t run = (planes + tasks - 1) / tasks; /* consecutive planes per task, as in the forward */
    int64_t bad = 0;
    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t task_bad = 0;
        for (int64_t p = t * run; p < fc_min64(planes, (t + 1) * run); p++) {
            FC_T *FC_RESTRICT g = gx + p * in_plane;
            const FC_T *FC_RESTRICT go = gy + p * out_plane;
            const int64_t *FC_RESTRICT ip = idx + p * out_plane;
            memset(g, 0, (size_t)in_plane * sizeof(FC_T));
            for (int64_t k = 0; k < out_plane; k++) {
                const int64_t at = ip[k];
                if (at < 0 || at >= in_plane) {
                    task_bad = 1;
                    continue;
                }
                g[at] += go[k];
            }
        }
        if (task_bad) {
            FC_PRAGMA_ATOMIC_WRITE
            bad = 1;
        }
    }
    return bad ? FC_EINDEX : FC_OK;
}

#else /* level 2, the forward of one plane for one dtype (FC_T) and ISA (FC_ISA_SFX, FC_TARGET) */

/* One plane's pool; with_idx is a constant at each call below, so the index-free copy carries no
 * index code at all (an inference caller's pool is a plain running max, half the stores). */
FC_TARGET FC_INLINE void FC_ISA_SFX(pool_plane_body)(const FC_T *FC_RESTRICT x, FC_T *FC_RESTRICT y,
                                                    int64_t *FC_RESTRICT idx, const fc_pool2d_shape *s,
                                                    const int with_idx) {
    const int64_t H = s->h, W = s->w, sw = s->stride_w, dh = s->dilation_h, dw = s->dilation_w;
    /* Column taps j that some output column reads inside the row: iw0 = j * dw - pad_w must lie
     * in [-(out_w - 1) * sw, W - 1]. */
    int64_t j_lo, j_hi;
    fc_inside(-s->pad_w + (s->out_w - 1) * sw, dw, W + (s->out_w - 1) * sw, s->kw, &j_lo, &j_hi);
    for (int64_t oh = 0; oh < s->out_h; oh++) {
        FC_T *yrow = y + oh * s->out_w;
        int64_t *irow = with_idx ? idx + oh * s->out_w : NULL;
        const int64_t ih_start = oh * s->stride_h - s->pad_h;
        int64_t i_lo, i_hi;
        fc_inside(ih_start, dh, H, s->kh, &i_lo, &i_hi);
        /* PyTorch's initial index: the window's start stepped by the dilation until it is no
         * longer negative (also where no tap is inside). */
        const int64_t ih_first = ih_start < 0 ? ih_start + (-ih_start + dh - 1) / dh * dh : ih_start;
        for (int64_t ow = 0; ow < s->out_w; ow++) {
            yrow[ow] = (FC_T)-INFINITY;
            if (with_idx) {
                int64_t iw_first = ow * sw - s->pad_w;
                if (iw_first < 0) iw_first += (-iw_first + dw - 1) / dw * dw;
                irow[ow] = ih_first * W + iw_first;
            }
        }
        for (int64_t i = i_lo; i < i_hi; i++) {
            const int64_t ih = ih_start + i * dh;
            const FC_T *xrow = x + ih * W;
            for (int64_t j = j_lo; j < j_hi; j++) {
                const int64_t iw0 = j * dw - s->pad_w; /* iw = ow * sw + iw0 */
                int64_t v_lo, v_hi;
                fc_inside(iw0, sw, W, s->out_w, &v_lo, &v_hi);
                for (int64_t ow = v_lo; ow < v_hi; ow++) {
                    const int64_t iw = ow * sw + iw0;
                    const FC_T val = xrow[iw], cur = yrow[ow];
                    const int take = val > cur || val != val;
                    /* selects, not a conditional store: every ISA's build vectorizes them */
                    yrow[ow] = take ? val : cur;
                    if (with_idx) irow[ow] = take ? ih * W + iw : irow[ow];
                }
            }
        }
    }
}

/* The 2x2 stride-2 pool of every window inside the plane (no padding, dilation 1), by output:
 * the four taps in PyTorch's order, starting from the first (which -inf in the general loop
 * always yields to, index included).  The general loop runs its rows as vectors, whose setup
 * dominates short rows. */
FC_TARGET FC_INLINE void FC_ISA_SFX(pool_plane_2x2)(const FC_T *FC_RESTRICT x, FC_T *FC_RESTRICT y,
                                                   int64_t *FC_RESTRICT idx, const fc_pool2d_shape *s,
                                                   const int with_idx) {
    const int64_t W = s->w;
    for (int64_t oh = 0; oh < s->out_h; oh++) {
        const FC_T *r0 = x + 2 * oh * W, *r1 = r0 + W;
        for (int64_t ow = 0; ow < s->out_w; ow++) {
            const FC_T taps[4] = {r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]};
            const int64_t at[4] = {0, 1, W, W + 1};
            FC_T best = taps[0];
            int64_t pick = 0;
            for (int t = 1; t < 4; t++) {
                const int take = taps[t] > best || taps[t] != taps[t];
                best = take ? taps[t] : best;
                pick = take ? at[t] : pick;
            }
            y[oh * s->out_w + ow] = best;
            if (with_idx) idx[oh * s->out_w + ow] = 2 * oh * W + 2 * ow + pick;
        }
    }
}

/* Whether pool_plane_2x2 serves s, and pays: input rows shorter than one vector.  Measured
 * (avx512, float32, 1 thread): 16x6x8x8 15 -> 8 us, 16x16x4x4 18 -> 9 us; 1x512x14x14 even
 * (327 / 345 us); 1x256x28x28 twice as slow as the general loop (701 / 374 us). */
static inline int FC_ISA_SFX(is_small_2x2)(const fc_pool2d_shape *s) {
    return s->kh == 2 && s->kw == 2 && s->stride_h == 2 && s->stride_w == 2 && s->pad_h == 0 && s->pad_w == 0 &&
           s->dilation_h == 1 && s->dilation_w == 1 && 2 * s->out_h <= s->h && 2 * s->out_w <= s->w &&
           s->w < FC_VBYTES / (int64_t)sizeof(FC_T);
}

FC_TARGET static void FC_ISA_SFX(pool_plane)(const FC_T *FC_RESTRICT x, FC_T *FC_RESTRICT y,
                                             int64_t *FC_RESTRICT idx, const fc_pool2d_shape *s) {
    if (FC_ISA_SFX(is_small_2x2)(s))
        FC_ISA_SFX(pool_plane_2x2)(x, y, idx, s, 1);
    else
        FC_ISA_SFX(pool_plane_body)(x, y, idx, s, 1);
}

FC_TARGET static void FC_ISA_SFX(pool_plane_values)(const FC_T *FC_RESTRICT x, FC_T *FC_RESTRICT y,
                                                    int64_t *FC_RESTRICT idx, const fc_pool2d_shape *s) {
    if (FC_ISA_SFX(is_small_2x2)(s))
        FC_ISA_SFX(pool_plane_2x2)(x, y, idx, s, 0);
    else
        FC_ISA_SFX(pool_plane_body)(x, y, idx, s, 0);
}

#endif
