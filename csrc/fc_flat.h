/* The padded, stride-phase-split input copies that depthwise.c and direct_flat.c read through, so
 * their hot loops have no bounds checks and no gathers (fastconv/common/flat.py is the Python
 * side's copy of these sizes):
 *
 *   xq[c][rh][rw][r][q] = x[c][(r0 + r) * sh + rh - pt][q * sw + rw - pl], zero outside the plane,
 *
 * the rows of each phase `pitch` = out_w + (kw - 1) * dw / sw columns apart, for the output rows
 * [r0, r0 + out_rows) of a plane.  Tap (c, i, j) of output (r0 + r, ow) then reads phase
 * ((i * dh) % sh, (j * dw) % sw) at flat index r * pitch + ow + toff, toff = (i * dh / sh) * pitch
 * + j * dw / sw: one offset per tap, the same for every output, for every stride and dilation.
 * So the outputs are computed as the flat run f = r * pitch + ow (the pitch - out_w columns past
 * each row are computed and dropped), which a 7x7 plane fills as 63 flat outputs, not 7 rows of
 * one mostly empty vector each.
 *
 * Level 0 here (guarded); the copy loops are per ISA, in fc_flat_copy.h. */
#ifndef FC_FLAT_H
#define FC_FLAT_H

#include "fc_internal.h"

typedef struct {
    int64_t pitch;  /* columns per row of a phase: out_w + (kw - 1) * dw / sw */
    int64_t rows;   /* rows per phase: out_rows + (kh - 1) * dh / sh */
    int64_t psize;  /* elements per phase: (rows + 1) * pitch + a vector, what the last runs read */
    int64_t csize;  /* elements per channel: sh * sw phases */
} fc_flat_layout;

/* The copy of out_rows output rows' inputs, for vectors of vlen elements. */
static inline fc_flat_layout fc_flat_make_layout(const fc_conv2d_shape *s, int64_t out_rows, int64_t vlen) {
    fc_flat_layout L;
    L.pitch = s->out_w + (s->kw - 1) * s->dilation_w / s->stride_w;
    L.rows = out_rows + (s->kh - 1) * s->dilation_h / s->stride_h;
    L.psize = (L.rows + 1) * L.pitch + vlen;
    L.csize = s->stride_h * s->stride_w * L.psize;
    return L;
}

/* toff[(c * kh + i) * kw + j]: where tap (c, i, j) reads the copies, from flat output 0; NULL when
 * out of memory. */
static inline int64_t *fc_flat_tap_offsets(const fc_conv2d_shape *s, const fc_flat_layout *L, int64_t cg) {
    int64_t *toff = fc_alloc((size_t)(cg * s->kh * s->kw) * sizeof(int64_t)), *t = toff;
    if (!toff) return NULL;
    for (int64_t c = 0; c < cg; c++)
        for (int64_t i = 0; i < s->kh; i++)
            for (int64_t j = 0; j < s->kw; j++) {
                const int64_t di = i * s->dilation_h, dj = j * s->dilation_w;
                const int64_t phase = (di % s->stride_h) * s->stride_w + dj % s->stride_w;
                *t++ = c * L->csize + phase * L->psize + di / s->stride_h * L->pitch + dj / s->stride_w;
            }
    return toff;
}

#endif
