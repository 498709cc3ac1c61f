/* Winograd F(m x m, 3 x 3) conv2d forward and weight gradient, m = 2 (f2k3) and 4 (f4k3): the
 * twin of fastconv/numba/winograd.py.  3x3 filters, stride 1, dilation 1, any padding (negative
 * too: the backward rewrite of fastconv/common/transpose.py crops), groups, float32 and float64.
 * The weight gradient (backward_weight, after the forward below) reuses the forward's input
 * transform and frame machinery; its own comment says how it is cut up.
 *
 * Output tiles of m x m pixels read input tiles of alpha x alpha = (m + 2)^2 pixels; tile (th, tw)
 * of image n starts at input row th*m - pad_top, column tw*m - pad_left (zero outside the input).
 * The tiles of a group are numbered over all images (q = (n, th, tw)), so small images batch up.
 * With xi = (k, l) one of the alpha^2 transformed positions, the phases are:
 *   transform_filter  once per weight value (fastconv.common.winograd.FILTERS keeps it):
 *                     U[g][xi][o][c] = (G w[g][o][c] G^T)[xi], computed in double, packed for
 *                     batched_gemm as [g][xi][o-block][c][MR] (MR output channels interleaved,
 *                     zero past og), vectorized over a block's MR channels (gathered loads);
 *                     it tells whether U is finite as it writes it (FC_ENONFINITE otherwise).
 *                     w is read through its strides, so the flipped, transposed view of the
 *                     backward pass costs no copy.  512 x 512 filters, F4, 2 threads: 2.3 ms
 *                     (before: 5.2 scalar, in fours, plus 2.3 for a separate finiteness pass).
 *   per run of tiles (at most FC_WINO_RUN_BLOCKS NR-blocks), all threads together:
 *   transform_input   V[g][xi][c][t] = (BT d_{c,t} B)[xi], packed as [g][xi][NR-block][c][NR];
 *                     split by input channel;
 *   batched_gemm      M[xi][o][t] = sum_c U[g][xi][o][c] V[g][xi][c][t]: alpha^2 GEMMs of
 *                     og x tiles x cg by an MR x NR register microkernel (c.direct's shape), and
 *   transform_output  y tile = AT M_{o,t} A + bias, clipped at the right and bottom edges;
 *                     both split by chunks of output channels, M private to the thread.
 * Two departures from per-thread tasks (the Numba twin's plan), both measured:
 * - V is shared, so no thread transforms the same input twice and each reads only its chunk of U
 *   per run.  VGG conv4_2 / conv5_1 at batch 1 have 49 and 16 tiles of F4: per-thread tasks had
 *   to split the output channels 8 ways and repeat transform_input 8 times (65% of the time).
 * - batched_gemm is not OpenBLAS, as im2col is: these GEMMs are short and wide (tens of tiles
 *   against hundreds of channels), where OpenBLAS repacks U on every call: 36 GEMMs of
 *   256 x N x 256 (og x tiles x cg) ran at 23 / 32 / 44 GFLOP/s for N = 16 / 32 / 64 on one
 *   core.  The microkernel reads U packed once per weight and V packed by transform_input itself,
 *   and runs near the core's peak (batched_gemm is 80-90% of the time: figures below).
 *
 * The transforms work on vectors of TL tiles (one AVX2 register: 8 floats or 4 doubles) from one
 * tile row, a "frame".  transform_input copies the alpha input rows of a run of tiles into a zero
 * padded band (no bounds checks after), splits each row of a frame into the tiles' alpha columns
 * with register shuffles (column j of tile t is row[t*m + j]), applies BT along the rows, then
 * along the columns.  transform_output applies AT the same way and interleaves the columns back.
 * BT and AT are the generated constants of csrc/winograd_matrices.h: fully unrolled, their zeros
 * vanish and their +-1s become adds at compile time (combine()).
 *
 * Vectorization, checked in the assembly (objdump -d, gcc 12 -O3, the avx2 kernels):
 * transform_input / output_task / transform_filter are ymm code (vaddps, vsubps, vfmadd*ps, vshufps /
 * vunpck*ps; the f4k3 f32 input task: 84 vshufps for a frame's 6 rows, no scalar arithmetic); the
 * microkernel is 2 aligned loads, 6 vbroadcastss and 12 vfmadd231ps per channel, as in direct.c;
 * no compare of a matrix entry is left (vucomisd): every zero term folded away.
 *
 * Figures (AMD EPYC Zen 3, 2 cores shared with other jobs, float32, 2 threads, medians of
 * interleaved runs; the machine was never idle, so ratios are the figures to trust):
 *   fastconv bench --net vgg16 --layers conv3_2,conv4_2,conv5_1
 *                  --kernels c.winograd_f2k3,c.winograd_f4k3,c.im2col --no-reference --repeats 7
 *   effective GFLOP/s (direct FLOPs / time), batch 1:  conv3_2 / conv4_2 / conv5_1
 *     c.im2col 90-110 / 90-116 / 106-107, f2k3 195-200 / 193-194 / 128-129,
 *     f4k3 268 / 257-286 / 181-187;  batch 8: im2col 118-125 / 128-134 / 128-144,
 *     f2k3 243-253 / 231-251 / 226-232, f4k3 393-398 / 384-406 / 300.
 *   Against torch 2.13's conv2d (2 threads) in the same rounds, the best tile (always f4k3) ran
 *   1.9-3.4x faster at batch 1 and 2.1-4.0x at batch 8, forward; 1.2-3.5x for grad of input.
 *   Phases (profile): batched_gemm 77-92% of the time, transform_input 6-16%, transform_output
 *   2-12%.  conv5_1 at batch 1 reads its 37.7 MB of F4 U from DRAM for 16 tiles, which bounds it.
 *
 * One set of kernels per vector ISA (as in direct.c), the shape's isa picking one per call: generic
 * and avx2 are the code above (32-byte vectors; generic is it compiled for baseline x86-64, where
 * GCC splits each vector in two), avx512 (x86-64-v4) the same transforms on 32 registers and a
 * batched_gemm microkernel holding a block's NR tiles in one zmm per output channel, 16 channels
 * deep (U packed for MR = 16: fc_winograd_mr).  Measured (AMD EPYC Zen 4, 2 threads, float32, F4,
 * batch 1, time relative to c.im2col in the same interleaved rounds, 2 runs each; lower is
 * better): VGG conv2_2 avx2 0.38-0.53 / avx512 0.32-0.33, conv3_2 0.38-0.43 / 0.33-0.34, conv4_2
 * 0.46-0.49 / 0.29-0.46, conv5_1 0.76-0.81 / 0.53-0.69, ResNet 256@14x14 0.69-0.91 / 0.55-0.74;
 * effective 430-525 GFLOP/s on conv2_2 / conv3_2 against numpy's 177-202 GFLOP/s GEMM.  The
 * transforms stay 256-bit on every path (their shuffles are written for 8 float lanes), by
 * measurement: on AMD EPYC Zen 5 (two 512-bit FMA pipes) a 512-bit version (a frame of 16 tiles
 * per zmm, one microkernel block; masks extended lane by lane) was slower, the output transform's
 * share of the threads' time rising from 7-13% to 12-20% on conv1_2..conv2_2 and F4's call times
 * 2-70% longer on the early layers (benchmarks/profile.py --kernels c.winograd_f4k3, the two
 * builds alternated twice): wider frames waste more lanes at a row's end, and the transforms are
 * bound by moving the input in (12% of the cycles in memcpy filling the band, perf) and V out,
 * not by their shuffles.  Nor did a 2-block register tile (2 x 12 or 2 x 14 channels, half the
 * loads per FMA) help the batched GEMM there: the two blocks' V no longer fit L1 at 256-512
 * channels, and conv4_2 / conv5_1 ran 10-30% slower.
 *
 * The file is a template in two levels: it includes itself once per tile size and dtype, and each
 * of those once per ISA.
 */
#ifndef FC_T

