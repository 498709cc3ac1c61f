"""What the depthwise kernels of both backends share (the twins: csrc/depthwise.c and
fastconv/numba/depthwise.py): which problems they serve, and how large their plane copy is.

Both work a plane along its rows through a zero-padded copy split by stride phase in both axes
(csrc/depthwise.c's header says why); C's forward on AVX-512 with one output channel per group
takes blocks of channels instead, through a copy of at most FC_DW_BLOCK_BYTES (1 MiB) per thread,
so the bound below, the rows' copy, is the one that can refuse.  The copy of one channel holds ``copy_elements`` elements;
its size follows the padding and the dilation, which a valid but hostile problem can make
enormous, so past flat.py's ``COPY_LIMIT`` elements per thread the kernels refuse and ``auto``
picks another one (a call must not fail for memory another kernel does not need).  The grad of input runs the forward on the transposed problems of
fastconv/common/transpose.py: per channel, the multiplier's gy planes (one copy each), cropped or
padded by the flipped taps.
"""
from __future__ import annotations

from . import flat


def copy_elements(spec, *, multiplier_planes: bool = False) -> int:
    """Elements of one thread's plane copy for spec's forward: the whole plane's (flat.py, the
    layout of csrc/fc_flat.h).  With multiplier_planes, for its grad of input instead: the og gy
    planes of the transposed problems, each at most the input's size plus the taps."""
    if multiplier_planes:
        (dh, dw) = spec.dilation
        rows, pitch = spec.h + (spec.kh - 1) * dh + 1, spec.w + (spec.kw - 1) * dw
        return spec.c_out // spec.groups * (rows * pitch + flat.vector_elements(spec))
    return flat.copy_elements(spec, spec.out_h)


def why_not(spec):
    """Why a depthwise kernel (either backend, any pass) cannot serve spec, or None."""
    cg = spec.c_in // spec.groups
    if cg != 1:
        return f"not depthwise: {cg} input channels per group (it serves groups = in_channels)"
    return flat.too_large(max(copy_elements(spec), copy_elements(spec, multiplier_planes=True)))
