/* im2col + GEMM conv2d (forward and backward), the twin of fastconv/numba/im2col.py.
 *
 * Per image n and group g the convolution is Y_g[og][P] = W_g[og][K] . cols[K][P] with
 * K = cg*kH*kW taps and P = out_h*out_w pixels.  It runs as tasks of (n, g, a chunk of output
 * rows), and at batch 1 of a 1x1 or of a 7x7 output plane also a part of the output channels,
 * the parts sharing their chunk's columns (splitting a 7x7 or 14x14
 * plane's rows left each thread a 21-98 column GEMM: MobileNet-v2's 1x1 expansions ran at
 * 0.53-0.68x torch's speed, 0.66-1.12x with the channels split; Intel Xeon model 167, avx512).
 * At batch > 1 on a 7x7 plane with many output channels a task is instead a run of images, their
 * columns side by side in one GEMM (fwd_folded, fc_im2col_fold):
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
 * Backward passes reuse the phases: grad of weight = dY . cols^T (unfold_rows shared by all
 * threads, gemm split by grad_w's columns or rows; a tiny one over runs of images, bwd_weight_runs),
 * grad of input = col2im_rows(W^T . dY) (tasks split by input channels; folded as the forward).
 *
 * unfold_rows and col2im_rows are compiled once per vector ISA (generic, avx2, avx512, each under
 * its target attribute, as in direct.c) and the shape's isa picks one per call; the GEMM is
 * OpenBLAS's, which picks its own kernel for the CPU.
 *
 * The file is a template in two levels: it includes itself once per dtype with FC_T / FC_SFX /
 * FC_GEMM set, and each of those once per ISA.
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
#define FC_IM2COL_SPLIT_OG 64 /* batch 1: output channels per part at least (the forward's split) */
/* The forward folds images into one GEMM on planes of fewer pixels than this, up to this many
 * columns per GEMM (see fc_im2col_fold). */
#ifndef FC_IM2COL_FOLD_PIXELS
#define FC_IM2COL_FOLD_PIXELS 100
#endif
#define FC_IM2COL_FOLD_COLUMNS 512
/* The weight gradient folds the batch into one GEMM below this many multiply-adds: a GEMM call per
 * image costs more than its arithmetic there (LeNet's conv2, 16x6x4x4 -> 16: 16 calls, 56 us). */
#define FC_IM2COL_FOLD_MACS (1 << 22)

/* A 1x1, stride-1, unpadded convolution needs no unfold: the input plane already is cols. */
static int fc_im2col_direct_cols(const fc_conv2d_shape *s) {
    return s->kh == 1 && s->kw == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_top == 0 &&
           s->pad_left == 0 && s->out_h == s->h && s->out_w == s->w;
}

/* OpenBLAS (scipy-openblas32) takes 32-bit dimensions: K, out_h*out_w and the output channels
 * per group must fit. */
static int fc_im2col_too_big(const fc_conv2d_shape *s) {
    const int64_t K = s->c_in / s->groups * s->kh * s->kw;
    return K > INT32_MAX || s->out_h * s->out_w > INT32_MAX || s->c_out / s->groups > INT32_MAX;
}

/* Output rows per chunk when each of `buffers` buffers holds k rows of columns (a task's taps):
 * see FC_IM2COL_*; within the budget, and at least one. */
static int64_t fc_im2col_rows(const fc_conv2d_shape *s, int64_t k, int64_t buffers,
                              int64_t workspace_bytes, int64_t elem) {
    const int64_t og = s->c_out / s->groups, OH = s->out_h, OW = s->out_w;
    if (fc_im2col_direct_cols(s)) return OH;
    const int64_t row_bytes = k * OW * elem;
    const int64_t by_cache = FC_IM2COL_CHUNK_BYTES / row_bytes;
    const int64_t by_gemm = og >= FC_IM2COL_WIDE_OG ? (FC_IM2COL_MIN_COLUMNS + OW - 1) / OW : 0;
    return fc_max64(1, fc_min64(OH, fc_min64(fc_max64(by_cache, by_gemm), workspace_bytes / (buffers * row_bytes))));
}