#include <cblas.h>

#include "fc_internal.h"
#if FC_X86
#include <immintrin.h> /* transform_filter's gathers */
#endif
#include "winograd_matrices.h"

/* Output channels of the batched GEMM's register tile (U is packed for it): AVX-512 holds a
 * block's NR tiles in one zmm per channel, 16 channels; AVX2 two ymm per channel, 6 channels. */
#define FC_WINO_MR_AVX512 16
#define FC_WINO_MR 6
/* A chunk of U (one xi, mc MR-blocks of output channels) stays in L2 while the NR-blocks of the
 * run stream past it.  A run is at most FC_WINO_RUN_BLOCKS NR-blocks of tiles: U is read once
 * per run, so longer runs read it less often (and meet fewer barriers), at the cost of a larger
 * V.  Measured on VGG conv1_2..conv5_1, F4, batch 1 and 8: 2 blocks ran 2-12% slower than 4;
 * 8 blocks no faster than 4 beyond the noise, with twice the V. */
#define FC_WINO_MC_BYTES (192 << 10)
#define FC_WINO_RUN_BLOCKS 4
#define FC_WINO_TASKS_PER_THREAD 4
#define FC_WINO_WGRAD_BYTES (4 << 20) /* the weight gradient's transforms per chunk of tiles */

/* How one call is cut up; the same for every tile size and dtype. */
typedef struct {
    int64_t cg, og, alpha2;    /* channels per group in and out, transformed positions */
    int64_t tiles_h, tiles_w;  /* tiles per image */
    int64_t tiles;             /* tiles of one group over all images */
    int64_t oblocks, mc;       /* MR-blocks of output channels per group; per U chunk (L2) */
    int64_t run, runs;         /* NR-blocks of tiles per run, and runs */
    int64_t ochunk, ochunks;   /* MR-blocks per output channel chunk, chunks per group */
    int64_t v_xi, m_xi;        /* elements from V[g][xi] to V[g][xi + 1], and from M[xi] to M[xi + 1] */
} fc_wino_plan;


static fc_wino_plan fc_wino_make_plan(const fc_conv2d_shape *s, int64_t m, int64_t nt, int64_t mr, int64_t nr,
                                      int64_t workspace_bytes, int64_t elem) {
    fc_wino_plan p;
    p.cg = s->c_in / s->groups;
    p.og = s->c_out / s->groups;
    p.alpha2 = (m + 2) * (m + 2);
    p.tiles_h = fc_ceil_div(s->out_h, m);
    p.tiles_w = fc_ceil_div(s->out_w, m);
    p.tiles = s->n * p.tiles_h * p.tiles_w;
    p.oblocks = fc_ceil_div(p.og, mr);
    p.mc = fc_max64(1, FC_WINO_MC_BYTES / (mr * p.cg * elem));
    /* A few output channel chunks per thread, so a descheduled thread is not waited for. */
    p.ochunks = fc_max64(1, fc_min64(p.oblocks, fc_ceil_div(FC_WINO_TASKS_PER_THREAD * nt, s->groups)));
    p.ochunk = fc_ceil_div(p.oblocks, p.ochunks);
    p.ochunks = fc_ceil_div(p.oblocks, p.ochunk);
    /* Equal runs of at most FC_WINO_RUN_BLOCKS blocks, fewer when V (shared) and every thread's
     * M would exceed the workspace; at least one block. */
    const int64_t block_bytes = p.alpha2 * nr * (s->c_in + nt * p.ochunk * mr) * elem;
    const int64_t most = fc_max64(1, fc_min64(FC_WINO_RUN_BLOCKS, workspace_bytes / block_bytes));
    const int64_t tblocks = fc_ceil_div(p.tiles, nr);
    p.runs = fc_ceil_div(tblocks, most);
    p.run = fc_ceil_div(tblocks, p.runs);
    /* One cache line more than dense: dense, V[g][xi] are 64 KB apart for cg = 256, so the alpha^2
     * vectors that transform_input stores at once all map to one L1 and L2 set (8 ways) and
     * evict each other; M likewise for transform_output's loads. */
    p.v_xi = p.run * nr * p.cg + nr;
    p.m_xi = p.ochunk * mr * p.run * nr + nr;
    return p;
}

/* A run's tiles [q0, q1) go by segments, the tiles of one tile row, and a segment by frames of
 * tl tiles aligned to the run's lanes (lane = q - q0), so the vector loads and stores of V and M
 * stay aligned.  Frame f's vector lane i is tile column tw + f*tl + i; the segment's tiles are
 * lanes [off, off + len) counted from frame 0. */
typedef struct {
    int64_t n, th, tw;  /* image, tile row, tile column of frame 0's lane 0 */
    int64_t lane;       /* the run's lane of frame 0's lane 0 (a multiple of tl) */
    int64_t off, len;   /* the segment's tiles */
    int64_t frames;
} fc_wino_segment;

static fc_wino_segment fc_wino_segment_at(const fc_wino_plan *pl, int64_t q0, int64_t q1, int64_t q,
                                          int64_t tl) {
    const int64_t plane = pl->tiles_h * pl->tiles_w, tw = q % pl->tiles_w;
    fc_wino_segment sg;
    sg.off = (q - q0) % tl;
    sg.lane = q - q0 - sg.off;
    sg.n = q / plane;
    sg.th = q % plane / pl->tiles_w;
    sg.tw = tw - sg.off;
    sg.len = fc_min64(pl->tiles_w - tw, q1 - q);
    sg.frames = fc_ceil_div(sg.off + sg.len, tl);
    return sg;
}

/* Output channels per block of U for the ISA a call runs (fastconv/c/winograd.py sizes U by it). */
int fc_winograd_mr(int64_t isa) { return fc_isa(isa) == FC_ISA_AVX512 ? FC_WINO_MR_AVX512 : FC_WINO_MR; }

/* Per dtype: FC_TI the integer of FC_T's size (lane masks), FC_TL the lanes of a ymm register. */
#define FC_T float
#define FC_TI int32_t
#define FC_TL 8
#define FC_GEMM scipy_cblas_sgemm
#define FC_M 2
#define FC_DT_SFX(name) name##_f2k3_f32
#include "winograd.c"
#undef FC_M
#undef FC_DT_SFX
#define FC_M 4
#define FC_DT_SFX(name) name##_f4k3_f32
#include "winograd.c"
#undef FC_M
#undef FC_DT_SFX
#undef FC_T
#undef FC_TI
#undef FC_TL
#undef FC_GEMM

#define FC_T double
#define FC_TI int64_t
#define FC_TL 4
#define FC_GEMM scipy_cblas_dgemm
#define FC_M 2
#define FC_DT_SFX(name) name##_f2k3_f64
#include "winograd.c"
#undef FC_M
#undef FC_DT_SFX
#define FC_M 4
#define FC_DT_SFX(name) name##_f4k3_f64
#include "winograd.c"
#undef FC_M
#undef FC_DT_SFX
#undef FC_T
#undef FC_TI
#undef FC_TL
#undef FC_GEMM

#elif !defined(FC_SFX) /* level 1, per dtype and tile: the kernels of each ISA, and the entries picking one */

#define FC_SFX(name) FC_DT_SFX(name##_generic)
#define FC_ISA_MR FC_WINO_MR
#define FC_TARGET
#define FC_GATHER_BITS 0 /* the vector width of transform_filter's gathers (0: scalar loads) */
#include "winograd.c"
#undef FC_SFX
#undef FC_ISA_MR
#undef FC_TARGET
#undef FC_GATHER_BITS

#if FC_X86
#define FC_SFX(name) FC_DT_SFX(name##_avx2)
#define FC_ISA_MR FC_WINO_MR
#define FC_TARGET FC_TARGET_AVX2
#define FC_GATHER_BITS 256
#include "winograd.c"
#undef FC_SFX
#undef FC_ISA_MR
#undef FC_TARGET
#undef FC_GATHER_BITS

