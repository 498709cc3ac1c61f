/* Direct conv2d forward along the flat rows of a stride-phase copy, the twin of
 * fastconv/numba/direct_flat.py: any problem, made for first layers (1-4 input channels), where
 * direct.c's panel packing is a third of the time, and good on small planes with many channels.
 *
 * A first layer has few taps per output (27 for a 3x3 over RGB, 147 for a 7x7) and large planes,
 * so direct.c packs, for every 16-pixel piece of a row, one panel row per tap: 31-44% of its time
 * on ResNet-18's and AlexNet's conv1 (benchmarks/profile.py), per-piece overhead rather than the
 * copy itself.  Here nothing is packed per piece: the input rows of a task are copied once into
 * fc_flat.h's padded copy split by stride phase, where tap k of every output sits at one offset
 * toff[k] from the output's flat index, and the microkernel loads its vectors straight from it.
 *   copy_plane   per task, the input rows its output rows read, of every input channel of the
 *                group (fc_flat_copy.h); a task's copy stays in L2;
 *   flat_tile    MR output channels x NV vectors of the flat run in registers: per tap NV unaligned
 *                loads of the copy and MR broadcast weights, MR x NV FMAs; the tile goes to a
 *                buffer of the task's rows (L1), whose rows (out_w of each pitch) are copied into y.
 * Vectorizing over pixels keeps y's NCHW rows contiguous in the registers.
 *
 * With many taps per output (>= FC_FLAT_CHAN_TAPS) the channel tiling vectorizes over output
 * channels instead, as oneDNN's and ONNX Runtime's NCHWc convolutions do, but reading NCHW through
 * the same copy:
 *   chan_tile    PC outputs x NBC vectors of output channels in registers: per tap PC broadcasts
 *                of the copy (each output at its own place in it, so no column is computed and
 *                dropped: a 7x7 plane's 49 outputs are 49 of the tiles' lanes, where the pixel
 *                tiling computes 64 for them) and NBC loads of packed weights;
 *   chan_pack    per task and pass of kblock taps, the block's weights transposed into L1
 *                (VLEN x VLEN vector shuffles), the next pass's lines prefetched;
 *   chan_store   the tiles' outputs, transposed into y's rows by VLEN x VLEN shuffles (npix x OB
 *                stores beside npix x OB x K FMAs);
 *   chan_task    a task: its copy, then per block of channels chan_block and chan_store; at a batch,
 *                several images per task share the packing.
 * Its weights are packed per call, never kept: fastconv cannot know that w did not change.
 *
 * The pixel tiling's weights are read in place from w's rows when they are large (packing
 * 512x512x3x3 per call this way cost 3 of 5 ms) and packed per call only when small (a tap's MR
 * weights then share a cache line); it served 7x7 and 14x14 planes with hundreds of channels
 * before the channel tiling, whose lanes there are all outputs where its flat runs' are 77-88%.
 *
 * Tasks: (images, group, run of output rows, run of channel blocks), at least a few per thread;
 * the runs of rows are short enough for the tile buffer to stay in L1 and the copy in L2.  A
 * hostile padding or dilation can make even one row's copy enormous: the Python side refuses those
 * (fastconv/common/flat.py), and the tuner picks another kernel.
 *
 * Register tiles (accumulators + loads within the ISA's vector registers): avx512 6 x 4 zmm (24
 * accumulators, 10 loads per 24 FMAs; 8 x 3 and 12 x 2 were 2-40% slower on ResNet-18's small
 * planes, interleaved A/B), avx2 and generic 4 x 3 (12 accumulators, 3 loads and a broadcast in the
 * 16 registers; 6 x 2 and 3 x 4 were no better on the avx2 path of the AVX-512 machine, 0.82-1.21
 * and 0.96-1.98 of its time).  The channel tiling's: avx512 6 outputs x 4 zmm (24 accumulators,
 * 4 weight vectors and a broadcast: 29 of the 32 registers), avx2 and generic 6 x 2 (15 of 16).
 * -DFC_FLAT_{MR,NV,PC,NBC}_{AVX512,AVX2} override them, -DFC_FLAT_TILING=1/2 forces a tiling, for
 * such A/B builds.
 *
 * The file is a template in two levels: it includes itself once per dtype (FC_T / FC_SFX), and
 * each dtype once per ISA (fc_per_isa.h).
 */
#ifndef FC_T

#include "fc_flat.h"
#if FC_X86
#include <immintrin.h> /* AVX-512's masked loads and stores, for the ends of rows */
#endif

#ifndef FC_FLAT_MR_AVX512
#define FC_FLAT_MR_AVX512 6
#endif
#ifndef FC_FLAT_NV_AVX512
#define FC_FLAT_NV_AVX512 4
#endif
#ifndef FC_FLAT_MR_AVX2 /* avx2 and generic */
#define FC_FLAT_MR_AVX2 4
#endif
#ifndef FC_FLAT_NV_AVX2
#define FC_FLAT_NV_AVX2 3
#endif
#ifndef FC_FLAT_PC_AVX512 /* the channel tiling: PC outputs x NBC vectors of output channels */
#define FC_FLAT_PC_AVX512 6
#endif
#ifndef FC_FLAT_NBC_AVX512
#define FC_FLAT_NBC_AVX512 4
#endif
#ifndef FC_FLAT_PC_AVX2
#define FC_FLAT_PC_AVX2 6
#endif
#ifndef FC_FLAT_NBC_AVX2
#define FC_FLAT_NBC_AVX2 2
#endif
#ifndef FC_FLAT_TILING /* 0: chosen per problem, 1: pixels, 2: channels (for A/B builds) */
#define FC_FLAT_TILING 0
#endif
#define FC_FLAT_COPY_BYTES (512 << 10) /* a task's input copy: within L2 (1-2 MB), beside a weight block */
#define FC_FLAT_TILE_BYTES (32 << 10)  /* a task's output buffer: within L1 */
#define FC_FLAT_PACK_BYTES (256 << 10) /* a group's weights up to this size are packed per call */
#define FC_FLAT_TASKS_PER_THREAD 4
/* The runs of rows balanced over the threads (fc_flat_makespan, per call: tasks x threads x tries
 * steps) up to this many threads, tasks per thread (beyond, the last round is short) and tries. */