/* Images per task of the forward and of the grad of input (1: none).  A GEMM per image of a small
 * plane packs the whole weight matrix for its few columns (49 on a 7x7 plane), so at batch > 1 with
 * FC_IM2COL_WIDE_OG output channels or more each task lays out a run of images side by side,
 * cols[k][j*P + p] (dY[o][j*P + p]), and runs one GEMM over them: as many runs as it takes to give
 * every thread one (per group), at most FC_IM2COL_FOLD_COLUMNS columns, within the budget.
 * c.im2col's forward, batch 8, 7x7, one thread, GFLOP/s per image -> folded (Zen 3, avx2, min of 41):
 * 3x3 512->512 64-69 -> 80-83, 1x1 320->1280 77-78 -> 83-86, 832->384 77-78 -> 81-84; with 160
 * output channels (960->160) 77 -> 72, hence FC_IM2COL_WIDE_OG; on 14x14 planes 1x1 96->576 and
 * 64->384 lost 10-25%, hence FC_IM2COL_FOLD_PIXELS.  The grad of input, 2 threads, batch 8, 7x7:
 * 3x3 512->512 146-149 -> 152-157, 256->256 144-146 -> 155-160, 1x1 320->1280 157-159 -> 165-167;
 * with 160 output channels (960->160) it lost as the forward does, 153-156 -> 134-139. */
static int64_t fc_im2col_fold(const fc_conv2d_shape *s, int64_t nt, int64_t rows, int64_t workspace_bytes,
                              int64_t elem) {
    const int64_t P = s->out_h * s->out_w, K = s->c_in / s->groups * s->kh * s->kw, og = s->c_out / s->groups;
    if (s->n < 2 || rows < s->out_h || P >= FC_IM2COL_FOLD_PIXELS || og < FC_IM2COL_WIDE_OG) return 1;
    const int64_t runs = fc_ceil_div(nt, s->groups); /* runs of images per group for the threads */
    const int64_t fold = fc_min64(fc_min64(fc_ceil_div(s->n, runs), FC_IM2COL_FOLD_COLUMNS / P),
                                  workspace_bytes / (nt * (K + og) * P * elem));
    return fold >= 2 ? fold : 1;
}

/* Images per GEMM of the weight gradient (1: one per image): of a tiny problem
 * (FC_IM2COL_FOLD_MACS) as many as the budget holds, the whole batch in practice
 * (bwd_weight_runs).  Not on 7x7 planes with many channels, where the forward and the grad of
 * input fold: there the runs' copies cost more than their GEMMs gained (batch 8, one thread,
 * GFLOP/s per image -> runs: 960 -> 160 1x1 80-83 -> 51-55, 256 -> 256 3x3 72-73 -> 56-77,
 * 512 -> 512 3x3 75-78 -> 73-78; Zen 3). */
static int64_t fc_im2col_weight_run(const fc_conv2d_shape *s, int64_t workspace_bytes, int64_t elem) {
    const int64_t P = s->out_h * s->out_w, K = s->c_in / s->groups * s->kh * s->kw, og = s->c_out / s->groups;
    if (s->n < 2 || og * K * s->n * P > FC_IM2COL_FOLD_MACS) return 1;
    const int64_t run = fc_min64(s->n, workspace_bytes / ((K + og) * P * elem));
    return run >= 2 ? run : 1;
}

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

#elif !defined(FC_ISA_SFX) /* level 1, per dtype: the hot loops once per ISA, then the entries */

#define FC_PER_ISA_FILE "im2col.c"
#include "fc_per_isa.h"
#undef FC_PER_ISA_FILE

/* unfold_rows and col2im_rows, as FC_ISA_PICK picks them for a call. */
typedef void (*FC_SFX(rows_fn))(const FC_T *FC_RESTRICT, FC_T *FC_RESTRICT, const fc_conv2d_shape *, int64_t,
                                 int64_t, int64_t, int64_t);
/* activate_rows, as FC_ISA_PICK picks it: the forward's activation compiled for the call's ISA
 * (this level is generic x86-64: its SSE2 loop ran at half AVX2's speed). */
typedef void (*FC_SFX(act_fn))(FC_T *FC_RESTRICT, int64_t, int64_t, int64_t, const fc_conv2d_shape *);

/* The forward with `fold` images per task (fc_im2col_fold): the task's images unfolded side by side,
 * one GEMM into the thread's buffer, then copied out plane by plane with the bias. */