#define FC_SFX(name) FC_DT_SFX(name##_avx512)
#define FC_ISA_MR FC_WINO_MR_AVX512
#define FC_TARGET FC_TARGET_AVX512
#define FC_WIDE 1 /* the microkernel holds a block's NR tiles in one 64-byte vector */
#define FC_GATHER_BITS 512
#include "winograd.c"
#undef FC_SFX
#undef FC_ISA_MR
#undef FC_TARGET
#undef FC_WIDE
#undef FC_GATHER_BITS
#endif

/* u[g][xi][b][c][r] = (G w[g][b*MR + r][c] G^T)[xi], in double, rounded once; MR = fc_winograd_mr. */
int FC_DT_SFX(fc_conv2d_transform_filter_winograd)(const FC_T *w, const fc_weight_strides *ws, FC_T *u,
                                                   const fc_conv2d_shape *s, int n_threads, double *profile) {
    switch (fc_isa(s->isa)) {
#if FC_X86
    case FC_ISA_AVX512: return FC_DT_SFX(transform_filters_avx512)(w, ws, u, s, n_threads, profile);
    case FC_ISA_AVX2: return FC_DT_SFX(transform_filters_avx2)(w, ws, u, s, n_threads, profile);
#endif
    default: return FC_DT_SFX(transform_filters_generic)(w, ws, u, s, n_threads, profile);
    }
}

int FC_DT_SFX(fc_conv2d_fwd_winograd)(const FC_T *x, const FC_T *u, const FC_T *bias, FC_T *y,
                                      const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads,
                                      double *profile) {
    switch (fc_isa(s->isa)) {
#if FC_X86
    case FC_ISA_AVX512: return FC_DT_SFX(forward_avx512)(x, u, bias, y, s, workspace_bytes, n_threads, profile);
    case FC_ISA_AVX2: return FC_DT_SFX(forward_avx2)(x, u, bias, y, s, workspace_bytes, n_threads, profile);
#endif
    default: return FC_DT_SFX(forward_generic)(x, u, bias, y, s, workspace_bytes, n_threads, profile);
    }
}

int FC_DT_SFX(fc_conv2d_bwd_weight_winograd)(const FC_T *gy, const FC_T *x, FC_T *gw, const fc_conv2d_shape *s,
                                              int64_t workspace_bytes, int n_threads) {
    switch (fc_isa(s->isa)) {
#if FC_X86
    case FC_ISA_AVX512: return FC_DT_SFX(backward_weight_avx512)(gy, x, gw, s, workspace_bytes, n_threads);
    case FC_ISA_AVX2: return FC_DT_SFX(backward_weight_avx2)(gy, x, gw, s, workspace_bytes, n_threads);
#endif
    default: return FC_DT_SFX(backward_weight_generic)(gy, x, gw, s, workspace_bytes, n_threads);
    }
}

#else /* level 2, the kernels of one dtype (FC_T), tile (FC_M) and ISA (FC_SFX, FC_TARGET) */

#define FC_MR FC_ISA_MR

#define A (FC_M + 2) /* alpha */
#if FC_M == 2
#define AT FC_WINO_F2_AT
#define GM FC_WINO_F2_G
#define BT FC_WINO_F2_BT
#else
#define AT FC_WINO_F4_AT
#define GM FC_WINO_F4_G
#define BT FC_WINO_F4_BT
#endif

typedef FC_T FC_SFX(fc_vec) __attribute__((vector_size(32)));  /* one AVX2 ymm register */
typedef FC_T FC_SFX(fc_vecu) __attribute__((vector_size(32), aligned(sizeof(FC_T))));
typedef FC_TI FC_SFX(fc_ivec) __attribute__((vector_size(32)));
#define VEC FC_SFX(fc_vec)
#define VECU FC_SFX(fc_vecu)
#define IVEC FC_SFX(fc_ivec)
#define TL ((int64_t)FC_TL)  /* tiles per transform vector */
#define NR (2 * TL)          /* tiles per microkernel tile: two vectors */
/* The widest band a segment needs: a run's tiles plus a frame, and one tile more (the split
 * reads a frame's row again one tile on, for the columns that overlap the next tile). */
#define BAND ((FC_WINO_RUN_BLOCKS * NR + TL + 1) * FC_M)

/* Shuffle masks over two vectors (a, b), b's lanes numbered from TL.  SPLIT1_E / _O take the even
 * / odd elements of a row (columns 0, 2 / 1, 3 of tiles interleaved m to a tile), SPLIT2 splits
 * those once more for m = 4, JOIN* are their exact inverses.  They stay within 128-bit halves
 * where they can (one vshufps or vunpck*; vperm2f128 for doubles), so a frame's tiles come out
 * in an order of their own rather than 0, 1, 2, ...: harmless, since every phase sees the same
 * order and join_columns restores the natural one; frame_tiles() tells which tile a lane holds. */
#if FC_TL == 8
#define SPLIT1_E ((IVEC){0, 2, 8, 10, 4, 6, 12, 14})
#define SPLIT1_O ((IVEC){1, 3, 9, 11, 5, 7, 13, 15})
#define SPLIT2_E SPLIT1_E
#define SPLIT2_O SPLIT1_O
#define JOIN_LO ((IVEC){0, 8, 1, 9, 4, 12, 5, 13})
#define JOIN_HI ((IVEC){2, 10, 3, 11, 6, 14, 7, 15})
#define JOIN2_LO JOIN_LO
#define JOIN2_HI JOIN_HI
#else
#define SPLIT1_E ((IVEC){0, 4, 2, 6})
#define SPLIT1_O ((IVEC){1, 5, 3, 7})
#define SPLIT2_E ((IVEC){0, 1, 4, 5})
#define SPLIT2_O ((IVEC){2, 3, 6, 7})
#define JOIN_LO SPLIT1_E
#define JOIN_HI SPLIT1_O
#define JOIN2_LO SPLIT2_E
#define JOIN2_HI SPLIT2_O
#endif

/* transform_filter's vectors: the MR output channels of one block (FL >= MR lanes, the rest
 * zero) for one input channel, in double, and rounded to FC_T. */
#define FL (FC_MR > 8 ? 16 : 8)
typedef double FC_SFX(fc_fvd) __attribute__((vector_size(FL * 8)));
typedef FC_T FC_SFX(fc_fvt) __attribute__((vector_size(FL * sizeof(FC_T))));
#define FVD FC_SFX(fc_fvd)
#define FVT FC_SFX(fc_fvt)

/* *out = sum_j c[j * cs] * v[j * vs] over the 3 terms of a row of G, the zero terms folded away. */
FC_TARGET FC_INLINE void FC_SFX(combine_g)(const double *c, int cs, const FVD *v, int vs, FVD *out) {
    FVD acc = {0};
    int any = 0;
#pragma GCC unroll 3
    for (int j = 0; j < 3; j++)
        if (c[j * cs] != 0) {
            acc = any ? acc + c[j * cs] * v[j * vs] : c[j * cs] * v[j * vs];
            any = 1;
        }
    *out = acc;
}

/* *out lane r = (double)tap[r * so] for r < lanes, else 0: one tap of a block's filters, gathered
 * through idx[r] = r * so where the offsets fit 32 bits (gather).  A vector built from scalar
 * loads stalls on store forwarding: 57% of the transform's cycles sat in one load (perf). */
FC_TARGET FC_INLINE void FC_SFX(gather_tap)(const FC_T *tap, const int32_t *idx, int64_t so, int64_t lanes,
                                            int gather, FVD *out) {
#if FC_GATHER_BITS == 512 && FC_TL == 8 /* 16 floats */
    if (gather) {
        const __mmask16 k = lanes >= 16 ? 0xFFFF : (__mmask16)((1u << lanes) - 1);
        const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, _mm512_loadu_si512(idx), tap, 4);
        FVT t;
        memcpy(&t, &v, sizeof t);
        *out = __builtin_convertvector(t, FVD);
        return;
    }
