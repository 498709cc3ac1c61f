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
 * Vectorizing over pixels keeps y's NCHW rows contiguous in the registers; vectorizing over output
 * channels (oneDNN's layout for small ic) would need a transpose of every tile into NCHW.
 *
 * The same loop serves a 7x7 or 14x14 plane with hundreds of channels, where im2col's GEMM is
 * 49-196 columns wide: the flat run of a 7x7 plane (pad 1) is 63 outputs, one 4-vector tile, and
 * K = 9 x c_in taps amortize everything around the tile.  Two things make that hold: the weights
 * are read in place from w's rows when they are large (packing 512x512x3x3 cost 3 of 5 ms) and
 * packed per call only when small (a tap's MR weights then share a cache line), and a plane is
 * cut into runs of rows only after its channel blocks, never below one full tile.
 *
 * Tasks: (image, group, run of output rows, run of MR-channel blocks), at least a few per thread;
 * the runs of rows are short enough for the tile buffer to stay in L1 and the copy in L2.  A
 * hostile padding or dilation can make even one row's copy enormous: the Python side refuses those
 * (fastconv/common/flat.py), and the tuner picks another kernel.
 *
 * Register tiles (accumulators + loads within the ISA's vector registers): avx512 6 x 4 zmm (24
 * accumulators, 10 loads per 24 FMAs; 8 x 3 and 12 x 2 were 2-40% slower on ResNet-18's small
 * planes, interleaved A/B), avx2 and generic 4 x 3 (12 accumulators, 3 loads and a broadcast in the
 * 16 registers; 6 x 2 and 3 x 4 were no better on the avx2 path of the AVX-512 machine, 0.82-1.21
 * and 0.96-1.98 of its time).  -DFC_FLAT_{MR,NV}_{AVX512,AVX2} override them, for such A/B builds.
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
#define FC_FLAT_COPY_BYTES (512 << 10) /* a task's input copy: within L2 (1-2 MB), beside a weight block */
#define FC_FLAT_TILE_BYTES (32 << 10)  /* a task's output buffer: within L1 */
#define FC_FLAT_PACK_BYTES (256 << 10) /* a group's weights up to this size are packed per call */
#define FC_FLAT_TASKS_PER_THREAD 4

/* How one call is cut into tasks, for an ISA's tile (mr channels, vectors of vlen elements). */
typedef struct {
    int64_t cg, og, K;        /* channels per group in and out, taps per output channel */
    int64_t oblocks;          /* MR-channel blocks per group */
    int64_t chunk, chunks;    /* output rows per task, runs of rows per plane */
    int64_t ochunk, ochunks;  /* MR-blocks per task, runs of blocks per group */
    int64_t tasks;
    int64_t bstride;          /* elements per channel row of a task's output buffer */
    fc_flat_layout L;         /* a task's copy: the inputs of chunk output rows */
    int in_place;             /* the full blocks are read from w itself (its taps (c, i, j) of a channel
                               * are K contiguous elements), only a group's partial last block packed */
} fc_flat_plan;


static fc_flat_plan fc_flat_make_plan(const fc_conv2d_shape *s, int64_t nt, int64_t mr, int64_t nv, int64_t vlen,
                                      int64_t elem) {
    fc_flat_plan p;
    p.cg = s->c_in / s->groups;
    p.og = s->c_out / s->groups;
    p.K = p.cg * s->kh * s->kw;
    p.oblocks = fc_ceil_div(p.og, mr);
    const int64_t planes = s->n * s->groups, want = FC_FLAT_TASKS_PER_THREAD * nt;
    const int64_t pitch = fc_flat_make_layout(s, 1, vlen).pitch;
    /* The longest run of rows whose buffer fits L1 and whose copy fits L2 (at least one row)... */
    int64_t chunk = fc_max64(1, fc_min64(s->out_h, FC_FLAT_TILE_BYTES / (mr * pitch * elem)));
    while (chunk > 1 && p.cg * fc_flat_make_layout(s, chunk, vlen).csize * elem > FC_FLAT_COPY_BYTES) chunk /= 2;
    /* ...then, for a few tasks per thread, the channel blocks are split (each task copies its rows
     * again, cheap beside K x MR FMAs per tile), and the rows last, not below one full tile's (on
     * a 7x7 plane a row is one vector: one load per MR FMAs). */
    const int64_t chunks = fc_ceil_div(s->out_h, chunk);
    p.ochunks = fc_max64(1, fc_min64(p.oblocks, fc_ceil_div(want, planes * chunks)));
    p.ochunk = fc_ceil_div(p.oblocks, p.ochunks);
    p.ochunks = fc_ceil_div(p.oblocks, p.ochunk);
    const int64_t tile_rows = fc_min64(s->out_h, fc_ceil_div(nv * vlen, pitch));
    p.chunks = fc_max64(chunks, fc_min64(fc_ceil_div(s->out_h, tile_rows), fc_ceil_div(want, planes * p.ochunks)));
    p.chunk = fc_ceil_div(s->out_h, p.chunks);
    p.chunks = fc_ceil_div(s->out_h, p.chunk);
    p.tasks = planes * p.chunks * p.ochunks;
    p.L = fc_flat_make_layout(s, p.chunk, vlen);
    p.bstride = fc_round_up(p.chunk * p.L.pitch, vlen);
    return p;
}

#define FC_T float
#define FC_SFX(name) name##_f32
#include "direct_flat.c"
#undef FC_T
#undef FC_SFX

#define FC_T double
#define FC_SFX(name) name##_f64
#include "direct_flat.c"
#undef FC_T
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
#else
#define MR FC_FLAT_MR_AVX2
#define NV FC_FLAT_NV_AVX2
#endif

_Static_assert(NV <= 4, "flat_block ends a row with one tile of at most 3 vectors");

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
            for (int64_t q = 0; q < rows; q++)
                FC_ISA_SFX(copy_run)(yo + q * OW, buf + r * pl->bstride + q * pitch, OW);
        }
    }
}

FC_TARGET static int FC_ISA_SFX(flat_fwd)(const FC_T *x, const FC_T *w, const fc_weight_strides *ws,
                                          const FC_T *bias, FC_T *y, const fc_conv2d_shape *s, int n_threads) {
    const int64_t nt = n_threads > 0 ? n_threads : 1;
    fc_flat_plan pl = fc_flat_make_plan(s, nt, MR, NV, VLEN, (int64_t)sizeof(FC_T));
    const fc_weight_strides contiguous = {pl.og * pl.K, pl.K, s->kh * s->kw, s->kw, 1};
    if (!ws) ws = &contiguous;
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
        free(wpack);
        free(work);
        free(toff);
        free(copied);
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
    free(wpack);
    free(work);
    free(toff);
    free(copied);
    return FC_OK;
}

#undef VEC
#undef VLEN
#undef MR
#undef NV

#endif
