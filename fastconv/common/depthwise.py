"""What the depthwise kernels of both backends share (the twins: csrc/depthwise.c and
fastconv/numba/depthwise.py): which problems they serve, the gy window their grad of input reads,
and how large their plane copies are.

Forward and weight gradient work a plane along its rows through a zero-padded copy split by stride
phase in both axes (csrc/depthwise.c's header says why); C's forward on AVX-512 with one output
channel per group takes blocks of channels instead, through a copy of at most FC_DW_BLOCK_BYTES
(1 MiB) per thread.  The grad of input splits the *inputs* by stride phase instead: every phase
reads one zero-padded copy of each gy plane, the window that some tap reaches (``data_window``;
csrc/depthwise.c's fc_dw_data_window computes the same).  A copy's size follows the padding and the
dilation, which a valid but hostile problem can make enormous, so past flat.py's ``COPY_LIMIT``
elements per thread the kernels refuse and ``auto`` picks another one (a call must not fail for
memory another kernel does not need).
"""
from __future__ import annotations

from typing import NamedTuple

from . import flat


def _phase_taps(stride: int, dilation: int, k: int, pad: int, size: int) -> list:
    """Per input phase r < min(stride, size) along one axis (inputs r, r + stride, ...): the taps i
    that reach it, each with the gy offset d it reads (input u * stride + r takes gy u + d)."""
    return [[(i, (r + pad - i * dilation) // stride) for i in range(k) if (r + pad - i * dilation) % stride == 0]
            for r in range(min(stride, size))]


def _window(phases: list, stride: int, size: int, at_least: int = 0) -> tuple:
    """The gy indices [lo, lo + length) that the taps of phases read along one axis."""
    reach = [(d, -(-(size - r) // stride) - 1 + d) for r, taps in enumerate(phases) for _, d in taps]
    if not reach:
        return 0, at_least  # no tap reaches an input: gx is zero
    lo = min(lo for lo, _ in reach)
    return lo, max(at_least, max(hi for _, hi in reach) + 1 - lo)


class DataWindow(NamedTuple):
    """The grad of input's gy window: rows [r0, r0 + rows), columns [c0, c0 + pitch) (at least the
    widest phase's inputs, since the runs' rows are that far apart), and the taps per phase."""
    r0: int
    rows: int
    c0: int
    pitch: int
    taps_h: list  # per input row phase: [(i, d)], gy row u + d for input row u * sh + rh
    taps_w: list


def data_window(spec) -> DataWindow:
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    taps_h = _phase_taps(sh, dh, spec.kh, spec.padding[0], spec.h)
    taps_w = _phase_taps(sw, dw, spec.kw, spec.padding[2], spec.w)
    r0, rows = _window(taps_h, sh, spec.h)
    c0, pitch = _window(taps_w, sw, spec.w, at_least=-(-spec.w // sw))
    return DataWindow(r0, rows, c0, pitch, taps_h, taps_w)


def copy_elements(spec, *, grad_input: bool = False) -> int:
    """Elements of one thread's plane copy for spec's forward and weight gradient: the whole
    plane's (flat.py, the layout of csrc/fc_flat.h).  With grad_input, for its grad of input
    instead: the og gy planes' windows, each with a zero row past it and a vector."""
    if grad_input:
        win = data_window(spec)
        return spec.c_out // spec.groups * ((win.rows + 1) * win.pitch + flat.vector_elements(spec))
    return flat.copy_elements(spec, spec.out_h)


def why_not(spec):
    """Why a depthwise kernel (either backend, any pass) cannot serve spec, or None."""
    cg = spec.c_in // spec.groups
    if cg != 1:
        return f"not depthwise: {cg} input channels per group (it serves groups = in_channels)"
    return flat.too_large(max(copy_elements(spec), copy_elements(spec, grad_input=True)))