#elif FC_GATHER_BITS == 512 /* 16 doubles, two gathers of 8 */
    if (gather) {
        const unsigned k = lanes >= 16 ? 0xFFFF : (1u << lanes) - 1;
        const __m512d lo = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), (__mmask8)k,
                                                    _mm256_loadu_si256((const __m256i *)idx), tap, 8);
        const __m512d hi = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), (__mmask8)(k >> 8),
                                                    _mm256_loadu_si256((const __m256i *)(idx + 8)), tap, 8);
        memcpy(out, &lo, sizeof lo);
        memcpy((double *)out + 8, &hi, sizeof hi);
        return;
    }
#elif FC_GATHER_BITS == 256 && FC_TL == 8 /* 8 floats */
    if (gather) {
        const __m256 mask = _mm256_castsi256_ps(
            _mm256_cmpgt_epi32(_mm256_set1_epi32((int)lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
        const __m256 v = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), tap, _mm256_loadu_si256((const __m256i *)idx),
                                                  mask, 4);
        FVT t;
        memcpy(&t, &v, sizeof t);
        *out = __builtin_convertvector(t, FVD);
        return;
    }
#elif FC_GATHER_BITS == 256 /* 8 doubles, two gathers of 4 */
    if (gather) {
        const __m256i n = _mm256_set1_epi64x(lanes);
        const __m256d lo = _mm256_mask_i32gather_pd(_mm256_setzero_pd(), tap, _mm_loadu_si128((const __m128i *)idx),
                                                    _mm256_castsi256_pd(_mm256_cmpgt_epi64(n, _mm256_setr_epi64x(0, 1, 2, 3))), 8);
        const __m256d hi = _mm256_mask_i32gather_pd(_mm256_setzero_pd(), tap, _mm_loadu_si128((const __m128i *)(idx + 4)),
                                                    _mm256_castsi256_pd(_mm256_cmpgt_epi64(n, _mm256_setr_epi64x(4, 5, 6, 7))), 8);
        memcpy(out, &lo, sizeof lo);
        memcpy((double *)out + 4, &hi, sizeof hi);
        return;
    }
#endif
    FVD v = {0};
    for (int64_t r = 0; r < lanes; r++) v[r] = (double)tap[r * so];
    *out = v;
}

/* U[g][xi][b][c][0..MR) = (G f G^T)[xi] for the filters f of (output channels b*MR + r, input
 * channel c), r < MR, vectorized over r: the 9 taps of the block's filters are gathered into
 * vectors (lanes past og zero), transformed in double, rounded once and stored MR at a time.
 * Returns whether every value written is finite (the check the cache keeps: common/winograd.py),
 * from a NaN-propagating sum (x * 0 is 0 unless x is inf or NaN) in A independent chains. */
FC_TARGET static int FC_SFX(transform_filter)(const FC_T *FC_RESTRICT w, const fc_weight_strides *ws,
                                              FC_T *FC_RESTRICT ub, int64_t xi_stride, int64_t cg, int64_t og,
                                              int64_t g, int64_t b, const int32_t *idx, int gather) {
    const int64_t lanes = fc_min64(FC_MR, og - b * FC_MR);
    FVT check[A] = {{0}};
    for (int64_t c = 0; c < cg; c++) {
        const FC_T *wc = w + g * ws->g + b * FC_MR * ws->o + c * ws->c;
        FVD f[3][3], gf[A][3], uk;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) FC_SFX(gather_tap)(wc + i * ws->i + j * ws->j, idx, ws->o, lanes, gather, &f[i][j]);
#pragma GCC unroll 8
        for (int k = 0; k < A; k++)
            for (int j = 0; j < 3; j++) FC_SFX(combine_g)(&GM[k][0], 1, &f[0][j], 3, &gf[k][j]);
        FC_T *dst = ub + c * FC_MR;
#pragma GCC unroll 8
        for (int k = 0; k < A; k++)
#pragma GCC unroll 8
            for (int l = 0; l < A; l++) {
                FC_SFX(combine_g)(&GM[l][0], 1, gf[k], 1, &uk);
                const FVT t = __builtin_convertvector(uk, FVT);
                check[k] += t * (FC_T)0;
                memcpy(dst + (k * A + l) * xi_stride, &t, FC_MR * sizeof(FC_T));
            }
    }
    FVT all = check[0];
    for (int k = 1; k < A; k++) all += check[k];
    FC_T sum = 0;
    for (int r = 0; r < FL; r++) sum += all[r];
    return sum == 0;
}

static int FC_SFX(transform_filters)(const FC_T *w, const fc_weight_strides *ws, FC_T *u,
                                     const fc_conv2d_shape *s, int n_threads, double *profile) {
    const int64_t cg = s->c_in / s->groups, og = s->c_out / s->groups;
    const int64_t oblocks = fc_ceil_div(og, FC_MR), xi_stride = oblocks * cg * FC_MR;
    const fc_weight_strides contiguous = {og * cg * 9, cg * 9, 9, 3, 1};
    const double t0 = profile ? fc_now() : 0;
    int finite = 1;
    if (!ws) ws = &contiguous;
    int32_t idx[FL] = {0};
    const int gather = ws->o >= -INT32_MAX / FC_MR && ws->o <= INT32_MAX / FC_MR; /* 32-bit offsets */
    for (int r = 0; r < FC_MR; r++) idx[r] = gather ? (int32_t)(r * ws->o) : 0;
    FC_OMP_PARALLEL_FOR(n_threads)
    for (int64_t gb = 0; gb < s->groups * oblocks; gb++) {
        const int64_t g = gb / oblocks, b = gb % oblocks;
        FC_T *ub = u + (g * A * A * oblocks + b) * cg * FC_MR;
        if (!FC_SFX(transform_filter)(w, ws, ub, xi_stride, cg, og, g, b, idx, gather)) {
            FC_PRAGMA_ATOMIC_WRITE
            finite = 0;
        }
    }
    if (profile) profile[FC_PHASE_WEIGHT] += (fc_now() - t0) * (n_threads > 0 ? n_threads : 1);
    return finite ? FC_OK : FC_ENONFINITE;
}

/* *out = sum_j c[j * cs] * v[j * vs] over n terms of a row or column of a constant matrix:
 * unrolled, the zero terms vanish and +-1 terms are adds (no 0 + first term either, which strict
 * IEEE would keep).  (Out through a pointer: a returned vector draws GCC's -Wpsabi note in the
 * generic kernels.) */
FC_TARGET FC_INLINE void FC_SFX(combine_n)(const double *c, int cs, int n, const VEC *v, int vs, VEC *out) {
    VEC acc = {0};
    int any = 0;
#pragma GCC unroll 8
    for (int j = 0; j < n; j++)
        if (c[j * cs] != 0) {
            acc = any ? acc + (FC_T)c[j * cs] * v[j * vs] : (FC_T)c[j * cs] * v[j * vs];
            any = 1;
        }
    *out = acc;
}

/* *out = sum_j c[j] * v[j] for a row c of alpha entries. */
FC_TARGET FC_INLINE void FC_SFX(combine)(const double c[A], const VEC v[A], VEC *out) {
    FC_SFX(combine_n)(c, 1, A, v, 1, out);
}

/* The m columns of TL consecutive tiles in a row (col[p] lane i = row[tile_i * m + p], the tiles
 * in the frame's lane order), from its m vectors. */
FC_TARGET FC_INLINE void FC_SFX(split_phases)(const FC_T *row, VEC col[FC_M]) {
    VEC in[FC_M];
    for (int i = 0; i < FC_M; i++) in[i] = *(const VECU *)(row + i * TL);
#if FC_M == 2
    col[0] = __builtin_shuffle(in[0], in[1], SPLIT1_E);
    col[1] = __builtin_shuffle(in[0], in[1], SPLIT1_O);
#else /* columns 0, 2 and 1, 3 first, then each pair apart */
    const VEC e01 = __builtin_shuffle(in[0], in[1], SPLIT1_E), e23 = __builtin_shuffle(in[2], in[3], SPLIT1_E);
    const VEC o01 = __builtin_shuffle(in[0], in[1], SPLIT1_O), o23 = __builtin_shuffle(in[2], in[3], SPLIT1_O);
    col[0] = __builtin_shuffle(e01, e23, SPLIT2_E);
    col[1] = __builtin_shuffle(o01, o23, SPLIT2_E);
    col[2] = __builtin_shuffle(e01, e23, SPLIT2_O);
    col[3] = __builtin_shuffle(o01, o23, SPLIT2_O);
#endif
}