static int FC_SFX(fwd_folded)(const FC_T *x, const FC_T *w, const FC_T *bias, FC_T *y, const fc_conv2d_shape *s,
                              int64_t fold, int n_threads, double *profile, FC_SFX(rows_fn) unfold,
                              FC_SFX(act_fn) activate) {
    const int64_t cg = s->c_in / s->groups, og = s->c_out / s->groups, K = cg * s->kh * s->kw;
    const int64_t P = s->out_h * s->out_w, tasks = s->groups * fc_ceil_div(s->n, fold);
    const int64_t nt = n_threads > 0 ? n_threads : 1, buffer = (K + og) * fold * P;
    FC_T *work = fc_alloc((size_t)(nt * buffer) * sizeof(FC_T));
    double *phases = profile ? calloc((size_t)(FC_PHASES * nt), sizeof(double)) : NULL; /* per thread */
    if (!work || (profile && !phases)) {
        fc_free(work);
        free(phases);
        return FC_ENOMEM;
    }
    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++) {
        double *phase = phases ? phases + FC_PHASES * FC_THREAD_ID() : NULL;
        const double t0 = phase ? fc_now() : 0;
        const int64_t g = t % s->groups, n0 = t / s->groups * fold, nb = fc_min64(fold, s->n - n0), width = nb * P;
        FC_T *cols = work + (int64_t)FC_THREAD_ID() * buffer, *yb = cols + K * width;
        for (int64_t j = 0; j < nb; j++)
            unfold(x + ((n0 + j) * s->c_in + g * cg) * s->h * s->w, cols + j * P, s, cg, 0, s->out_h, width);
        const double t1 = phase ? fc_now() : 0;
        FC_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)og, (int)width, (int)K, (FC_T)1, w + g * og * K,
                (int)K, cols, (int)width, (FC_T)0, yb, (int)width);
        const double t2 = phase ? fc_now() : 0;
        for (int64_t j = 0; j < nb; j++)
            for (int64_t o = 0; o < og; o++) {
                const FC_T bo = bias ? bias[g * og + o] : (FC_T)0, *src = yb + o * width + j * P;
                FC_T *dst = y + ((n0 + j) * s->c_out + g * og + o) * P;
                for (int64_t p = 0; p < P; p++) dst[p] = src[p] + bo;
                if (s->act) activate(dst, 1, P, P, s);
            }
        if (phase) {
            phase[FC_PHASE_INPUT] += t1 - t0;
            phase[FC_PHASE_GEMM] += t2 - t1;
            phase[FC_PHASE_OUTPUT] += fc_now() - t2; /* the copy out, with the bias */
        }
    }
    if (profile)
        for (int64_t i = 0; i < FC_PHASES * nt; i++) profile[i % FC_PHASES] += phases[i];
    fc_free(work);
    free(phases);
    return FC_OK;
}

