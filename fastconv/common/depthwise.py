"""What the depthwise kernels of both backends share (the twins: csrc/depthwise.c and
fastconv/numba/depthwise.py): which problems they serve, and how large their plane copy is.

Both work a plane along its rows through a zero-padded copy split by stride phase in both axes
(csrc/depthwise.c's header says why).  The copy of one channel holds ``copy_elements`` elements;
its size follows the padding and the dilation, which a valid
but hostile problem can make enormous, so past ``COPY_LIMIT`` elements per thread the kernels
refuse and ``auto`` picks another one (a call must not fail for memory another kernel does not
need).  The grad of input runs the forward on the transposed problems of
fastconv/common/transpose.py: per channel, the multiplier's gy planes (one copy each), cropped or
padded by the flipped taps.
"""
from __future__ import annotations

from .flat import COPY_LIMIT, VECTOR_BYTES


def copy_elements(spec, *, multiplier_planes: bool = False) -> int:
    """Elements of one thread's plane copy for spec's forward: sh * sw phases of
    (out_h + (kh - 1) * dh // sh + 1) rows of out_w + (kw - 1) * dw // sw columns, plus a vector
    (csrc/depthwise.c's fc_dw_layout).  With multiplier_planes, for its grad of input instead:
    the og gy planes of the transposed problems, each at most the input's size plus the taps."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    vlen = VECTOR_BYTES // (4 if spec.dtype == "float32" else 8)
    if multiplier_planes:
        rows, pitch = spec.h + (spec.kh - 1) * dh + 1, spec.w + (spec.kw - 1) * dw
        return spec.c_out // spec.groups * (rows * pitch + vlen)
    rows = spec.out_h + (spec.kh - 1) * dh // sh + 1
    pitch = spec.out_w + (spec.kw - 1) * dw // sw
    return sh * sw * (rows * pitch + vlen)


def why_not(spec):
    """Why a depthwise kernel (either backend, any pass) cannot serve spec, or None."""
    cg = spec.c_in // spec.groups
    if cg != 1:
        return f"not depthwise: {cg} input channels per group (it serves groups = in_channels)"
    size = max(copy_elements(spec), copy_elements(spec, multiplier_planes=True))
    if size > COPY_LIMIT:
        return (f"its padded plane copy would hold {size} elements (over {COPY_LIMIT}): the padding "
                f"or dilation is too large for it")
    return None