/* The alpha columns of a frame's TL tiles in an input row: col[j] lane i = row[tile_i * m + j].
 * Columns m and m + 1 are columns 0 and 1 of the next tiles: the split of the row one tile on. */
FC_TARGET FC_INLINE void FC_SFX(split_columns)(const FC_T *row, VEC col[A]) {
    VEC next[FC_M];
    FC_SFX(split_phases)(row, col);
    FC_SFX(split_phases)(row + FC_M, next);
    col[FC_M] = next[0];
    col[FC_M + 1] = next[1];
}

/* The inverse of split_phases: the output row out (m vectors, row[t*m + s] for t < TL) from the
 * columns col[s], whose lanes hold the tiles in the frame's order. */
FC_TARGET FC_INLINE void FC_SFX(join_columns)(const VEC col[FC_M], VEC out[FC_M]) {
#if FC_M == 2
    out[0] = __builtin_shuffle(col[0], col[1], JOIN_LO);
    out[1] = __builtin_shuffle(col[0], col[1], JOIN_HI);
#else
    const VEC e01 = __builtin_shuffle(col[0], col[2], JOIN2_LO), e23 = __builtin_shuffle(col[0], col[2], JOIN2_HI);
    const VEC o01 = __builtin_shuffle(col[1], col[3], JOIN2_LO), o23 = __builtin_shuffle(col[1], col[3], JOIN2_HI);
    out[0] = __builtin_shuffle(e01, o01, JOIN_LO);
    out[1] = __builtin_shuffle(e01, o01, JOIN_HI);
    out[2] = __builtin_shuffle(e23, o23, JOIN_LO);
    out[3] = __builtin_shuffle(e23, o23, JOIN_HI);
#endif
}

/* tile[i]: which of a frame's TL tiles lane i holds (split a row of tile numbers). */
FC_TARGET FC_INLINE void FC_SFX(frame_tiles)(FC_T tile[TL]) {
    FC_T row[TL * FC_M];
    VEC col[FC_M];
    for (int i = 0; i < TL * FC_M; i++) row[i] = (FC_T)(i / FC_M);
    FC_SFX(split_phases)(row, col);
    memcpy(tile, &col[0], sizeof col[0]);
}

/* band[r][0:width] = x[ih0 + r][iw0 : iw0 + width] for r < rows, zero outside the plane. */
FC_TARGET FC_INLINE void FC_SFX(fill_band)(const FC_T *FC_RESTRICT xc, FC_T band[A][BAND], int64_t H, int64_t W,
                                 int64_t ih0, int64_t iw0, int64_t width, int rows) {
    const int64_t lo = fc_min64(fc_max64(-iw0, 0), width), hi = fc_max64(lo, fc_min64(W - iw0, width));
    for (int64_t r = 0; r < rows; r++) {
        const int64_t ih = ih0 + r;
        if (ih < 0 || ih >= H) {
            memset(band[r], 0, (size_t)width * sizeof(FC_T));
            continue;
        }
        memset(band[r], 0, (size_t)lo * sizeof(FC_T));
        memcpy(band[r] + lo, xc + ih * W + iw0 + lo, (size_t)(hi - lo) * sizeof(FC_T));
        memset(band[r] + hi, 0, (size_t)(width - hi) * sizeof(FC_T));
    }
}

/* *dst = x, or only its lanes `keep` when partial (the others keep their value; bitwise, so
 * NaN-safe). */
FC_TARGET FC_INLINE void FC_SFX(store_lanes)(VEC *dst, const VEC x, const IVEC keep, const int partial) {
    *dst = partial ? (VEC)(((IVEC)x & keep) | ((IVEC)*dst & ~keep)) : x;
}

/* One frame of one channel: (BT d_t B)[xi] for xi = (k, l) into v[xi * xi_stride], lanes `keep`
 * only when partial (the others keep their value; bitwise, so NaN-safe), else all lanes. */