int FC_SFX(fc_conv2d_fwd_im2col)(const FC_T *x, const FC_T *w, const FC_T *bias, FC_T *y,
                                 const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads,
                                 double *profile) {
    const int64_t cg = s->c_in / s->groups, og = s->c_out / s->groups;
    const int64_t K = cg * s->kh * s->kw, OH = s->out_h, OW = s->out_w, P = OH * OW;
    const int64_t nt = n_threads > 0 ? n_threads : 1;
    if (fc_im2col_too_big(s)) return FC_ESIZE;
    const int direct_cols = fc_im2col_direct_cols(s);
    const FC_SFX(rows_fn) unfold = FC_ISA_PICK(s->isa, unfold_rows);
    const FC_SFX(act_fn) activate = FC_ISA_PICK(s->isa, activate_rows);
    const int64_t planes = s->n * s->groups;
    int64_t rows = fc_im2col_rows(s, K, nt, workspace_bytes, (int64_t)sizeof(FC_T));
    const int64_t fold = fc_im2col_fold(s, nt, rows, workspace_bytes, (int64_t)sizeof(FC_T));
    if (fold > 1) return FC_SFX(fwd_folded)(x, w, bias, y, s, fold, n_threads, profile, unfold, activate);
    /* Too few tasks for the threads (batch 1): split the output channels (FC_IM2COL_SPLIT_OG at
     * least per part) of a 1x1 or of a plane too small to give each thread FC_IM2COL_SPLIT_OG
     * columns (7x7), the rows otherwise.  The parts of a chunk share its columns, unfolded once by
     * all threads before the GEMMs ("shared").  7x7 outputs won with the split (ResNet-18 conv5_x
     * 0.85-1.05x -> 1.25-1.34x torch's speed, when each part still unfolded its own columns);
     * 14x14 ones were as often slower as faster with it (GoogLeNet 4c/4e_3x3 slower, ResNet-18
     * conv4_x and AlexNet conv3-5 faster, in two rounds of a machine too noisy to settle it). */
    int64_t oparts = 1;
    const int64_t chunks0 = (OH + rows - 1) / rows;
    if (planes * chunks0 < nt) {
        if (og >= nt * FC_IM2COL_SPLIT_OG && (s->kh * s->kw == 1 || P < nt * FC_IM2COL_SPLIT_OG))
            oparts = (nt + planes * chunks0 - 1) / (planes * chunks0);
        else
            rows = fc_max64(1, fc_min64(rows, (OH * planes + nt - 1) / nt / planes)); /* a task per thread */
    }
    const int64_t oblock = (og + oparts - 1) / oparts;
    const int64_t chunks = (OH + rows - 1) / rows, tasks = planes * chunks * oparts;
    const int shared = oparts > 1 && !direct_cols; /* then planes * chunks < nt buffers, one per chunk */
    FC_T *cols = direct_cols ? NULL : fc_alloc((size_t)(nt * K * rows * OW) * sizeof(FC_T));
    double *phases = profile ? calloc((size_t)(FC_PHASES * nt), sizeof(double)) : NULL; /* per thread */
    if ((!direct_cols && !cols) || (profile && !phases)) {
        fc_free(cols);
        free(phases);
        return FC_ENOMEM;
    }

    if (shared) { /* every chunk's columns, the threads splitting them by input channel */
        const int64_t taps = s->kh * s->kw;
        FC_OMP_PARALLEL_FOR(n_threads)
        for (int64_t u = 0; u < planes * chunks * cg; u++) {
            double *phase = phases ? phases + FC_PHASES * FC_THREAD_ID() : NULL;
            const double t0 = phase ? fc_now() : 0;
            const int64_t c = u % cg, pc = u / cg, chunk = pc % chunks, g = (pc / chunks) % s->groups;
            const int64_t n = pc / (chunks * s->groups), oh0 = chunk * rows, r = fc_min64(rows, OH - oh0);
            unfold(x + (n * s->c_in + g * cg + c) * s->h * s->w, cols + pc * K * rows * OW + c * taps * r * OW, s, 1,
                   oh0, r, r * OW);
            if (phase) phase[FC_PHASE_INPUT] += fc_now() - t0;
        }
    }

    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++) {
        double *phase = phases ? phases + FC_PHASES * FC_THREAD_ID() : NULL;
        const double t0 = phase ? fc_now() : 0;
        const int64_t o0 = (t % oparts) * oblock, m = fc_min64(oblock, og - o0), tc = t / oparts;
        const int64_t chunk = tc % chunks, g = (tc / chunks) % s->groups, n = tc / (chunks * s->groups);
        const int64_t oh0 = chunk * rows, r = fc_min64(rows, OH - oh0), width = r * OW;
        const FC_T *xg = x + (n * s->c_in + g * cg) * s->h * s->w;
        FC_T *yg = y + (n * s->c_out + g * og + o0) * P + oh0 * OW;
        if (m <= 0) continue;
        const FC_T *b = cols;
        int64_t ldb = width;
        if (direct_cols) {
            b = xg + oh0 * OW;
            ldb = P;
        } else if (shared) {
            b = cols + tc * K * rows * OW;
        } else {
            FC_T *mine = cols + (int64_t)FC_THREAD_ID() * K * rows * OW;
            unfold(xg, mine, s, cg, oh0, r, width);
            b = mine;
        }
        const double t1 = phase ? fc_now() : 0;
        for (int64_t o = 0; o < m; o++) {
            const FC_T bo = bias ? bias[g * og + o0 + o] : (FC_T)0;
            for (int64_t q = 0; q < width; q++) yg[o * P + q] = bo;
        }
        const double t2 = phase ? fc_now() : 0;
        /* OpenBLAS runs single-threaded here (set once at load by fastconv/c/_lib.py). */
        FC_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)width, (int)K,
                (FC_T)1, w + (g * og + o0) * K, (int)K, b, (int)ldb, (FC_T)1, yg, (int)P);
        const double t3 = phase ? fc_now() : 0;
        if (s->act) activate(yg, m, width, P, s); /* the task's outputs, as the GEMM left them */
        if (phase) {
            phase[FC_PHASE_INPUT] += t1 - t0;
            phase[FC_PHASE_OUTPUT] += t2 - t1 + fc_now() - t3; /* the bias before the GEMM, the activation after */
            phase[FC_PHASE_GEMM] += t3 - t2;
        }
    }
    if (profile)
        for (int64_t i = 0; i < FC_PHASES * nt; i++) profile[i % FC_PHASES] += phases[i];
    fc_free(cols);
    free(phases);
    return FC_OK;
}