#define FC_FLAT_BALANCE_THREADS 8
#define FC_FLAT_BALANCE_TASKS 16
#define FC_FLAT_BALANCE_TRIES 8
#define FC_FLAT_KBLOCK_BYTES (24 << 10) /* the channel tiling: packed weights per pass, within L1 */
#define FC_FLAT_CBUF_BYTES (128 << 10)  /* the channel tiling: a task's output buffer, within L2 */
#define FC_FLAT_CHAN_TAPS 256           /* the channel tiling from this many taps per output */
#define FC_FLAT_CHAN_COPY_BYTES (1 << 20) /* the channel tiling: a task's copy of several images */

/* How one call is cut into tasks, for an ISA's tile: blocks of `blk` output channels, tiles of
 * `tile_px` outputs, a task buffer of `row_px` elements per output row and block channel (the
 * pixel tiling's pitch, the channel tiling's out_w) and at most `buf_bytes`. */
typedef struct {
    int64_t cg, og, K;        /* channels per group in and out, taps per output channel */
    int64_t oblocks;          /* channel blocks per group */
    int64_t chunk, chunks;    /* output rows per task, runs of rows per plane */
    int64_t ochunk, ochunks;  /* blocks per task, runs of blocks per group */
    int64_t tasks;
    int64_t bstride;          /* the pixel tiling: elements per channel row of a task's output buffer */
    fc_flat_layout L;         /* a task's copy: the inputs of chunk output rows */
    int in_place;             /* the pixel tiling: the full blocks are read from w itself (its taps
                               * (c, i, j) of a channel are K contiguous elements), only a group's
                               * partial last block packed */
    int64_t kblock;           /* the channel tiling: taps per pass over a task's outputs (their block
                               * of packed weights within L1) */
    int64_t images;           /* the channel tiling: images per task (runs of rows = whole planes
                               * when more than one), whose outputs share the tiles and the packing */
} fc_flat_plan;


/* The time, in output rows x channel blocks, of a call cut into `planes` x runs of `chunk` rows x runs
 * of `ochunk` blocks, on nt threads each taking the next task as it becomes free (schedule(dynamic, 1),
 * the tasks in flat_task's and chan_task's order: the blocks fastest).  Where chan_fwd deals its tasks
 * statically instead (a count the threads divide) it is exact when the runs are of equal size, and
 * off by at most a row a thread when the last is shorter. */
static int64_t fc_flat_makespan(int64_t planes, int64_t out_h, int64_t chunk, int64_t oblocks, int64_t ochunk,
                                int64_t nt) {
    int64_t load[FC_FLAT_BALANCE_THREADS] = {0}, span = 0;
    const int64_t chunks = fc_ceil_div(out_h, chunk), ochunks = fc_ceil_div(oblocks, ochunk);
    for (int64_t t = 0; t < planes * chunks * ochunks; t++) {
        int64_t i = 0;
        for (int64_t j = 1; j < nt; j++)
            if (load[j] < load[i]) i = j;
        const int64_t h = t % ochunks, u = t / ochunks % chunks;
        load[i] += fc_min64(chunk, out_h - u * chunk) * fc_min64(ochunk, oblocks - h * ochunk);
        span = fc_max64(span, load[i]);
    }
    return span;
}

static fc_flat_plan fc_flat_make_plan(const fc_conv2d_shape *s, int64_t nt, int64_t blk, int64_t tile_px,
                                      int64_t row_px, int64_t buf_bytes, int64_t vlen, int64_t elem) {
    fc_flat_plan p;
    p.cg = s->c_in / s->groups;
    p.og = s->c_out / s->groups;
    p.K = p.cg * s->kh * s->kw;
    p.oblocks = fc_ceil_div(p.og, blk);
    const int64_t planes = s->n * s->groups, want = FC_FLAT_TASKS_PER_THREAD * nt;
    /* The longest run of rows whose buffer fits and whose copy fits L2 (at least one row)... */
    int64_t chunk = fc_max64(1, fc_min64(s->out_h, buf_bytes / (blk * row_px * elem)));
    while (chunk > 1 && p.cg * fc_flat_make_layout(s, chunk, vlen).csize * elem > FC_FLAT_COPY_BYTES) chunk /= 2;
    /* ...then, for a few tasks per thread, the channel blocks are split (each task copies its rows
     * again, cheap beside K x blk FMAs per output), and the rows last, not below one full tile's
     * (on a 7x7 plane a row is one vector: one load per MR FMAs). */
    const int64_t chunks = fc_ceil_div(s->out_h, chunk);
    p.ochunks = fc_max64(1, fc_min64(p.oblocks, fc_ceil_div(want, planes * chunks)));
    p.ochunk = fc_ceil_div(p.oblocks, p.ochunks);
    p.ochunks = fc_ceil_div(p.oblocks, p.ochunk);
    const int64_t tile_rows = fc_min64(s->out_h, fc_ceil_div(tile_px, row_px));
    p.chunks = fc_max64(chunks, fc_min64(fc_ceil_div(s->out_h, tile_rows), fc_ceil_div(want, planes * p.ochunks)));
    p.chunk = fc_ceil_div(s->out_h, p.chunks);
    /* ...and of up to twice as many runs, the one that keeps the threads busy to the end: in the last
     * round of a few tasks some threads wait (AlexNet's conv2, 27 rows x 3 channel blocks in 9 tasks on
     * 2 threads, waited 8% of its call: 4 runs of 7 rows instead of 3 of 9; Zen 4, avx512) */
    if (nt > 1 && nt <= FC_FLAT_BALANCE_THREADS && planes * p.chunks * p.ochunks <= FC_FLAT_BALANCE_TASKS * nt &&
        (p.chunks > 1 || s->n == 1)) { /* (whole planes at a batch: chan_fwd gives a task several images) */
        int64_t span = fc_flat_makespan(planes, s->out_h, p.chunk, p.oblocks, p.ochunk, nt);
        const int64_t most = fc_min64(fc_min64(2 * p.chunks, p.chunks + FC_FLAT_BALANCE_TRIES),
                                      fc_ceil_div(s->out_h, tile_rows));
        for (int64_t c = p.chunks + 1; c <= most; c++) {
            const int64_t chunk = fc_ceil_div(s->out_h, c), m = fc_flat_makespan(planes, s->out_h, chunk, p.oblocks,
                                                                                 p.ochunk, nt);
            if (m < span) span = m, p.chunk = chunk;
        }
    }
    p.chunks = fc_ceil_div(s->out_h, p.chunk);
    p.tasks = planes * p.chunks * p.ochunks;
    p.L = fc_flat_make_layout(s, p.chunk, vlen);
    p.bstride = fc_round_up(p.chunk * p.L.pitch, vlen);
    p.in_place = 0;
    p.kblock = 0;
    p.images = 1;
    return p;
}

