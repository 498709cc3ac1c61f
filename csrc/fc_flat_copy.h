/* The copy loops of fc_flat.h's layout, for one dtype (FC_T) and one ISA (FC_ISA_SFX, FC_TARGET,
 * FC_VBYTES, FC_VEC_U: that ISA's vector at any element boundary): included at level 2 of a
 * kernel file, once per ISA.  Not include-guarded. */

#define VLEN_ ((int64_t)(FC_VBYTES / sizeof(FC_T)))

/* dst[0:len] = src[0:len], or zeros (src NULL), without a libc call: the rows here are a few
 * vectors long, and memcpy/memset calls were a quarter of a 7x7 layer's time.  AVX-512 ends the
 * row with one masked load and store (masked-off lanes neither read nor write memory).  The others
 * end it as small memcpys do, by two copies of a constant size that overlap: the last vector
 * ending at len (a row of at least a vector), or two halves, quarters... (a shorter one), so no
 * element outside [0, len) is read or written.  A scalar loop there was turned back into memset
 * and memmove calls by GCC: a fifth of a 7x7 depthwise layer's cycles on AVX2 (perf, AMD EPYC
 * Zen 3), with a vzeroupper and a call per row besides. */
FC_TARGET FC_INLINE void FC_ISA_SFX(copy_run)(FC_T *FC_RESTRICT dst, const FC_T *FC_RESTRICT src, int64_t len) {
    int64_t q = 0;
    for (; q + VLEN_ <= len; q += VLEN_) *(FC_VEC_U *)(dst + q) = src ? *(const FC_VEC_U *)(src + q) : (FC_VEC_U){0};
    if (q == len) return;
#if FC_X86 && FC_VBYTES == 64
    const unsigned bits = (1u << (len - q)) - 1u;
    if (sizeof(FC_T) == 4)
        _mm512_mask_storeu_ps(dst + q, (__mmask16)bits, src ? _mm512_maskz_loadu_ps((__mmask16)bits, src + q)
                                                           : _mm512_setzero_ps());
    else
        _mm512_mask_storeu_pd(dst + q, (__mmask8)bits, src ? _mm512_maskz_loadu_pd((__mmask8)bits, src + q)
                                                          : _mm512_setzero_pd());
#else
    static const FC_T zeros[VLEN_] = {0};
    const char *from = src ? (const char *)src : (const char *)zeros;
    const int64_t zstep = src ? 1 : 0; /* the zeros are read from their start for any part */
    char *to = (char *)dst;
    const int64_t nb = len * (int64_t)sizeof(FC_T);
#define FC_COPY_PAIR(k)                                                              \
    do {                                                                           \
        memcpy(to + q * (int64_t)sizeof(FC_T), from + zstep * q * (int64_t)sizeof(FC_T), k); \
        memcpy(to + nb - (k), from + zstep * (nb - (k)), k);                       \
    } while (0)
    if (q > 0) { /* the vector ending at len overlaps the last whole one */
        memcpy(to + nb - FC_VBYTES, from + zstep * (nb - FC_VBYTES), FC_VBYTES);
    } else if (FC_VBYTES > 16 && nb >= 16) {
        FC_COPY_PAIR(16);
    } else if (nb >= 8) {
        FC_COPY_PAIR(8);
    } else {
        memcpy(to, from, 4); /* float32, one element */
    }
#undef FC_COPY_PAIR
#endif
}

#if FC_X86 && FC_VBYTES == 32
/* dst[0:n] = src[0], src[2], ..., src[2n - 2] (a stride-2 phase of a row), by two loads and two
 * permutes per vector; the last vector's loads are masked, so nothing past src[2n - 2] is read
 * (the plane's last row ends there).  Its store is whole: it may write up to a vector past
 * dst[n - 1], which copy_plane writes again after (the row's padding, the next row, or the
 * phase's tail, all within psize); a masked store (vmaskmovps) cost more than the rest of the
 * copy on AMD EPYC Zen 3.  GCC's own vectorization of the loop left rows of 7-8 (a 14x14 plane at
 * stride 2) scalar: a third of a depthwise dw576_14_s2's cycles (perf, Zen 3). */