/* grad_w = sum over images and pixels of dY . cols^T.  Unlike the forward, the threads share one
 * chunk of columns (as wide as the budget allows): they unfold it together, split by input channel,
 * then split the GEMM by grad_w's longer side, each thread owning its columns (or rows) of it.  (Per-thread
 * chunks would need per-thread partial grad_w, each read and written in full by every GEMM: on
 * VGG conv5_1 that ran 4x slower on 2 threads than on 1.) */
/* grad_w's part [lo, lo + m) (its columns where by_columns, else its rows) = beta * grad_w +
 * dY . B^T over `width` pixels: dY is og x width (row stride lddy), B is K x width (ldb). */
static void FC_SFX(weight_gemm_part)(const FC_T *dy, int64_t lddy, const FC_T *b, int64_t ldb, FC_T *gwg,
                                     int64_t og, int64_t K, int64_t width, int by_columns, int64_t lo, int64_t m,
                                     FC_T beta) {
    if (by_columns) /* grad_w[:, lo : lo + m] */
        FC_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)og, (int)m, (int)width, (FC_T)1, dy, (int)lddy,
                b + lo * ldb, (int)ldb, beta, gwg + lo, (int)K);
    else /* grad_w[lo : lo + m, :] */
        FC_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)K, (int)width, (FC_T)1, dy + lo * lddy,
                (int)lddy, b, (int)ldb, beta, gwg + lo * K, (int)K);
}

/* grad_w over runs of `run` images: each run's columns and dY laid out [row][image][pixel], so one
 * GEMM reduces over all the run's pixels.  Per image a GEMM reduces over P pixels only and reads
 * and writes the whole of grad_w: on a tiny problem the calls cost more than their arithmetic
 * (LeNet's conv2, 16x6x4x4 -> 16: 16 calls, 56 us; fc_im2col_weight_run).  The threads unfold a
 * run together (by image and input channel, dY by image), then split its GEMM as the per-image
 * path does. */
static int FC_SFX(bwd_weight_runs)(const FC_T *gy, const FC_T *x, FC_T *gw, const fc_conv2d_shape *s, int64_t run,
                                   int64_t parts, int64_t block, int by_columns, int n_threads,
                                   FC_SFX(rows_fn) unfold) {
    const int64_t cg = s->c_in / s->groups, og = s->c_out / s->groups, taps = s->kh * s->kw, K = cg * taps;
    const int64_t P = s->out_h * s->out_w, HW = s->h * s->w;
    FC_T *cols = fc_alloc((size_t)((K + og) * run * P) * sizeof(FC_T));
    if (!cols) return FC_ENOMEM;
    for (int64_t g = 0; g < s->groups; g++)
        for (int64_t n0 = 0; n0 < s->n; n0 += run) {
            const int64_t nb = fc_min64(run, s->n - n0), width = nb * P;
            FC_T *dyt = cols + K * width;
            FC_OMP_PARALLEL_FOR(n_threads)
            for (int64_t u = 0; u < nb * (cg + 1); u++) { /* image j's channel c, or (c == cg) its dY */
                const int64_t j = u / (cg + 1), c = u % (cg + 1);
                if (c < cg)
                    unfold(x + ((n0 + j) * s->c_in + g * cg + c) * HW, cols + c * taps * width + j * P, s, 1, 0,
                           s->out_h, width);
                else
                    for (int64_t o = 0; o < og; o++)
                        memcpy(dyt + o * width + j * P, gy + ((n0 + j) * s->c_out + g * og + o) * P,
                               (size_t)P * sizeof(FC_T));
            }
            FC_OMP_PARALLEL_FOR(n_threads)
            for (int64_t part = 0; part < parts; part++) {
                const int64_t lo = part * block, m = fc_min64(block, (by_columns ? K : og) - lo);
                if (m > 0)
                    FC_SFX(weight_gemm_part)(dyt, width, cols, width, gw + g * og * K, og, K, width, by_columns, lo,
                                             m, n0 ? (FC_T)1 : (FC_T)0);
            }
        }
    fc_free(cols);
    return FC_OK;
}