#define FC_T float
#define FC_I int32_t /* FC_T's width, for vector shuffle masks */
#define FC_SFX(name) name##_f32
#include "direct_flat.c"
#undef FC_T
#undef FC_I
#undef FC_SFX

#define FC_T double
#define FC_I int64_t
#define FC_SFX(name) name##_f64
#include "direct_flat.c"
#undef FC_T
#undef FC_I
#undef FC_SFX

#elif !defined(FC_ISA_SFX) /* level 1, per dtype: the kernel once per ISA, and the entry that picks one */

#define FC_PER_ISA_FILE "direct_flat.c"
#include "fc_per_isa.h"
#undef FC_PER_ISA_FILE

int FC_SFX(fc_conv2d_fwd_direct_flat)(const FC_T *x, const FC_T *w, const fc_weight_strides *ws,
                                      const FC_T *bias, FC_T *y, const fc_conv2d_shape *s, int n_threads) {
    return FC_ISA_PICK(s->isa, flat_fwd)(x, w, ws, bias, y, s, n_threads);
}

#else /* level 2, the kernel for one dtype (FC_T) and one ISA (FC_ISA_SFX, FC_TARGET, FC_VBYTES) */

typedef FC_T FC_ISA_SFX(fc_flat_vec) __attribute__((vector_size(FC_VBYTES), aligned(sizeof(FC_T))));
#define VEC FC_ISA_SFX(fc_flat_vec) /* one vector register, loaded and stored at any element */
#define VLEN ((int64_t)(FC_VBYTES / sizeof(FC_T)))
#if FC_VBYTES == 64
#define MR FC_FLAT_MR_AVX512
#define NV FC_FLAT_NV_AVX512
#define PC FC_FLAT_PC_AVX512
#define NBC FC_FLAT_NBC_AVX512
#else
#define MR FC_FLAT_MR_AVX2
#define NV FC_FLAT_NV_AVX2
#define PC FC_FLAT_PC_AVX2
#define NBC FC_FLAT_NBC_AVX2
#endif
#define OB (NBC * VLEN) /* the channel tiling's block of output channels */

_Static_assert(NV <= 4, "flat_block ends a row with one tile of at most 3 vectors");
_Static_assert(PC <= 8 && NBC <= 4, "chan_block's tiles have at most 8 outputs and 4 vectors");

#define FC_VEC_U VEC
#include "fc_flat_copy.h"
#undef FC_VEC_U

/* out[r][0 : nv vectors] (rows bstride apart) = bb[r] + the sum over the K taps t of
 * wb[t * tap_step + r * row_step] * xq[toff[t] + 0 : nv vectors], for the MR channels r of a block:
 * the packed block (steps MR, 1) or the rows of w itself (1, w's row stride). */
FC_TARGET FC_INLINE void FC_ISA_SFX(flat_tile)(const FC_T *FC_RESTRICT xq, const int64_t *FC_RESTRICT toff,
                                               const FC_T *FC_RESTRICT wb, const int64_t tap_step,
                                               const int64_t row_step, int64_t K, const FC_T *FC_RESTRICT bb,
                                               FC_T *FC_RESTRICT out, int64_t bstride, const int nv) {
    VEC acc[MR][NV];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = (VEC){0} + bb[r];
    for (int64_t t = 0; t < K; t++) {
        const FC_T *p = xq + toff[t];
        VEC xv[NV];
        for (int v = 0; v < nv; v++) xv[v] = *(const VEC *)(p + v * VLEN);
        const FC_T *wt = wb + t * tap_step;
#pragma GCC unroll 32
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < nv; v++) acc[r][v] += wt[r * row_step] * xv[v];
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < nv; v++) *(VEC *)(out + r * bstride + v * VLEN) = acc[r][v];
}