FC_TARGET FC_INLINE void FC_ISA_SFX(copy_even)(FC_T *FC_RESTRICT dst, const FC_T *FC_RESTRICT src, int64_t n) {
    if (sizeof(FC_T) == 4) {
        float *d = (float *)dst;
        const float *x = (const float *)src;
        int64_t q = 0;
        for (; q + 8 < n; q += 8) { /* reads x[2q .. 2q + 15], all before x[2n - 2] */
            const __m256 e = _mm256_shuffle_ps(_mm256_loadu_ps(x + 2 * q), _mm256_loadu_ps(x + 2 * q + 8), 0x88);
            _mm256_storeu_ps(d + q, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
        }
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const int m = 2 * (int)(n - q) - 1; /* 0..8 outputs left, from m source elements */
        const __m256 a = _mm256_maskload_ps(x + 2 * q, _mm256_cmpgt_epi32(_mm256_set1_epi32(m), lane));
        const __m256 b = _mm256_maskload_ps(x + 2 * q + 8, _mm256_cmpgt_epi32(_mm256_set1_epi32(m - 8), lane));
        const __m256 e = _mm256_shuffle_ps(a, b, 0x88);
        _mm256_storeu_ps(d + q, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
    } else {
        double *d = (double *)dst;
        const double *x = (const double *)src;
        int64_t q = 0;
        for (; q + 4 < n; q += 4) /* reads x[2q .. 2q + 7] */
            _mm256_storeu_pd(d + q, _mm256_permute4x64_pd(
                                        _mm256_unpacklo_pd(_mm256_loadu_pd(x + 2 * q), _mm256_loadu_pd(x + 2 * q + 4)), 0xD8));
        const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
        const int64_t m = 2 * (n - q) - 1;
        const __m256d a = _mm256_maskload_pd(x + 2 * q, _mm256_cmpgt_epi64(_mm256_set1_epi64x(m), lane));
        const __m256d b = _mm256_maskload_pd(x + 2 * q + 4, _mm256_cmpgt_epi64(_mm256_set1_epi64x(m - 4), lane));
        _mm256_storeu_pd(d + q, _mm256_permute4x64_pd(_mm256_unpacklo_pd(a, b), 0xD8));
    }
}
#endif

/* xq = the copy of plane xc for the output rows [r0, r0 + L->rows - taps' rows) (fc_flat.h), zero
 * outside the plane and past its rows.  A phase's inside columns depend on its column phase only:
 * fc_inside's divisions once per column phase, not per phase (they were a tenth of a 14x14 plane's
 * copy). */
FC_TARGET FC_INLINE void FC_ISA_SFX(copy_plane)(const FC_T *FC_RESTRICT xc, FC_T *FC_RESTRICT xq,
                                                const fc_conv2d_shape *s, const fc_flat_layout *L, int64_t r0) {
    const int64_t H = s->h, W = s->w, sh = s->stride_h, sw = s->stride_w, pitch = L->pitch;
    for (int64_t rw = 0; rw < sw; rw++) {
        int64_t lo, hi; /* the columns q whose input column q * sw + rw - pl lies inside */
        fc_inside(rw - s->pad_left, sw, W, pitch, &lo, &hi);
        for (int64_t rh = 0; rh < sh; rh++) {
            FC_T *phase = xq + (rh * sw + rw) * L->psize;
            for (int64_t r = 0; r < L->rows; r++) {
                FC_T *dst = phase + r * pitch;
                const int64_t ih = (r0 + r) * sh + rh - s->pad_top;
                if (ih < 0 || ih >= H) {
                    FC_ISA_SFX(copy_run)(dst, NULL, pitch);
                    continue;
                }
                const FC_T *src = xc + ih * W + rw - s->pad_left;
                FC_ISA_SFX(copy_run)(dst, NULL, lo);
                if (sw == 1)
                    FC_ISA_SFX(copy_run)(dst + lo, src + lo, hi - lo);
                else if (sw == 2)
#if FC_X86 && FC_VBYTES == 32
                    FC_ISA_SFX(copy_even)(dst + lo, src + 2 * lo, hi - lo);
#else /* a constant stride: GCC deinterleaves with vector permutes */
                    for (int64_t q = lo; q < hi; q++) dst[q] = src[2 * q];
#endif
                else if (sw == 4) /* as stride 2 (AlexNet's conv1: a third of its copy's time, scalar) */
                    for (int64_t q = lo; q < hi; q++) dst[q] = src[4 * q];
                else
                    for (int64_t q = lo; q < hi; q++) dst[q] = src[q * sw];
                FC_ISA_SFX(copy_run)(dst + hi, NULL, pitch - hi);
            }
            FC_ISA_SFX(copy_run)(phase + L->rows * pitch, NULL, L->psize - L->rows * pitch);
        }
    }
}

#undef VLEN_