int FC_SFX(fc_conv2d_bwd_weight_im2col)(const FC_T *gy, const FC_T *x, FC_T *gw,
                                        const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads) {
    const int64_t cg = s->c_in / s->groups, og = s->c_out / s->groups, taps = s->kh * s->kw;
    const int64_t K = cg * taps, OH = s->out_h, OW = s->out_w, P = OH * OW, HW = s->h * s->w;
    const int64_t nt = n_threads > 0 ? n_threads : 1;
    if (fc_im2col_too_big(s)) return FC_ESIZE;
    const int direct_cols = fc_im2col_direct_cols(s);
    const FC_SFX(rows_fn) unfold = FC_ISA_PICK(s->isa, unfold_rows);
    const int64_t rows = fc_im2col_rows(s, K, 1, workspace_bytes, (int64_t)sizeof(FC_T)); /* one shared buffer */
    const int64_t chunks = (OH + rows - 1) / rows;
    /* The GEMM split by the longer side of grad_w: columns (taps) where K >= og, which keeps every
     * GEMM og rows tall.  Measured against splitting by output channels (Intel Xeon model 207,
     * avx512, float32, interleaved builds; time ratio): ResNet-18's 3x3s 0.75 (56x56), 0.78-0.83
     * (28x28), 0.88 (14x14), 0.96 (7x7), its stride-2 3x3 0.84, conv1 0.86; batch 8 56x56 0.75. */
    const int by_columns = K >= og;
    const int64_t side = by_columns ? K : og, parts = fc_min64(nt, (side + 15) / 16);
    const int64_t block = fc_round_up(fc_ceil_div(side, parts), 16);
    const int64_t run = fc_im2col_weight_run(s, workspace_bytes, (int64_t)sizeof(FC_T));
    if (run > 1) return FC_SFX(bwd_weight_runs)(gy, x, gw, s, run, parts, block, by_columns, n_threads, unfold);
    FC_T *cols = direct_cols ? NULL : fc_alloc((size_t)(K * rows * OW) * sizeof(FC_T));
    if (!direct_cols && !cols) return FC_ENOMEM;
    memset(gw, 0, (size_t)(s->c_out * K) * sizeof(FC_T));

    for (int64_t n = 0; n < s->n; n++)
        for (int64_t g = 0; g < s->groups; g++)
            for (int64_t chunk = 0; chunk < chunks; chunk++) {
                const int64_t oh0 = chunk * rows, r = fc_min64(rows, OH - oh0), width = r * OW;
                const FC_T *xg = x + (n * s->c_in + g * cg) * HW;
                const FC_T *gyg = gy + (n * s->c_out + g * og) * P + oh0 * OW;
                const FC_T *b = xg + oh0 * OW;
                int64_t ldb = P;
                if (!direct_cols) {
                    FC_OMP_PARALLEL_FOR(n_threads)
                    for (int64_t c = 0; c < cg; c++)
                        unfold(xg + c * HW, cols + c * taps * width, s, 1, oh0, r, width);
                    b = cols;
                    ldb = width;
                }
                FC_OMP_PARALLEL_FOR(n_threads)
                for (int64_t part = 0; part < parts; part++) {
                    const int64_t lo = part * block, m = fc_min64(block, (by_columns ? K : og) - lo);
                    if (m > 0)
                        FC_SFX(weight_gemm_part)(gyg, P, b, ldb, gw + g * og * K, og, K, width, by_columns, lo, m,
                                                 (FC_T)1);
                }
            }
    fc_free(cols);
    return FC_OK;
}