/* Block b of group g into wp: wp[t][r] = w[g][b * MR + r][t] over the K taps, zero past og. */
FC_TARGET static void FC_ISA_SFX(flat_pack_weights)(const FC_T *FC_RESTRICT w, const fc_weight_strides *ws,
                                                    FC_T *FC_RESTRICT wp, const fc_conv2d_shape *s,
                                                    const fc_flat_plan *pl, int64_t g, int64_t b) {
    for (int64_t r = 0; r < MR; r++) {
        const int64_t o = b * MR + r;
        const FC_T *src = w + g * ws->g + o * ws->o;
        int64_t t = 0;
        for (int64_t c = 0; c < pl->cg; c++)
            for (int64_t i = 0; i < s->kh; i++)
                for (int64_t j = 0; j < s->kw; j++, t++)
                    wp[t * MR + r] = o < pl->og ? src[c * ws->c + i * ws->i + j * ws->j] : (FC_T)0;
    }
}

/* The MR x nvec vectors of a block from the copy xq into buf: NV vectors per tile, then one tile
 * of what remains (a 14x14 plane's 14 vectors: 4 + 4 + 4 + 2, not ... + 1 + 1, where a one-vector
 * tile makes one load per MR FMAs).  wb is w's rows themselves (row_step apart) when in_place,
 * else the block's packed copy. */
#define FLAT_TILE(nv) (in_place ? FC_ISA_SFX(flat_tile)(xq + v * VLEN, toff, wb, 1, row_step, K, bb, buf + v * VLEN, bstride, nv) \
                                : FC_ISA_SFX(flat_tile)(xq + v * VLEN, toff, wb, MR, 1, K, bb, buf + v * VLEN, bstride, nv))
FC_TARGET FC_INLINE void FC_ISA_SFX(flat_block)(const FC_T *FC_RESTRICT xq, const int64_t *FC_RESTRICT toff,
                                                const FC_T *FC_RESTRICT wb, int64_t row_step, int in_place,
                                                int64_t K, const FC_T *FC_RESTRICT bb, FC_T *FC_RESTRICT buf,
                                                int64_t bstride, int64_t nvec) {
    int64_t v = 0;
    for (; v + NV <= nvec; v += NV) FLAT_TILE(NV);
    const int64_t rest = nvec - v; /* < NV <= 4 */
    if (rest == 3) FLAT_TILE(3);
    else if (rest == 2) FLAT_TILE(2);
    else if (rest == 1) FLAT_TILE(1);
}
#undef FLAT_TILE

/* Task t: image n, group g, run u of output rows, run h of channel blocks (h fastest). */
FC_TARGET static void FC_ISA_SFX(flat_task)(const FC_T *FC_RESTRICT x, const FC_T *FC_RESTRICT w,
                                            const fc_weight_strides *ws, const FC_T *FC_RESTRICT wpack,
                                            const FC_T *FC_RESTRICT bias, FC_T *FC_RESTRICT y,
                                            const int64_t *FC_RESTRICT toff, const fc_conv2d_shape *s,
                                            const fc_flat_plan *pl, int64_t t, FC_T *FC_RESTRICT work,
                                            int64_t *copied) {
    const int64_t h = t % pl->ochunks, u = t / pl->ochunks % pl->chunks;
    const int64_t g = t / (pl->ochunks * pl->chunks) % s->groups, n = t / (pl->ochunks * pl->chunks * s->groups);
    const int64_t OH = s->out_h, OW = s->out_w, K = pl->K, pitch = pl->L.pitch;
    const int64_t oh0 = u * pl->chunk, rows = fc_min64(pl->chunk, OH - oh0);
    const int64_t nvec = fc_ceil_div(rows * pitch, VLEN);
    FC_T *xq = work, *buf = work + fc_round_up(pl->cg * pl->L.csize, 16);
    /* The tasks of one run of rows differ only in their channel blocks (h, the fastest index), and a
     * thread often takes several in a row: the copy it holds is reused (a stride-2 copy was a fifth
     * of the time of ResNet-18's conv4_1, made once per task). */
    if (*copied != t / pl->ochunks) {
        for (int64_t c = 0; c < pl->cg; c++)
            FC_ISA_SFX(copy_plane)(x + (n * s->c_in + g * pl->cg + c) * s->h * s->w, xq + c * pl->L.csize, s,
                                   &pl->L, oh0);
        *copied = t / pl->ochunks;
    }
    const int64_t b0 = h * pl->ochunk, b1 = fc_min64(pl->oblocks, b0 + pl->ochunk);
    for (int64_t b = b0; b < b1; b++) {
        const int64_t o0 = g * pl->og + b * MR, mr = fc_min64(MR, pl->og - b * MR);
        FC_T bb[MR];
        for (int64_t r = 0; r < MR; r++) bb[r] = bias && r < mr ? bias[o0 + r] : (FC_T)0;
        const int in_place = pl->in_place && mr == MR;
        const FC_T *wb = in_place ? w + g * ws->g + b * MR * ws->o : wpack + (pl->in_place ? g : g * pl->oblocks + b) * K * MR;
        FC_ISA_SFX(flat_block)(xq, toff, wb, ws->o, in_place, K, bb, buf, pl->bstride, nvec);
        for (int64_t r = 0; r < mr; r++) {
            FC_T *yo = y + ((n * s->c_out + o0 + r) * OH + oh0) * OW;
            for (int64_t q = 0; q < rows; q++) {
                FC_ISA_SFX(copy_run)(yo + q * OW, buf + r * pl->bstride + q * pitch, OW);
                if (s->act) FC_ACTIVATE(yo + q * OW, OW, s);
            }
        }
    }
}

