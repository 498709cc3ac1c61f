/* Internal helpers for fastconv's C kernels; never seen by cffi. */
#ifndef FC_INTERNAL_H
#define FC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

#include "fastconv.h"

#define FC_RESTRICT restrict
/* Helpers of a hot loop, inlined so they are compiled for the ISA (target attribute) of their caller. */
#define FC_INLINE static inline __attribute__((always_inline))

#if defined(__GNUC__) && defined(__x86_64__)
#define FC_X86 1
#define FC_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#define FC_TARGET_AVX512 __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#else
#define FC_X86 0
#endif

/* The ISA a call runs: the one asked for, lowered to what the CPU supports (a wrong request from
 * the caller can slow a call down, never make it execute an illegal instruction). */
static inline int fc_isa(int64_t requested) {
    const int64_t cpu = fc_cpu_isa();
    return (int)(requested < cpu ? (requested < 0 ? FC_ISA_GENERIC : requested) : cpu);
}

/* OpenMP: a `for` over independent tasks with an explicit thread count (no global state); _STATIC
 * for tasks of equal cost in a count the threads divide, each thread taking one contiguous run of
 * them.  Without OpenMP the pragmas vanish and the loops run serially. */
#ifdef _OPENMP
#include <omp.h>
#define FC_PRAGMA(x) _Pragma(#x)
#define FC_OMP_PARALLEL_FOR(nt) FC_PRAGMA(omp parallel for schedule(dynamic, 1) num_threads(nt))
#define FC_OMP_PARALLEL_FOR_STATIC(nt) FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
#define FC_OMP_PARALLEL(nt) FC_PRAGMA(omp parallel num_threads(nt))
#define FC_OMP_FOR FC_PRAGMA(omp for schedule(dynamic, 1))
#define FC_THREAD_ID() omp_get_thread_num()
#define FC_PRAGMA_ATOMIC_WRITE FC_PRAGMA(omp atomic write)
#else
#define FC_OMP_PARALLEL_FOR(nt)
#define FC_OMP_PARALLEL_FOR_STATIC(nt)
#define FC_OMP_PARALLEL(nt)
#define FC_OMP_FOR
#define FC_THREAD_ID() 0
#define FC_PRAGMA_ATOMIC_WRITE
#endif

static inline int64_t fc_min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t fc_max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t fc_round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }
static inline int64_t fc_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* The outputs v in [*lo, *hi) whose tap at column v * stride + offset lies inside [0, size):
 * the rest read padding.  Used wherever a row of taps is walked along the outputs, and for the
 * taps of a window that read the input (computed, not walked: a pool window may span 2^31 taps
 * of padding, and a call's time must follow the taps that read the input). */
static inline void fc_inside(int64_t offset, int64_t stride, int64_t size, int64_t outputs,
                             int64_t *lo, int64_t *hi) {
    *lo = offset >= 0 ? 0 : fc_min64((-offset + stride - 1) / stride, outputs);
    *hi = offset >= size ? *lo : fc_max64(*lo, fc_min64(outputs, (size - 1 - offset) / stride + 1));
}

/* s->act (FC_ACT_*) on the n outputs at y, in place: each forward kernel calls it
 * (FC_ACTIVATE(y, n, s), either dtype) on outputs it has just finished.  Only y < 0 (or
 * y > 6) is replaced, and a comparison with NaN is false, so NaN stays NaN as in torch.  Inlined
 * into its caller, so vectorized for the caller's ISA (target attribute). */
#define FC_DEFINE_ACTIVATE(T, name)                                                                 \
    FC_INLINE void name(T *FC_RESTRICT y, int64_t n, const fc_conv2d_shape *s) {                   \
        const T slope = (T)s->act_slope;                                                            \
        switch (s->act) {                                                                           \
        case FC_ACT_RELU:                                                                           \
            for (int64_t i = 0; i < n; i++) y[i] = y[i] < 0 ? (T)0 : y[i];                          \
            break;                                                                                  \
        case FC_ACT_RELU6:                                                                          \
            for (int64_t i = 0; i < n; i++) y[i] = y[i] < 0 ? (T)0 : y[i] > 6 ? (T)6 : y[i];        \
            break;                                                                                  \
        case FC_ACT_LEAKY_RELU:                                                                     \
            for (int64_t i = 0; i < n; i++) y[i] = y[i] < 0 ? y[i] * slope : y[i];                  \
            break;                                                                                  \
        default: break;                                                                             \
        }                                                                                           \
    }
FC_DEFINE_ACTIVATE(float, fc_activate_f32)
FC_DEFINE_ACTIVATE(double, fc_activate_f64)
#undef FC_DEFINE_ACTIVATE
#define FC_ACTIVATE(y, n, s) _Generic((y), float *: fc_activate_f32, double *: fc_activate_f64)(y, n, s)
/* The same on a vector v of GCC's vector extension, in registers (a kernel's store of a final
 * tile), for act = s->act and slope = s->act_slope read once by the caller: the selections as
 * blends of comparison masks, C having no vector ?:. */
#define FC_ACTIVATE_VEC(v, act, slope)                                                              \
    do {                                                                                            \
        typedef __typeof__((v) < (v)) fc_mask_;                                                     \
        typedef __typeof__(v) fc_vec_;                                                              \
        if (act) { /* nothing at all on the stores of a call without one */                         \
            const fc_vec_ zero_ = {0};                                                              \
            const fc_mask_ neg_ = (v) < zero_;                                                      \
            if ((act) == FC_ACT_LEAKY_RELU) {                                                       \
                const fc_vec_ scaled_ = (v) * (slope);                                              \
                (v) = (fc_vec_)(((fc_mask_)scaled_ & neg_) | ((fc_mask_)(v) & ~neg_));              \
            } else {                                                                                \
                (v) = (fc_vec_)((fc_mask_)(v) & ~neg_);                                             \
                if ((act) == FC_ACT_RELU6) {                                                        \
                    const fc_vec_ six_ = zero_ + 6;                                                 \
                    const fc_mask_ big_ = (v) > six_;                                               \
                    (v) = (fc_vec_)(((fc_mask_)six_ & big_) | ((fc_mask_)(v) & ~big_));             \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    } while (0)

/* Seconds on a wall clock, for the phase profiles (fastconv.h: FC_PHASE_*). */
static inline double fc_now(void) {
    struct timespec t;
    timespec_get(&t, TIME_UTC);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 64-byte aligned workspace (uninitialised); NULL on failure (callers return FC_ENOMEM).  Freed
 * by fc_free only (never free()): big blocks are kept between calls (csrc/workspace.c). */
void *fc_alloc(size_t bytes);
void fc_free(void *p);

#endif
