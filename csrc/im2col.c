/* im2col + GEMM conv2d forward, the twin of fastconv/numba/im2col.py.
 *
 * Per image n and group g the convolution is Y_g[og][P] = W_g[og][K] . cols[K][P] with
 * K = cg*kH*kW taps and P = out_h*out_w pixels.  It runs as tasks of (n, g, a chunk of output rows):
 *   unfold_rows   cols[k][p] = x[n, g*cg + c, oh*sh - pt + i*dh, ow*sw - pl + j*dw] for
 *                 k = (c, i, j) and the chunk's pixels, zero in the padding; a 1x1 stride-1
 *                 unpadded convolution needs no unfold (the input already is cols);
 *   gemm          Y_g[:, chunk] = bias + W_g . cols through OpenBLAS (scipy-openblas32),
 *                 single-threaded per task: the tasks are spread over OpenMP threads, so there is
 *                 one thread pool, not OpenMP and OpenBLAS pools spinning against each other.
 * The column buffer of each thread is bounded: n_threads * chunk <= workspace_bytes (rows are
 * chunked, at least one output row per chunk), so VGG-16's first layers, whose full cols matrix
 * is over 100 MB per image, run in a fixed budget.
 *
 * The file is a template: it includes itself once per dtype with FC_T / FC_SFX / FC_GEMM set.
 */
#ifndef FC_T

#include <cblas.h>

#include "fc_internal.h"

/* Rows per task.  Each column of the chunk is used by og output channels in the GEMM.  With
 * few channels (og < FC_IM2COL_WIDE_OG) the GEMM barely reuses a column, so the chunk must be
 * read back from cache: FC_IM2COL_CHUNK_BYTES (32 MB chunks ran conv1_2/conv2_2 at 40-50% of peak,
 * 8 MB at 60-78%, 4 MB at 77-83%).  With many channels the DRAM traffic hides behind the GEMM and
 * wider GEMMs win: at least FC_IM2COL_MIN_COLUMNS columns (conv3_2/conv4_2/conv5_1 rose from
 * 79/71/82% to 88/91/84%).  Measured on VGG-16, batch 1, 2-core AVX2. */
#define FC_IM2COL_CHUNK_BYTES (4 << 20)
#define FC_IM2COL_WIDE_OG 256
#define FC_IM2COL_MIN_COLUMNS 2048

#define FC_T float
#define FC_SFX(name) name##_f32
#define FC_GEMM scipy_cblas_sgemm
#include "im2col.c"
#undef FC_T
#undef FC_SFX
#undef FC_GEMM

#define FC_T double
#define FC_SFX(name) name##_f64
#define FC_GEMM scipy_cblas_dgemm
#include "im2col.c"
#undef FC_T
#undef FC_SFX
#undef FC_GEMM

#else /* template body */

/* cols[k][q] for the pixels of output rows [oh0, oh0 + rows): q = (oh - oh0) * out_w + ow. */
static void FC_SFX(unfold_rows)(const FC_T *FC_RESTRICT xg, FC_T *FC_RESTRICT cols,
                                const fc_conv2d_shape *s, int64_t cg, int64_t oh0, int64_t rows) {
    const int64_t H = s->h, W = s->w, OW = s->out_w, sw = s->stride_w, width = rows * OW;
    for (int64_t c = 0; c < cg; c++)
        for (int64_t i = 0; i < s->kh; i++)
            for (int64_t j = 0; j < s->kw; j++) {
                FC_T *dst = cols + ((c * s->kh + i) * s->kw + j) * width;
                const int64_t iw0 = j * s->dilation_w - s->pad_left; /* iw = ow * sw + iw0 */
                int64_t v_lo, v_hi;
                fc_inside(iw0, sw, W, OW, &v_lo, &v_hi);
                for (int64_t r = 0; r < rows; r++, dst += OW) {
                    const int64_t ih = (oh0 + r) * s->stride_h - s->pad_top + i * s->dilation_h;
                    if (ih < 0 || ih >= H) {
                        memset(dst, 0, (size_t)OW * sizeof(FC_T));
                        continue;
                    }
                    const FC_T *src = xg + (c * H + ih) * W;
                    for (int64_t v = 0; v < v_lo; v++) dst[v] = 0;
                    if (sw == 1)
                        memcpy(dst + v_lo, src + v_lo + iw0, (size_t)(v_hi - v_lo) * sizeof(FC_T));
                    else
                        for (int64_t v = v_lo; v < v_hi; v++) dst[v] = src[v * sw + iw0];
                    for (int64_t v = v_hi; v < OW; v++) dst[v] = 0;
                }
            }
}