/* The channel tiling: PC outputs x NBC vectors of output channels in registers, the outputs any
 * PC of a task's, each at its own place in the copy (no computed-and-dropped columns, so a 7x7
 * plane's 49 outputs fill the tiles where the pixel tiling computes 64 lanes of its 56 flat ones).
 * Per tap PC broadcasts of the copy and NBC aligned loads of the packed weights, PC x NBC FMAs.
 *
 * buf[p][0 : nb vectors] (OB apart) = (bb, or buf itself when bb is NULL) + the sum over the kb taps t
 * of xq[pbase[p] + toff[t]] * wb[t * OB + 0 : nb vectors], for the np outputs p of a tile. */
FC_TARGET FC_INLINE void FC_ISA_SFX(chan_tile)(const FC_T *FC_RESTRICT xq, const int64_t *FC_RESTRICT pbase,
                                               const int64_t *FC_RESTRICT toff, const FC_T *FC_RESTRICT wb,
                                               int64_t kb, const FC_T *FC_RESTRICT bb, FC_T *FC_RESTRICT buf,
                                               const int np, const int nb) {
    VEC acc[PC][NBC];
    const FC_T *xp[PC];
    for (int p = 0; p < np; p++) xp[p] = xq + pbase[p];
    const FC_T *init = bb ? bb : buf;
    const int64_t init_step = bb ? 0 : OB;
    for (int p = 0; p < np; p++)
        for (int v = 0; v < nb; v++) acc[p][v] = *(const VEC *)(init + p * init_step + v * VLEN);
    for (int64_t t = 0; t < kb; t++) {
        const int64_t off = toff[t];
        VEC wv[NBC];
        for (int v = 0; v < nb; v++) wv[v] = *(const VEC *)(wb + t * OB + v * VLEN);
#pragma GCC unroll 32
        for (int p = 0; p < np; p++) {
            const FC_T xs = xp[p][off];
            for (int v = 0; v < nb; v++) acc[p][v] += xs * wv[v];
        }
    }
    for (int p = 0; p < np; p++)
        for (int v = 0; v < nb; v++) *(VEC *)(buf + p * OB + v * VLEN) = acc[p][v];
}

/* The shuffle masks of transpose(): two per level, for the block size h = VLEN / 2, VLEN / 4, ... 1. */
typedef FC_I FC_ISA_SFX(fc_flat_mask) __attribute__((vector_size(FC_VBYTES)));
#define MASK FC_ISA_SFX(fc_flat_mask)
FC_TARGET FC_INLINE void FC_ISA_SFX(transpose_masks)(MASK m[8]) {
    int l = 0;
    for (int h = (int)VLEN / 2; h >= 1; h /= 2, l++)
        for (int k = 0; k < (int)VLEN; k++) {
            m[2 * l][k] = (FC_I)((k & h) ? VLEN + k - h : k);
            m[2 * l + 1][k] = (FC_I)((k & h) ? VLEN + k : k + h);
        }
}

/* r = its transpose, VLEN x VLEN: per level, rows i and i + h swap their off-diagonal h-blocks,
 * one two-source shuffle each (AVX-512: vpermt2ps; log2(VLEN) x VLEN of them). */
FC_TARGET FC_INLINE void FC_ISA_SFX(transpose)(VEC r[VLEN], const MASK m[8]) {
    int l = 0;
#pragma GCC unroll 8
    for (int h = (int)VLEN / 2; h >= 1; h /= 2, l++) {
#pragma GCC unroll 64
        for (int i = 0; i < (int)VLEN; i++)
            if (!(i & h)) {
                const VEC a = r[i], b = r[i + h];
                r[i] = __builtin_shuffle(a, b, m[2 * l]);
                r[i + h] = __builtin_shuffle(a, b, m[2 * l + 1]);
            }
    }
}

/* wk[t][0 : nb vectors] = taps [k0, k0 + kb) of the block's rows (rows[r]: channel r's, at tap 0),
 * VLEN rows x VLEN taps per transpose when a row's taps are contiguous in w.  Not inlined: its
 * eight masks would stay in registers through chan_block's tiles, which need 29 of the 32. */
FC_TARGET __attribute__((noinline)) static void FC_ISA_SFX(chan_pack)(const FC_T *const *FC_RESTRICT rows,
                                                                      const int64_t *FC_RESTRICT woff, int contiguous,
                                                                      int64_t k0, int64_t kb, int nb,
                                                                      FC_T *FC_RESTRICT wk) {
    MASK m[8];
    FC_ISA_SFX(transpose_masks)(m);
    for (int v = 0; v < nb; v++) {
        const FC_T *const *rv = rows + v * VLEN;
        int64_t t = 0;
        if (contiguous)
            for (; t + VLEN <= kb; t += VLEN) {
                VEC r[VLEN];
                for (int i = 0; i < (int)VLEN; i++) r[i] = *(const VEC *)(rv[i] + k0 + t);
                FC_ISA_SFX(transpose)(r, m);
                for (int i = 0; i < (int)VLEN; i++) *(VEC *)(wk + (t + i) * OB + v * VLEN) = r[i];
            }
        for (; t < kb; t++)
            for (int i = 0; i < (int)VLEN; i++) wk[t * OB + v * VLEN + i] = rv[i][woff[k0 + t]];
    }
}

/* The npix outputs of a task for a block of nb vectors of channels, into buf (npix x OB): passes of
 * kblock taps over all the outputs, each pass's weights packed first into wk (within L1).  Packed
 * here, per task, not once per call: a call's packed copy would be as large as w (9.4 MB for
 * ResNet-18's conv5_x), written and read back through memory, where at batch 1 each weight meets
 * only 49 outputs; per task they are transposed from lines the pass reads anyway. */
#define CHAN_TILE(np_, nb_) FC_ISA_SFX(chan_tile)(xq, pbase + q, toff + k0, wk, kb, k0 ? NULL : bb, \
                                                  buf + q * OB, (np_) < PC ? (np_) : PC, (nb_) < NBC ? (nb_) : NBC)