/* grad_x = col2im(W^T . dY).  Tasks are (image, group, block of input channels), and each walks
 * every row chunk of its plane alone: k = (c, i, j) is channel-major, so the GEMM over the task's
 * rows of W^T yields exactly its channels' rows of dcols, and col2im writes only those channels
 * of gx.  Tasks never touch the same memory and need no ordering.  Channels are split only as
 * finely as it takes to give every thread a task (batch 1).  (Splitting by row chunks instead
 * needs the chunks that overlap in input rows kept apart: at batch 1 that serialized the two
 * chunks of a plane and ran grad_x at half the speed of the forward.) */
/* grad_x with `fold` images per task (fc_im2col_fold): the task's dY side by side, one GEMM
 * W_g^T . dY into the thread's buffer, col2im image by image. */
static int FC_SFX(bwd_data_folded)(const FC_T *gy, const FC_T *w, FC_T *gx, const fc_conv2d_shape *s, int64_t fold,
                                   int n_threads, FC_SFX(rows_fn) col2im) {
    const int64_t cg = s->c_in / s->groups, og = s->c_out / s->groups, K = cg * s->kh * s->kw;
    const int64_t P = s->out_h * s->out_w, HW = s->h * s->w, tasks = s->groups * fc_ceil_div(s->n, fold);
    const int64_t nt = n_threads > 0 ? n_threads : 1, buffer = (og + K) * fold * P;
    FC_T *work = fc_alloc((size_t)(nt * buffer) * sizeof(FC_T));
    if (!work) return FC_ENOMEM;
    memset(gx, 0, (size_t)(s->n * s->c_in * HW) * sizeof(FC_T));
    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t g = t % s->groups, n0 = t / s->groups * fold, nb = fc_min64(fold, s->n - n0), width = nb * P;
        FC_T *dyb = work + (int64_t)FC_THREAD_ID() * buffer, *dcols = dyb + og * width;
        for (int64_t j = 0; j < nb; j++)
            for (int64_t o = 0; o < og; o++)
                memcpy(dyb + o * width + j * P, gy + ((n0 + j) * s->c_out + g * og + o) * P, (size_t)P * sizeof(FC_T));
        FC_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)width, (int)og, (FC_T)1, w + g * og * K,
                (int)K, dyb, (int)width, (FC_T)0, dcols, (int)width);
        for (int64_t j = 0; j < nb; j++)
            col2im(dcols + j * P, gx + ((n0 + j) * s->c_in + g * cg) * HW, s, cg, 0, s->out_h, width);
    }
    fc_free(work);
    return FC_OK;
}

int FC_SFX(fc_conv2d_bwd_data_im2col)(const FC_T *gy, const FC_T *w, FC_T *gx,
                                      const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads) {
    const int64_t cg = s->c_in / s->groups, og = s->c_out / s->groups, taps = s->kh * s->kw;
    const int64_t K = cg * taps, OH = s->out_h, OW = s->out_w, P = OH * OW, HW = s->h * s->w;
    const int64_t nt = n_threads > 0 ? n_threads : 1;
    if (fc_im2col_too_big(s)) return FC_ESIZE;
    const int direct_cols = fc_im2col_direct_cols(s);
    const FC_SFX(rows_fn) col2im = FC_ISA_PICK(s->isa, col2im_rows);
    const int64_t planes = s->n * s->groups;
    const int64_t split = fc_min64(cg, (nt + planes - 1) / planes); /* channel blocks per plane */
    const int64_t cb = (cg + split - 1) / split;
    const int64_t cblocks = (cg + cb - 1) / cb, tasks = planes * cblocks;
    const int64_t rows = fc_im2col_rows(s, cb * taps, nt, workspace_bytes, (int64_t)sizeof(FC_T));
    const int64_t fold = fc_im2col_fold(s, nt, rows, workspace_bytes, (int64_t)sizeof(FC_T));
    if (fold > 1) return FC_SFX(bwd_data_folded)(gy, w, gx, s, fold, n_threads, col2im);
    const int64_t chunks = (OH + rows - 1) / rows, buffer = cb * taps * rows * OW;
    FC_T *dcols = direct_cols ? NULL : fc_alloc((size_t)(nt * buffer) * sizeof(FC_T));
    if (!direct_cols && !dcols) return FC_ENOMEM;
    if (!direct_cols) memset(gx, 0, (size_t)(s->n * s->c_in * HW) * sizeof(FC_T));

    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t c0 = (t % cblocks) * cb, nc = fc_min64(cb, cg - c0), plane = t / cblocks;
        const int64_t g = plane % s->groups, n = plane / s->groups;
        const FC_T *wc = w + g * og * K + c0 * taps; /* columns c0*taps.. of W_g, i.e. rows of W_g^T */
        FC_T *gxc = gx + (n * s->c_in + g * cg + c0) * HW;
        FC_T *mine = direct_cols ? NULL : dcols + (int64_t)FC_THREAD_ID() * buffer;
        for (int64_t chunk = 0; chunk < chunks; chunk++) {
            const int64_t oh0 = chunk * rows, r = fc_min64(rows, OH - oh0), width = r * OW;
            const FC_T *gyg = gy + (n * s->c_out + g * og) * P + oh0 * OW;
            if (direct_cols) { /* the columns are the input plane itself: write it directly */
                FC_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nc, (int)width, (int)og,
                        (FC_T)1, wc, (int)K, gyg, (int)P, (FC_T)0, gxc + oh0 * OW, (int)P);
                continue;
            }
            FC_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(nc * taps), (int)width, (int)og,
                    (FC_T)1, wc, (int)K, gyg, (int)P, (FC_T)0, mine, (int)width);
            col2im(mine, gxc, s, nc, oh0, r, width);
        }
    }
    fc_free(dcols);
    return FC_OK;
}

