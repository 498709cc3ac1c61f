/* The copy loops of fc_flat.h's layout, for one dtype (FC_T) and one ISA (FC_ISA_SFX, FC_TARGET,
 * FC_VBYTES, FC_VEC_U: that ISA's vector at any element boundary): included at level 2 of a
 * kernel file, once per ISA.  Not include-guarded. */

#define VLEN_ ((int64_t)(FC_VBYTES / sizeof(FC_T)))

/* dst[0:len] = src[0:len], or zeros (src NULL), without a libc call: the rows here are a few
 * vectors long, and memcpy/memset calls were a quarter of a 7x7 layer's time.  AVX-512 ends the
 * row with one masked load and store (masked-off lanes neither read nor write memory). */
FC_TARGET FC_INLINE void FC_ISA_SFX(copy_run)(FC_T *FC_RESTRICT dst, const FC_T *FC_RESTRICT src, int64_t len) {
    int64_t q = 0;
    for (; q + VLEN_ <= len; q += VLEN_) *(FC_VEC_U *)(dst + q) = src ? *(const FC_VEC_U *)(src + q) : (FC_VEC_U){0};
#if FC_X86 && FC_VBYTES == 64
    if (q < len) {
        const unsigned bits = (1u << (len - q)) - 1u;
        if (sizeof(FC_T) == 4)
            _mm512_mask_storeu_ps(dst + q, (__mmask16)bits, src ? _mm512_maskz_loadu_ps((__mmask16)bits, src + q)
                                                               : _mm512_setzero_ps());
        else
            _mm512_mask_storeu_pd(dst + q, (__mmask8)bits, src ? _mm512_maskz_loadu_pd((__mmask8)bits, src + q)
                                                              : _mm512_setzero_pd());
    }
#else
    for (; q < len; q++) dst[q] = src ? src[q] : (FC_T)0;
#endif
}

/* xq = the copy of plane xc for the output rows [r0, r0 + L->rows - taps' rows) (fc_flat.h), zero
 * outside the plane and past its rows. */
FC_TARGET FC_INLINE void FC_ISA_SFX(copy_plane)(const FC_T *FC_RESTRICT xc, FC_T *FC_RESTRICT xq,
                                                const fc_conv2d_shape *s, const fc_flat_layout *L, int64_t r0) {
    const int64_t H = s->h, W = s->w, sh = s->stride_h, sw = s->stride_w, pitch = L->pitch;
    for (int64_t rh = 0; rh < sh; rh++)
        for (int64_t rw = 0; rw < sw; rw++) {
            FC_T *phase = xq + (rh * sw + rw) * L->psize;
            int64_t lo, hi; /* the columns q whose input column q * sw + rw - pl lies inside */
            fc_inside(rw - s->pad_left, sw, W, pitch, &lo, &hi);
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
                else if (sw == 2) /* a constant stride: GCC deinterleaves with vector permutes */
                    for (int64_t q = lo; q < hi; q++) dst[q] = src[2 * q];
                else
                    for (int64_t q = lo; q < hi; q++) dst[q] = src[q * sw];
                FC_ISA_SFX(copy_run)(dst + hi, NULL, pitch - hi);
            }
            FC_ISA_SFX(copy_run)(phase + L->rows * pitch, NULL, L->psize - L->rows * pitch);
        }
}

#undef VLEN_