#define CHAN_TILES(nb_)                                     \
    switch (np) {                                           \
    case 8: CHAN_TILE(8, nb_); break;                       \
    case 7: CHAN_TILE(7, nb_); break;                       \
    case 6: CHAN_TILE(6, nb_); break;                       \
    case 5: CHAN_TILE(5, nb_); break;                       \
    case 4: CHAN_TILE(4, nb_); break;                       \
    case 3: CHAN_TILE(3, nb_); break;                       \
    case 2: CHAN_TILE(2, nb_); break;                       \
    default: CHAN_TILE(1, nb_); break;                      \
    }
FC_TARGET static void FC_ISA_SFX(chan_block)(const FC_T *FC_RESTRICT xq, const int64_t *FC_RESTRICT pbase,
                                             const int64_t *FC_RESTRICT toff, const FC_T *const *FC_RESTRICT rows,
                                             const int64_t *FC_RESTRICT woff, int contiguous, int64_t K,
                                             int64_t kblock, const FC_T *FC_RESTRICT bb, FC_T *FC_RESTRICT wk,
                                             FC_T *FC_RESTRICT buf, int64_t npix, int nb) {
    for (int64_t k0 = 0; k0 < K; k0 += kblock) {
        const int64_t kb = fc_min64(kblock, K - k0), next = fc_min64(kblock, K - k0 - kb);
        FC_ISA_SFX(chan_pack)(rows, woff, contiguous, k0, kb, nb, wk);
        /* the next pass's lines of w, fetched during this pass's tiles: a block's rows are nb x VLEN
         * short streams that the hardware prefetchers do not follow (ResNet-18's conv5_x spent a
         * quarter of its time in chan_pack, waiting on memory, without this) */
        if (contiguous)
            for (int r = 0; r < nb * (int)VLEN; r++)
                for (int64_t e = 0; e < next; e += 64 / (int64_t)sizeof(FC_T))
                    __builtin_prefetch(rows[r] + k0 + kb + e, 0, 2);
        for (int64_t q = 0; q < npix; q += PC) {
            const int np = (int)fc_min64(PC, npix - q);
            switch (nb) {
            case 4: CHAN_TILES(4); break;
            case 3: CHAN_TILES(3); break;
            case 2: CHAN_TILES(2); break;
            default: CHAN_TILES(1); break;
            }
        }
    }
}
#undef CHAN_TILES
#undef CHAN_TILE

/* y's rows of a block's ob channels (ystride apart, from yo) = the task's tiles of one image, bo
 * (opix outputs x OB channels, output-major), transposed VLEN outputs x VLEN channels at a time (the
 * outputs one by one past the last full VLEN), then activated.  Not inlined, as chan_pack. */
FC_TARGET __attribute__((noinline)) static void FC_ISA_SFX(chan_store)(const FC_T *FC_RESTRICT bo, FC_T *FC_RESTRICT yo,
                                                                       int64_t ystride, int64_t opix, int64_t ob,
                                                                       const fc_conv2d_shape *s) {
    MASK m[8];
    FC_ISA_SFX(transpose_masks)(m);
    const int64_t full = opix / VLEN * VLEN;
    for (int64_t v = 0; v * VLEN < ob; v++) {
        const int64_t rows = fc_min64(VLEN, ob - v * VLEN);
        FC_T *yv = yo + v * VLEN * ystride;
        const FC_T *bv = bo + v * VLEN;
        for (int64_t q = 0; q < full; q += VLEN) {
            VEC r[VLEN];
            for (int i = 0; i < (int)VLEN; i++) r[i] = *(const VEC *)(bv + (q + i) * OB);
            FC_ISA_SFX(transpose)(r, m);
            for (int64_t i = 0; i < rows; i++) *(VEC *)(yv + i * ystride + q) = r[i];
        }
        for (int64_t i = 0; i < rows; i++)
            for (int64_t q = full; q < opix; q++) yv[i * ystride + q] = bv[q * OB + i];
    }
    if (s->act)
        for (int64_t r = 0; r < ob; r++) FC_ACTIVATE(yo + r * ystride, opix, s);
}
#undef MASK

/* Task t of the channel tiling: images [n0, n0 + nimg), group g, run u of output rows, run h of
 * channel blocks; image i's copy at xq + i * cg * csize, its outputs after the previous images'. */