#else /* level 2, the hot loops of one dtype (FC_T) and ISA (FC_ISA_SFX, FC_TARGET) */

/* The forward's activation on rows x n outputs at y, rows `pitch` apart. */
FC_TARGET static void FC_ISA_SFX(activate_rows)(FC_T *FC_RESTRICT y, int64_t rows, int64_t n, int64_t pitch,
                                               const fc_conv2d_shape *s) {
    for (int64_t r = 0; r < rows; r++) FC_ACTIVATE(y + r * pitch, n, s);
}

/* cols[k][q] for the pixels of output rows [oh0, oh0 + rows): q = (oh - oh0) * out_w + ow, row k at
 * cols + k * ld. */
FC_TARGET static void FC_ISA_SFX(unfold_rows)(const FC_T *FC_RESTRICT xg, FC_T *FC_RESTRICT cols,
                                          const fc_conv2d_shape *s, int64_t cg, int64_t oh0, int64_t rows,
                                          int64_t ld) {
    const int64_t H = s->h, W = s->w, OW = s->out_w, sw = s->stride_w;
    for (int64_t c = 0; c < cg; c++)
        for (int64_t i = 0; i < s->kh; i++)
            for (int64_t j = 0; j < s->kw; j++) {
                FC_T *dst = cols + ((c * s->kh + i) * s->kw + j) * ld;
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

/* gx[c][ih][iw] += dcols[k][q], the adjoint of unfold_rows (same walk, scatter instead of gather). */
FC_TARGET static void FC_ISA_SFX(col2im_rows)(const FC_T *FC_RESTRICT dcols, FC_T *FC_RESTRICT gxg,
                                          const fc_conv2d_shape *s, int64_t cg, int64_t oh0, int64_t rows,
                                          int64_t ld) {
    const int64_t H = s->h, W = s->w, OW = s->out_w, sw = s->stride_w;
    for (int64_t c = 0; c < cg; c++)
        for (int64_t i = 0; i < s->kh; i++)
            for (int64_t j = 0; j < s->kw; j++) {
                const FC_T *src = dcols + ((c * s->kh + i) * s->kw + j) * ld;
                const int64_t iw0 = j * s->dilation_w - s->pad_left;
                int64_t v_lo, v_hi;
                fc_inside(iw0, sw, W, OW, &v_lo, &v_hi);
                for (int64_t r = 0; r < rows; r++, src += OW) {
                    const int64_t ih = (oh0 + r) * s->stride_h - s->pad_top + i * s->dilation_h;
                    if (ih < 0 || ih >= H) continue;
                    FC_T *dst = gxg + (c * H + ih) * W + iw0;
                    for (int64_t v = v_lo; v < v_hi; v++) dst[v * sw] += src[v];
                }
            }
}

#endif
