"""The padded, stride-phase-split input copies that numba/depthwise.py and numba/direct_flat.py
read through, the twin of csrc/fc_flat.h (its header derives the layout): for the output rows
[r0, r0 + out_rows) of a plane, xq[c][rh][rw][r][q] = x[c, (r0 + r) * sh + rh - pt, q * sw + rw - pl],
rows `pitch` = out_w + (kw - 1) * dw // sw columns apart, so tap (c, i, j) of every output reads
it at toff[c, i, j] + the output's flat index r * pitch + ow."""
import numpy as np

from ._options import helper


@helper
def layout(out_rows, OW, kh, kw, sh, sw, dh, dw):
    """(pitch, rows, elements per phase, elements per channel) of the copy of out_rows output rows."""
    pitch, rows = OW + (kw - 1) * dw // sw, out_rows + (kh - 1) * dh // sh
    psize = (rows + 1) * pitch  # the last run reads up to pitch - 1 past the rows
    return pitch, rows, psize, sh * sw * psize


@helper
def tap_offsets(cg, kh, kw, sh, sw, dh, dw, pitch, psize, csize):
    toff = np.empty(cg * kh * kw, np.int64)
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                di, dj = i * dh, j * dw
                phase = (di % sh) * sw + dj % sw
                toff[(c * kh + i) * kw + j] = c * csize + phase * psize + di // sh * pitch + dj // sw
    return toff


@helper
def copy_plane(x, n, c, xq, base, r0, pt, pl, sh, sw, rows, pitch, psize):
    """xq[base + phase (rh, rw), row r, column q] = x[n, c, (r0 + r) * sh + rh - pt, q * sw + rw - pl],
    zero outside the plane and past the rows."""
    H, W = x.shape[2], x.shape[3]
    for rh in range(sh):
        for rw in range(sw):
            start = base + (rh * sw + rw) * psize
            xq[start:start + psize] = 0.0
            off = rw - pl
            lo = 0 if off >= 0 else min((-off + sw - 1) // sw, pitch)  # the q reading inside [0, W)
            hi = lo if off >= W else max(lo, min(pitch, (W - 1 - off) // sw + 1))
            for r in range(rows):
                ih = (r0 + r) * sh + rh - pt
                if 0 <= ih < H:
                    src = x[n, c, ih]
                    dst = xq[start + r * pitch:start + (r + 1) * pitch]
                    for q in range(lo, hi):
                        dst[q] = src[q * sw + off]