FC_TARGET static void FC_ISA_SFX(chan_task)(const FC_T *FC_RESTRICT x, const FC_T *FC_RESTRICT w,
                                            const fc_weight_strides *ws, const int64_t *FC_RESTRICT woff,
                                            const FC_T *FC_RESTRICT bias, FC_T *FC_RESTRICT y,
                                            const int64_t *FC_RESTRICT toff, const int64_t *FC_RESTRICT pbase,
                                            const fc_conv2d_shape *s, const fc_flat_plan *pl, int64_t t,
                                            FC_T *FC_RESTRICT work, int64_t *copied) {
    const int64_t h = t % pl->ochunks, u = t / pl->ochunks % pl->chunks;
    const int64_t g = t / (pl->ochunks * pl->chunks) % s->groups;
    const int64_t n0 = t / (pl->ochunks * pl->chunks * s->groups) * pl->images, nimg = fc_min64(pl->images, s->n - n0);
    const int64_t OH = s->out_h, OW = s->out_w, K = pl->K, cg = pl->cg;
    const int64_t oh0 = u * pl->chunk, opix = fc_min64(pl->chunk, OH - oh0) * OW, npix = nimg * opix;
    FC_T *xq = work, *wk = work + fc_round_up(pl->images * cg * pl->L.csize, 16), *buf = wk + pl->kblock * OB;
    const int contiguous = ws->j == 1 && ws->i == s->kw && ws->c == s->kh * s->kw;
    if (*copied != t / pl->ochunks) { /* as in flat_task */
        for (int64_t i = 0; i < nimg; i++)
            for (int64_t c = 0; c < cg; c++)
                FC_ISA_SFX(copy_plane)(x + ((n0 + i) * s->c_in + g * cg + c) * s->h * s->w,
                                       xq + (i * cg + c) * pl->L.csize, s, &pl->L, oh0);
        *copied = t / pl->ochunks;
    }
    const int64_t b0 = h * pl->ochunk, b1 = fc_min64(pl->oblocks, b0 + pl->ochunk);
    for (int64_t b = b0; b < b1; b++) {
        const int64_t o0 = g * pl->og + b * OB, ob = fc_min64(OB, pl->og - b * OB);
        FC_T bb[OB] __attribute__((aligned(64)));
        const FC_T *rows[OB]; /* past the group's channels its last, computed and dropped */
        for (int64_t r = 0; r < OB; r++) {
            bb[r] = bias && r < ob ? bias[o0 + r] : (FC_T)0;
            rows[r] = w + g * ws->g + (b * OB + fc_min64(r, ob - 1)) * ws->o;
        }
        FC_ISA_SFX(chan_block)(xq, pbase, toff, rows, woff, contiguous, K, pl->kblock, bb, wk, buf, npix,
                               (int)fc_ceil_div(ob, VLEN));
        /* the tiles' transpose into y's rows: npix x ob stores beside npix x ob x K FMAs (one by one,
         * strided, they were 1.7% of ResNet-18's conv4_1; Zen 4, avx512) */
        for (int64_t i = 0; i < nimg; i++)
            FC_ISA_SFX(chan_store)(buf + i * opix * OB, y + (((n0 + i) * s->c_out + o0) * OH + oh0) * OW, OH * OW,
                                   opix, ob, s);
    }
}

/* The channel tiling's call. */
FC_TARGET static int FC_ISA_SFX(chan_fwd)(const FC_T *x, const FC_T *w, const fc_weight_strides *ws,
                                          const FC_T *bias, FC_T *y, const fc_conv2d_shape *s, int64_t nt) {
    fc_flat_plan pl = fc_flat_make_plan(s, nt, OB, PC, s->out_w, FC_FLAT_CBUF_BYTES, VLEN, (int64_t)sizeof(FC_T));
    const int64_t elem = (int64_t)sizeof(FC_T);
    pl.kblock = VLEN * fc_max64(1, FC_FLAT_KBLOCK_BYTES / (VLEN * OB * elem));
    /* Small planes at a batch: a task takes several images while their copies, their outputs and
     * enough tasks allow, so a block's weights are packed once for them all (batch 8, ResNet-18's
     * conv5_1 and conv5_x: 1.07-1.09 of the pixel tiling's time with one image per task, 0.83-0.84
     * with several; interleaved A/B, avx512). */
    if (pl.chunks == 1) {
        const int64_t copy = pl.cg * pl.L.csize * elem, outs = s->out_h * s->out_w * OB * elem;
        const int64_t runs = s->groups * pl.oblocks, want = FC_FLAT_TASKS_PER_THREAD * nt;
        while (pl.images < s->n && (pl.images + 1) * copy <= FC_FLAT_CHAN_COPY_BYTES &&
               (pl.images + 1) * outs <= FC_FLAT_CBUF_BYTES && fc_ceil_div(s->n, pl.images + 1) * runs >= want)
            pl.images++;
        const int64_t sets = fc_ceil_div(s->n, pl.images) * s->groups;
        pl.ochunks = fc_max64(1, fc_min64(pl.oblocks, fc_ceil_div(want, sets)));
        pl.ochunk = fc_ceil_div(pl.oblocks, pl.ochunks);
        pl.ochunks = fc_ceil_div(pl.oblocks, pl.ochunk);
        pl.tasks = sets * pl.ochunks;
    }
    const int64_t npix = pl.images * pl.chunk * s->out_w, opix = pl.chunk * s->out_w;
    /* per thread: the copy, the pass's packed weights, the output buffer (each 64-byte aligned) */
    const int64_t per_thread = fc_round_up(pl.images * pl.cg * pl.L.csize, 16) + pl.kblock * OB + npix * OB + 16;
    FC_T *work = fc_alloc((size_t)(nt * per_thread) * sizeof(FC_T));
    int64_t *toff = fc_flat_tap_offsets(s, &pl.L, pl.cg);
    int64_t *woff = fc_alloc((size_t)pl.K * sizeof(int64_t));  /* where tap t sits in a channel's row of w */
    int64_t *pbase = fc_alloc((size_t)npix * sizeof(int64_t)); /* where output q of a task reads the copy */
    int64_t *copied = fc_alloc((size_t)nt * sizeof(int64_t));
    if (!work || !toff || !woff || !pbase || !copied) {
        fc_free(work);
        fc_free(toff);
        fc_free(woff);
        fc_free(pbase);
        fc_free(copied);
        return FC_ENOMEM;
    }
    for (int64_t c = 0, t = 0; c < pl.cg; c++)
        for (int64_t i = 0; i < s->kh; i++)
            for (int64_t j = 0; j < s->kw; j++) woff[t++] = c * ws->c + i * ws->i + j * ws->j;
    for (int64_t q = 0; q < npix; q++)
        pbase[q] = q / opix * pl.cg * pl.L.csize + q % opix / s->out_w * pl.L.pitch + q % s->out_w;
    for (int64_t i = 0; i < nt; i++) copied[i] = -1;
    /* Tasks in equal shares, each thread a contiguous run of them, where they divide evenly: a run of
     * rows' tasks (one per channel block) then fall to one thread, which copies the rows once, where
     * dynamic scheduling dealt them to both (ResNet-18's conv3_1, 4 runs x 2 blocks: 162-183 ->
     * 193-194 GFLOP/s in two alternating rounds; Zen 4, avx512) */
    if (pl.tasks % nt == 0) {
        FC_OMP_PARALLEL_FOR_STATIC((int)nt)
        for (int64_t t = 0; t < pl.tasks; t++)
            FC_ISA_SFX(chan_task)(x, w, ws, woff, bias, y, toff, pbase, s, &pl, t,
                                  work + (int64_t)FC_THREAD_ID() * per_thread, copied + FC_THREAD_ID());
    } else {
        FC_OMP_PARALLEL_FOR((int)nt)
        for (int64_t t = 0; t < pl.tasks; t++)
            FC_ISA_SFX(chan_task)(x, w, ws, woff, bias, y, toff, pbase, s, &pl, t,
                                  work + (int64_t)FC_THREAD_ID() * per_thread, copied + FC_THREAD_ID());
    }
    fc_free(work);
    fc_free(toff);
    fc_free(woff);
    fc_free(pbase);
    fc_free(copied);
    return FC_OK;
}