FC_TARGET FC_INLINE void FC_SFX(transform_frame)(FC_T band[A][BAND], int64_t at, FC_T *FC_RESTRICT v,
                                       int64_t xi_stride, const IVEC keep, const int partial) {
    VEC t[A][A]; /* t[l][r] = (d B)[r][l] */
#pragma GCC unroll 8
    for (int r = 0; r < A; r++) {
        VEC col[A];
        FC_SFX(split_columns)(band[r] + at, col);
#pragma GCC unroll 8
        for (int l = 0; l < A; l++) FC_SFX(combine)(BT[l], col, &t[l][r]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < A; k++)
#pragma GCC unroll 8
        for (int l = 0; l < A; l++) {
            VEC x;
            FC_SFX(combine)(BT[k], t[l], &x);
            FC_SFX(store_lanes)((VEC *)(v + (k * A + l) * xi_stride), x, keep, partial);
        }
}

/* One frame of one grad_y channel for the weight gradient: (AT^T g_t AT)[xi], the m x m tile
 * g_t spread to alpha x alpha (the transpose of output_frame's AT M A), stored as
 * transform_frame stores. */
FC_TARGET FC_INLINE void FC_SFX(grad_frame)(FC_T band[A][BAND], int64_t at, FC_T *FC_RESTRICT v,
                                  int64_t xi_stride, const IVEC keep, const int partial) {
    VEC t[A][FC_M]; /* t[l][r] = (g AT)[r][l] */
#pragma GCC unroll 8
    for (int r = 0; r < FC_M; r++) {
        VEC col[FC_M];
        FC_SFX(split_phases)(band[r] + at, col);
#pragma GCC unroll 8
        for (int l = 0; l < A; l++) FC_SFX(combine_n)(&AT[0][l], A, FC_M, col, 1, &t[l][r]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < A; k++)
#pragma GCC unroll 8
        for (int l = 0; l < A; l++) {
            VEC x;
            FC_SFX(combine_n)(&AT[0][k], A, FC_M, t[l], 1, &x);
            FC_SFX(store_lanes)((VEC *)(v + (k * A + l) * xi_stride), x, keep, partial);
        }
}

/* The transforms of one plane for the run's tiles [q0, q1): of input channel c (grad = 0:
 * BT d B of the alpha x alpha patches; src is the channel in image 0), or of grad_y's output
 * channel (grad = 1: AT^T g AT of the m x m tiles, for the weight gradient).  vc is the plane's
 * rows of V: lane l of xi at vc + xi*xi_stride + l / nr * block + l % nr (the forward packs
 * [xi][NR-block][c][NR]: nr = NR, block = cg*NR; the weight gradient keeps [xi][plane][tiles]:
 * nr = the chunk's tiles).  Lanes past the run's last tile, up to `lanes`, are zeroed, so the
 * GEMM never multiplies stale data (uninitialised memory could hold denormals, or NaN).  A run
 * spans at most FC_WINO_RUN_BLOCKS * NR tiles (the band's width). */
FC_TARGET FC_INLINE void FC_SFX(transform_tiles)(const FC_T *FC_RESTRICT src, FC_T *FC_RESTRICT vc,
                                       const fc_conv2d_shape *s, const fc_wino_plan *pl, int64_t q0,
                                       int64_t q1, int64_t xi_stride, int64_t nr, int64_t block,
                                       int64_t lanes, const int grad) {
    const int64_t H = grad ? s->out_h : s->h, W = grad ? s->out_w : s->w;
    const int64_t image = (grad ? s->c_out : s->c_in) * H * W;
    FC_T band[A][BAND] __attribute__((aligned(64))), tile[TL];
    FC_SFX(frame_tiles)(tile);
    VEC tiles;
    memcpy(&tiles, tile, sizeof tiles);
    for (int64_t q = q0; q < q1;) {
        const fc_wino_segment sg = fc_wino_segment_at(pl, q0, q1, q, TL);
        if (grad)
            FC_SFX(fill_band)(src + sg.n * image, band, H, W, sg.th * FC_M, sg.tw * FC_M,
                              sg.frames * TL * FC_M, FC_M);
        else
            FC_SFX(fill_band)(src + sg.n * image, band, H, W, sg.th * FC_M - s->pad_top,
                              sg.tw * FC_M - s->pad_left, (sg.frames * TL + 1) * FC_M, A);
        for (int64_t f = 0; f < sg.frames; f++) {
            const int64_t lane = sg.lane + f * TL, lo = f ? 0 : sg.off;
            const int64_t hi = fc_min64(TL, sg.off + sg.len - f * TL);
            FC_T *v = vc + lane / nr * block + lane % nr;
            /* by value, from vector compares: a mask stored lane by lane and loaded whole stalled
             * on the failed store forwarding at every merge (a third of the transforms' time) */
            const IVEC keep = (IVEC)((tiles >= (FC_T)lo) & (tiles < (FC_T)hi));
            const int partial = lo != 0 || hi != TL;
            if (grad)
                FC_SFX(grad_frame)(band, f * TL * FC_M, v, xi_stride, keep, partial);
            else
                FC_SFX(transform_frame)(band, f * TL * FC_M, v, xi_stride, keep, partial);
        }
        q += sg.len;
    }
    /* Zero the lanes of the last block that hold no tile of the run (by tile, not lane order). */
    const int64_t end = q1 - q0;
    for (int64_t lane = end - end % TL; lane < lanes; lane += TL) {
        IVEC stale;
        for (int i = 0; i < TL; i++) stale[i] = lane + (int64_t)tile[i] >= end ? -1 : 0;
        for (int64_t xi = 0; xi < pl->alpha2; xi++) {
            VEC *dst = (VEC *)(vc + xi * xi_stride + lane / nr * block + lane % nr);
            *dst = (VEC)((IVEC)*dst & ~stale);
        }
    }
}

/* transform_input of input channel c of group g for the run's tiles [q0, q1): xc is the channel
 * in image 0, vc its rows of V[g] ([xi][block][c][NR]). */
FC_TARGET static void FC_SFX(transform_input)(const FC_T *FC_RESTRICT xc, FC_T *FC_RESTRICT vc,
                                      const fc_conv2d_shape *s, const fc_wino_plan *pl,
                                      int64_t q0, int64_t q1) {
    FC_SFX(transform_tiles)(xc, vc, s, pl, q0, q1, pl->v_xi, NR, pl->cg * NR, fc_round_up(q1 - q0, NR), 0);
}

/* acc[r][v] = sum_c up[c][r] * vp[c][v*TL : (v+1)*TL] over cg channels, for the nv = 2 vectors of a
 * block, or only the first (nv = 1: a block whose tiles all lie in its first frame, such as the
 * last of 49 tiles, is not computed at full width); vp is 32-byte aligned. */
FC_TARGET FC_INLINE void FC_SFX(microkernel)(int64_t cg, const FC_T *FC_RESTRICT up, const FC_T *FC_RESTRICT vp,
                                   VEC acc[FC_MR][2], int nv) {
    for (int r = 0; r < FC_MR; r++) acc[r][0] = acc[r][1] = (VEC){0};
    for (int64_t c = 0; c < cg; c++) {
        const VEC p0 = *(const VEC *)(vp + c * NR), p1 = nv == 2 ? *(const VEC *)(vp + c * NR + TL) : p0;
        const FC_T *uc = up + c * FC_MR;
#pragma GCC unroll 6
        for (int r = 0; r < FC_MR; r++) {
            acc[r][0] += uc[r] * p0;
            if (nv == 2) acc[r][1] += uc[r] * p1;
        }
    }
}

#ifdef FC_WIDE
/* AVX-512: a block's NR tiles are one 64-byte vector (VEC2), so a row of the tile is one register
 * and the tile is MR = 16 channels deep (16 accumulators; each U element a broadcast operand). */
typedef FC_T FC_SFX(fc_vec2) __attribute__((vector_size(64)));
#define VEC2 FC_SFX(fc_vec2)
FC_TARGET FC_INLINE void FC_SFX(microkernel_wide)(int64_t cg, const FC_T *FC_RESTRICT up,
                                                  const FC_T *FC_RESTRICT vp, VEC2 acc[FC_MR]) {
    for (int r = 0; r < FC_MR; r++) acc[r] = (VEC2){0};
    for (int64_t c = 0; c < cg; c++) {
        const VEC2 p = *(const VEC2 *)(vp + c * NR);
        const FC_T *uc = up + c * FC_MR;
#pragma GCC unroll 16
        for (int r = 0; r < FC_MR; r++) acc[r] += uc[r] * p;
    }
}
#endif

/* batched_gemm: for each xi, M[xi][o][t] = U[g][xi] . V[g][xi] for the output channels of the
 * MR-blocks [b0, b1) (o counted from b0*MR; rows run*NR apart) and the run's `tiles` tiles.  A
 * chunk of mc blocks of U stays in L2 while every NR-block of V meets it. */
FC_TARGET FC_INLINE void FC_SFX(batched_gemm)(const FC_T *FC_RESTRICT ug, const FC_T *FC_RESTRICT vg,
                                    FC_T *FC_RESTRICT mb, const fc_wino_plan *pl, int64_t b0,
                                    int64_t b1, int64_t tiles) {
    const int64_t cg = pl->cg, pitch = pl->run * NR, nb = fc_ceil_div(tiles, NR);
    const int last_nv = tiles - (nb - 1) * NR > TL ? 2 : 1;
#ifdef FC_WIDE
    VEC2 acc[FC_MR];
    (void)last_nv; /* a block is one vector: the last one is computed at full width too */
#else
    VEC acc[FC_MR][2];
#endif
    for (int64_t xi = 0; xi < pl->alpha2; xi++) {
        const FC_T *uxi = ug + xi * pl->oblocks * cg * FC_MR, *vxi = vg + xi * pl->v_xi;
        FC_T *mxi = mb + xi * pl->m_xi;
        for (int64_t c0 = b0; c0 < b1; c0 += pl->mc) {
            const int64_t c1 = fc_min64(b1, c0 + pl->mc);
            for (int64_t tb = 0; tb < nb; tb++)
                for (int64_t b = c0; b < c1; b++) {
                    FC_T *mt = mxi + (b - b0) * FC_MR * pitch + tb * NR;
                    const int64_t mr = fc_min64(FC_MR, pl->og - b * FC_MR);
#ifdef FC_WIDE
                    FC_SFX(microkernel_wide)(cg, uxi + b * cg * FC_MR, vxi + tb * cg * NR, acc);
                    for (int64_t r = 0; r < mr; r++) *(VEC2 *)(mt + r * pitch) = acc[r];
#else
                    const int nv = tb < nb - 1 ? 2 : last_nv;
                    if (nv == 2)
                        FC_SFX(microkernel)(cg, uxi + b * cg * FC_MR, vxi + tb * cg * NR, acc, 2);
                    else
                        FC_SFX(microkernel)(cg, uxi + b * cg * FC_MR, vxi + tb * cg * NR, acc, 1);
                    for (int64_t r = 0; r < mr; r++)
                        for (int v = 0; v < nv; v++) *(VEC *)(mt + r * pitch + v * TL) = acc[r][v];
#endif
                }
        }
    }
}

/* transform_output of one frame of output channel o: y rows = AT M_t A + b, the frame's lanes
 * [lo, hi) only, clipped to the output.  mo is M[0][o] at the frame's lane; yo the output at
 * tile row th, tile column tw + lo. */
FC_TARGET FC_INLINE void FC_SFX(output_frame)(const FC_T *FC_RESTRICT mo, int64_t m_xi, FC_T b, FC_T *FC_RESTRICT yo,
                                    int64_t OW, int64_t rows, int64_t lo, int64_t cols) {
    VEC ma[FC_M][A], bias; /* ma[s][k] = (M A)[k][s] */
    for (int i = 0; i < TL; i++) bias[i] = b;
#pragma GCC unroll 8
    for (int k = 0; k < A; k++) {
        VEC mk[A];
        for (int l = 0; l < A; l++) mk[l] = *(const VEC *)(mo + (k * A + l) * m_xi);
#pragma GCC unroll 8
        for (int sx = 0; sx < FC_M; sx++) FC_SFX(combine)(AT[sx], mk, &ma[sx][k]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < FC_M; r++) {
        VEC col[FC_M], out[FC_M];
#pragma GCC unroll 8
        for (int sx = 0; sx < FC_M; sx++) {
            FC_SFX(combine)(AT[r], ma[sx], &col[sx]);
            col[sx] += bias;
        }
        FC_SFX(join_columns)(col, out);
        if (r >= rows) break;
        FC_T *yr = yo + r * OW;
        if (lo == 0 && cols == TL * FC_M) {
            for (int i = 0; i < FC_M; i++) *(VECU *)(yr + i * TL) = out[i];
        } else {
            FC_T line[TL * FC_M] __attribute__((aligned(32)));
            memcpy(line, out, sizeof line);
            memcpy(yr, line + lo * FC_M, (size_t)cols * sizeof(FC_T));
        }
    }
}

/* transform_output of the output channels [o0, o0 + no) (yc: channel o0 in image 0; mb: M of those
 * channels) for the run's tiles [q0, q1). */
FC_TARGET FC_INLINE void FC_SFX(transform_output)(const FC_T *FC_RESTRICT mb, const FC_T *FC_RESTRICT bias,
                                        FC_T *FC_RESTRICT yc, const fc_conv2d_shape *s,
                                        const fc_wino_plan *pl, int64_t no, int64_t q0, int64_t q1) {
    const int64_t OH = s->out_h, OW = s->out_w, pitch = pl->run * NR;
    for (int64_t q = q0; q < q1;) {
        const fc_wino_segment sg = fc_wino_segment_at(pl, q0, q1, q, TL);
        const int64_t rows = fc_min64(FC_M, OH - sg.th * FC_M);
        for (int64_t f = 0; f < sg.frames; f++) {
            const int64_t lo = f ? 0 : sg.off, hi = fc_min64(TL, sg.off + sg.len - f * TL);
            const int64_t col0 = (sg.tw + f * TL + lo) * FC_M, cols = fc_min64((hi - lo) * FC_M, OW - col0);
            for (int64_t o = 0; o < no; o++) {
                FC_T *yo = yc + ((sg.n * s->c_out + o) * OH + sg.th * FC_M) * OW + col0;
                FC_SFX(output_frame)(mb + o * pitch + sg.lane + f * TL, pl->m_xi, bias ? bias[o] : (FC_T)0, yo, OW,
                                     rows, lo, cols);
                if (s->act) /* the frame's outputs, in L1 */
                    for (int64_t r = 0; r < rows; r++) FC_ACTIVATE(yo + r * OW, cols, s);
            }
        }
        q += sg.len;
    }
}

/* batched_gemm and transform_output of group g's output channel chunk h for the run's tiles
 * [q0, q1); mb is the thread's M. */
FC_TARGET static void FC_SFX(output_task)(const FC_T *FC_RESTRICT u, const FC_T *FC_RESTRICT v,
                                       const FC_T *FC_RESTRICT bias, FC_T *FC_RESTRICT y,
                                       FC_T *FC_RESTRICT mb, const fc_conv2d_shape *s,
                                       const fc_wino_plan *pl, int64_t g, int64_t h, int64_t q0,
                                       int64_t q1, double *phase) {
    const int64_t b0 = h * pl->ochunk, b1 = fc_min64(pl->oblocks, b0 + pl->ochunk);
    const int64_t o0 = g * pl->og + b0 * FC_MR, no = fc_min64(pl->og, b1 * FC_MR) - b0 * FC_MR;
    const double t0 = phase ? fc_now() : 0;
    FC_SFX(batched_gemm)(u + g * pl->alpha2 * pl->oblocks * pl->cg * FC_MR,
                         v + g * pl->alpha2 * pl->v_xi, mb, pl, b0, b1, q1 - q0);
    const double t1 = phase ? fc_now() : 0;
    FC_SFX(transform_output)(mb, bias ? bias + o0 : NULL, y + o0 * s->out_h * s->out_w, s, pl, no, q0, q1);
    if (phase) {
        phase[1] += t1 - t0;
        phase[2] += fc_now() - t1;
    }
}

static int FC_SFX(forward)(const FC_T *x, const FC_T *u, const FC_T *bias, FC_T *y,
                           const fc_conv2d_shape *s, int64_t workspace_bytes, int n_threads,
                           double *profile) {
    const int64_t nt = n_threads > 0 ? n_threads : 1;
    const fc_wino_plan pl = fc_wino_make_plan(s, FC_M, nt, FC_MR, NR, workspace_bytes, (int64_t)sizeof(FC_T));
    const int64_t cg = pl.cg, m_size = pl.alpha2 * pl.m_xi;
    /* V shared by all threads, M and the phase times per thread (no atomics), all up front. */
    FC_T *v = fc_alloc((size_t)(s->groups * pl.alpha2 * pl.v_xi) * sizeof(FC_T));
    FC_T *ms = fc_alloc((size_t)(nt * m_size) * sizeof(FC_T));
    double *phases = profile ? calloc((size_t)(3 * nt), sizeof(double)) : NULL;
    if (!v || !ms || (profile && !phases)) {
        fc_free(v);
        fc_free(ms);
        free(phases);
        return FC_ENOMEM;
    }
    FC_OMP_PARALLEL((int)nt)
    {
        const int64_t me = FC_THREAD_ID();
        double *phase = phases ? phases + 3 * me : NULL;
        for (int64_t run = 0; run < pl.runs; run++) {
            const int64_t q0 = run * pl.run * NR, q1 = fc_min64(pl.tiles, q0 + pl.run * NR);
            FC_OMP_FOR
            for (int64_t gc = 0; gc < s->c_in; gc++) {
                const int64_t g = gc / cg, c = gc % cg;
                const double t0 = phase ? fc_now() : 0;
                FC_SFX(transform_input)(x + gc * s->h * s->w, v + g * pl.alpha2 * pl.v_xi + c * NR,
                                   s, &pl, q0, q1);
                if (phase) phase[0] += fc_now() - t0;
            }
            FC_OMP_FOR
            for (int64_t gh = 0; gh < s->groups * pl.ochunks; gh++)
                FC_SFX(output_task)(u, v, bias, y, ms + me * m_size, s, &pl, gh / pl.ochunks,
                                    gh % pl.ochunks, q0, q1, phase);
        }
    }
    if (profile)
        for (int64_t i = 0; i < nt; i++) {
            profile[FC_PHASE_INPUT] += phases[3 * i];
            profile[FC_PHASE_GEMM] += phases[3 * i + 1];
            profile[FC_PHASE_OUTPUT] += phases[3 * i + 2];
        }
    fc_free(v);
    fc_free(ms);
    free(phases);
    return FC_OK;
}

/* ------------------------------------------------------------------ weight gradient
 * grad_w[o][c] = sum over tiles t of G^T [(AT^T g_{o,t} AT) . (BT d_{c,t} B)] G: the transpose of
 * the forward's Y = AT [(G w G^T) . (BT d B)] A in w, with grad_y cut into m x m tiles (zero past
 * the output) and d the alpha x alpha input patch each tile's outputs read.  So a 3x3 weight
 * gradient costs alpha^2 / (9 m^2) of im2col's multiply-adds (0.44 for F2, 0.25 for F4), in
 * alpha^2 GEMMs that sum over the tiles: og x cg x tiles, long in k, the shape OpenBLAS runs
 * well (the forward's short-wide GEMMs are not: see the header).  Per group and chunk of tiles:
 *   transform       V[c][xi][t] (the input, as the forward's transform_input) and V[cg + o][xi][t]
 *                   (grad_y, grad_frame) for the chunk's tiles, all threads split by plane;
 *   gemm            M[xi][o][c] (+)= V[cg + o][xi][:] . V[c][xi][:], split by xi, OpenBLAS
 *                   single-threaded in each (one thread pool, as im2col);
 * and once per group, weight_output: grad_w = G^T M G, split by output channel. */

/* The weight gradient's transforms of one plane (transform_tiles' layout with nr = tc, block 0;
 * xi_stride = the row of a plane's xi):
 * of an input channel (grad = 0) or of a grad_y channel (grad = 1). */
FC_TARGET static void FC_SFX(transform_plane)(const FC_T *FC_RESTRICT src, FC_T *FC_RESTRICT vc,
                                            const fc_conv2d_shape *s, const fc_wino_plan *pl, int64_t q0,
                                            int64_t q1, int64_t xi_stride, int64_t tc, int64_t lanes, int grad) {
    if (grad)
        FC_SFX(transform_tiles)(src, vc, s, pl, q0, q1, xi_stride, tc, 0, lanes, 1);
    else
        FC_SFX(transform_tiles)(src, vc, s, pl, q0, q1, xi_stride, tc, 0, lanes, 0);
}

/* grad_w[o][c] for c < cg (gwo: output channel o's cg*9 weights) from M[xi][o][c]. */
FC_TARGET static void FC_SFX(weight_output)(const FC_T *FC_RESTRICT mm, FC_T *FC_RESTRICT gwo, int64_t o,
                                          int64_t og, int64_t cg) {
    for (int64_t c0 = 0; c0 < cg; c0 += TL) {
        const int64_t nc = fc_min64(TL, cg - c0);
        VEC mk[A * A], gm[3][A];
        FC_T out[9][TL] __attribute__((aligned(32)));
        for (int xi = 0; xi < A * A; xi++) {
            const FC_T *src = mm + (xi * og + o) * cg + c0;
            if (nc == TL) {
                mk[xi] = *(const VECU *)src;
            } else {
                mk[xi] = (VEC){0};
                memcpy(&mk[xi], src, (size_t)nc * sizeof(FC_T));
            }
        }
#pragma GCC unroll 8
        for (int i = 0; i < 3; i++) /* gm[i][l] = (G^T M)[i][l] */
#pragma GCC unroll 8
            for (int l = 0; l < A; l++) FC_SFX(combine_n)(&GM[0][i], 3, A, &mk[l], A, &gm[i][l]);
#pragma GCC unroll 8
        for (int i = 0; i < 3; i++)
#pragma GCC unroll 8
            for (int j = 0; j < 3; j++) FC_SFX(combine_n)(&GM[0][j], 3, A, gm[i], 1, (VEC *)out[i * 3 + j]);
        for (int64_t c = 0; c < nc; c++)
            for (int t = 0; t < 9; t++) gwo[(c0 + c) * 9 + t] = out[t][c];
    }
}

static int FC_SFX(backward_weight)(const FC_T *gy, const FC_T *x, FC_T *gw, const fc_conv2d_shape *s,
                                   int64_t workspace_bytes, int n_threads) {
    const int64_t nt = n_threads > 0 ? n_threads : 1, elem = (int64_t)sizeof(FC_T);
    const fc_wino_plan pl = fc_wino_make_plan(s, FC_M, nt, FC_MR, NR, workspace_bytes, elem);
    const int64_t cg = pl.cg, og = pl.og, a2 = pl.alpha2, planes = cg + og, run = FC_WINO_RUN_BLOCKS * NR;
    if (og > INT32_MAX || cg > INT32_MAX) return FC_ESIZE;
    /* Equal chunks of at most FC_WINO_WGRAD_BYTES of transforms (at least a run): the GEMMs then
     * read them from cache, and glibc reuses the buffer's pages from call to call (a 51 MB buffer
     * on VGG conv1_2 was mapped afresh by every call: 43 against 23 ms with 4 MB, page faults). */
    const int64_t budget = fc_min64(workspace_bytes, FC_WINO_WGRAD_BYTES);
    const int64_t fit = fc_max64(run, budget / (a2 * planes * elem));
    const int64_t chunks = fc_ceil_div(pl.tiles, fit);
    const int64_t tc = fc_round_up(fc_ceil_div(pl.tiles, chunks), NR);
    /* V[plane][xi][tile]: a plane's frames store to alpha^2 rows close together.  V[xi][plane][tile]
     * (each GEMM's operands contiguous) measured mixed, time ratio to this: F4 0.87-0.96 at 64
     * channels (ResNet-18 56x56 at batch 1 and 8, VGG conv1_2), 1.03-1.10 at 128-256 (28x28,
     * 14x14 at batch 8, VGG conv3_2); Intel Xeon model 207, avx512, interleaved builds.
     * A vector more than dense: rows a power of two apart would share cache sets (see v_xi). */
    const int64_t xi_stride = tc + NR, plane_stride = a2 * xi_stride;
    FC_T *v = fc_alloc((size_t)(planes * plane_stride) * sizeof(FC_T));
    FC_T *mm = fc_alloc((size_t)(a2 * og * cg) * sizeof(FC_T));
    if (!v || !mm) {
        fc_free(v);
        fc_free(mm);
        return FC_ENOMEM;
    }
    for (int64_t g = 0; g < s->groups; g++) {
        for (int64_t chunk = 0; chunk < chunks; chunk++) {
            const int64_t q0 = chunk * tc, q1 = fc_min64(pl.tiles, q0 + tc), runs = fc_ceil_div(q1 - q0, run);
            FC_OMP_PARALLEL_FOR(n_threads)
            for (int64_t task = 0; task < planes * runs; task++) {
                const int64_t p = task / runs, r0 = q0 + task % runs * run, r1 = fc_min64(q1, r0 + run);
                const int64_t lanes = r1 == q1 ? tc - (r0 - q0) : r1 - r0; /* the last run zeroes the rest */
                FC_T *vc = v + p * plane_stride + (r0 - q0);
                const FC_T *src = p < cg ? x + (g * cg + p) * s->h * s->w
                                         : gy + (g * og + p - cg) * s->out_h * s->out_w;
                FC_SFX(transform_plane)(src, vc, s, &pl, r0, r1, xi_stride, tc, lanes, p >= cg);
            }
            FC_OMP_PARALLEL_FOR(n_threads)
            for (int64_t xi = 0; xi < a2; xi++)
                FC_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)og, (int)cg, (int)tc, (FC_T)1,
                        v + cg * plane_stride + xi * xi_stride, (int)plane_stride, v + xi * xi_stride,
                        (int)plane_stride,
                        chunk ? (FC_T)1 : (FC_T)0, mm + xi * og * cg, (int)cg);
        }
        FC_OMP_PARALLEL_FOR(n_threads)
        for (int64_t o = 0; o < og; o++)
            FC_SFX(weight_output)(mm, gw + (g * og + o) * cg * 9, o, og, cg);
    }
    fc_free(v);
    fc_free(mm);
    return FC_OK;
}

#undef A
#undef AT
#undef GM
#undef BT
#undef VEC
#undef VECU
#undef IVEC
#undef TL
#undef NR
#undef BAND
#undef SPLIT1_E
#undef SPLIT1_O
#undef SPLIT2_E
#undef SPLIT2_O
#undef JOIN_LO
#undef JOIN_HI
#undef JOIN2_LO
#undef JOIN2_HI
#undef FC_MR
#ifdef FC_WIDE
#undef VEC2
#endif

#endif