int FC_SFX(fc_conv2d_fwd_im2col)(const FC_T *x, const FC_T *w, const FC_T *bias, FC_T *y,
                                 const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads) {
    const int64_t cg = s->c_in / s->groups, og = s->c_out / s->groups;
    const int64_t K = cg * s->kh * s->kw, OH = s->out_h, OW = s->out_w, P = OH * OW;
    const int64_t nt = n_threads > 0 ? n_threads : 1;
    if (K > INT32_MAX || P > INT32_MAX || og > INT32_MAX) return FC_ESIZE;
    const int direct_cols = s->kh == 1 && s->kw == 1 && s->stride_h == 1 && s->stride_w == 1 &&
                            s->pad_top == 0 && s->pad_left == 0 && OH == s->h && OW == s->w;
    /* Rows per chunk: within the budget, and small enough that every thread gets a task. */
    int64_t rows = OH;
    if (!direct_cols) {
        const int64_t row_bytes = K * OW * (int64_t)sizeof(FC_T);
        const int64_t by_cache = FC_IM2COL_CHUNK_BYTES / row_bytes;
        const int64_t by_gemm = og >= FC_IM2COL_WIDE_OG ? (FC_IM2COL_MIN_COLUMNS + OW - 1) / OW : 0;
        rows = fc_max64(1, fc_min64(OH, fc_min64(fc_max64(by_cache, by_gemm), workspace_bytes / (nt * row_bytes))));
    }
    const int64_t planes = s->n * s->groups;
    if (planes < nt) rows = fc_max64(1, fc_min64(rows, (OH * planes + nt - 1) / nt / planes));
    const int64_t chunks = (OH + rows - 1) / rows, tasks = planes * chunks;
    FC_T *cols = direct_cols ? NULL : fc_alloc((size_t)(nt * K * rows * OW) * sizeof(FC_T));
    if (!direct_cols && !cols) return FC_ENOMEM;

    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t chunk = t % chunks, g = (t / chunks) % s->groups, n = t / (chunks * s->groups);
        const int64_t oh0 = chunk * rows, r = fc_min64(rows, OH - oh0), width = r * OW;
        const FC_T *xg = x + (n * s->c_in + g * cg) * s->h * s->w;
        FC_T *yg = y + (n * s->c_out + g * og) * P + oh0 * OW;
        const FC_T *b = cols;
        int64_t ldb = width;
        if (direct_cols) {
            b = xg + oh0 * OW;
            ldb = P;
        } else {
            FC_T *mine = cols + (int64_t)FC_THREAD_ID() * K * rows * OW;
            FC_SFX(unfold_rows)(xg, mine, s, cg, oh0, r);
            b = mine;
        }
        for (int64_t o = 0; o < og; o++) {
            const FC_T bo = bias ? bias[g * og + o] : (FC_T)0;
            for (int64_t q = 0; q < width; q++) yg[o * P + q] = bo;
        }
        /* OpenBLAS runs single-threaded here (set once at load by fastconv/c/_lib.py). */
        FC_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)og, (int)width, (int)K,
                (FC_T)1, w + g * og * K, (int)K, b, (int)ldb, (FC_T)1, yg, (int)P);
    }
    free(cols);
    return FC_OK;
}

#endif