FC_TARGET static int FC_ISA_SFX(flat_fwd)(const FC_T *x, const FC_T *w, const fc_weight_strides *ws,
                                          const FC_T *bias, FC_T *y, const fc_conv2d_shape *s, int n_threads) {
    const int64_t nt = n_threads > 0 ? n_threads : 1;
    const int64_t vlen = VLEN, elem = (int64_t)sizeof(FC_T);
    fc_flat_plan pl = fc_flat_make_plan(s, nt, MR, NV * vlen, fc_flat_make_layout(s, 1, vlen).pitch,
                                        FC_FLAT_TILE_BYTES, vlen, elem);
    const fc_weight_strides contiguous = {pl.og * pl.K, pl.K, s->kh * s->kw, s->kw, 1};
    if (!ws) ws = &contiguous;
    /* The channel tiling from FC_FLAT_CHAN_TAPS taps per output, where a pass's transpose and the
     * tiles' transpose into y are small beside K FMAs per output, and while one output row of a
     * block fits its buffer (interleaved A/B, avx512, batch 1 and 8: its time / the pixel tiling's
     * 0.77-0.98 on ResNet-18's 3x3s from 56x56 to 7x7, 0.86-0.90 on AlexNet's conv1 (363 taps),
     * 1.04-1.08 on ResNet-18's conv1 (147), 1.3-1.4 on VGG's conv1_1 (27)). */
    const int chan = FC_FLAT_TILING ? FC_FLAT_TILING == 2
                                    : pl.K >= FC_FLAT_CHAN_TAPS && OB * s->out_w * elem <= FC_FLAT_CBUF_BYTES;
    if (chan) return FC_ISA_SFX(chan_fwd)(x, w, ws, bias, y, s, nt);
    /* Packing took 3 ms of a 5 ms call on ResNet-18's conv5_x (512x512x3x3): large weights are read
     * in place.  Small ones are packed (first layers: 0.55-0.65 of im2col's time in place, 0.4-0.5
     * packed, avx512): a tap's MR weights then share a cache line instead of MR lines. */
    pl.in_place = ws->j == 1 && ws->i == s->kw && ws->c == s->kh * s->kw &&
                  pl.og * pl.K * (int64_t)sizeof(FC_T) > FC_FLAT_PACK_BYTES;
    const int64_t packed = pl.in_place ? (pl.og % MR ? s->groups : 0) : s->groups * pl.oblocks;
    /* per thread: the copy, then the tile buffer (each 64-byte aligned) */
    const int64_t per_thread = fc_round_up(pl.cg * pl.L.csize, 16) + MR * pl.bstride + 16;
    FC_T *wpack = fc_alloc((size_t)(fc_max64(packed, 1) * pl.K * MR) * sizeof(FC_T));
    FC_T *work = fc_alloc((size_t)(nt * per_thread) * sizeof(FC_T));
    int64_t *toff = fc_flat_tap_offsets(s, &pl.L, pl.cg);
    int64_t *copied = fc_alloc((size_t)nt * sizeof(int64_t)); /* per thread: the run of rows its copy holds */
    if (!wpack || !work || !toff || !copied) {
        fc_free(wpack);
        fc_free(work);
        fc_free(toff);
        fc_free(copied);
        return FC_ENOMEM;
    }
    for (int64_t i = 0; i < nt; i++) copied[i] = -1;
    FC_OMP_PARALLEL((int)nt)
    {
        FC_OMP_FOR
        for (int64_t gb = 0; gb < packed; gb++) /* the blocks flat_task reads packed */
            FC_ISA_SFX(flat_pack_weights)(w, ws, wpack + gb * pl.K * MR, s, &pl,
                                          pl.in_place ? gb : gb / pl.oblocks,
                                          pl.in_place ? pl.oblocks - 1 : gb % pl.oblocks);
        FC_OMP_FOR
        for (int64_t t = 0; t < pl.tasks; t++)
            FC_ISA_SFX(flat_task)(x, w, ws, wpack, bias, y, toff, s, &pl, t, work + (int64_t)FC_THREAD_ID() * per_thread,
                                  copied + FC_THREAD_ID());
    }
    fc_free(wpack);
    fc_free(work);
    fc_free(toff);
    fc_free(copied);
    return FC_OK;
}

#undef VEC
#undef VLEN
#undef MR
#undef NV
#undef PC
#undef NBC
#undef OB

#endif
