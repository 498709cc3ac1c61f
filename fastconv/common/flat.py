"""What the kernels that read fc_flat.h's stride-phase copies share (csrc/fc_flat.h,
fastconv/numba/_flat.py: depthwise and direct_flat, in both backends): how large one thread's copy
grows, and the bound past which they refuse.

A copy's size follows the padding and the dilation, which a valid but hostile problem can make
enormous, so past ``COPY_LIMIT`` elements per thread the kernels refuse and ``auto`` picks another
one (a call must not fail for memory another kernel does not need).
"""
from __future__ import annotations

from . import transpose

COPY_LIMIT = 1 << 24  # elements of a thread's plane copies: 64 MB of float32
VECTOR_BYTES = 64     # the widest vector (AVX-512): a copy's phases end with one vector of slack


def vector_elements(spec) -> int:
    return VECTOR_BYTES // (4 if spec.dtype == "float32" else 8)


def copy_elements(spec, out_rows: int) -> int:
    """Elements of the copy of one input channel for out_rows output rows of spec's forward: sh * sw
    phases of (out_rows + (kh - 1) * dh // sh + 1) rows of out_w + (kw - 1) * dw // sw columns, plus
    a vector (csrc/fc_flat.h's fc_flat_make_layout)."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    rows = out_rows + (spec.kh - 1) * dh // sh + 1
    pitch = spec.out_w + (spec.kw - 1) * dw // sw
    return sh * sw * (rows * pitch + vector_elements(spec))


def too_large(size: int):
    """The refusal of a kernel whose copy would hold size elements per thread, or None."""
    if size > COPY_LIMIT:
        return (f"its padded input copy would hold {size} elements (over {COPY_LIMIT}): the padding "
                f"or dilation is too large for it")
    return None


def direct_flat_copy(spec) -> int:
    """Elements of the smallest copy direct_flat's forward makes per thread: one output row's inputs
    of every input channel of a group (csrc/direct_flat.c shortens its runs of rows down to one
    before its copy outgrows L2)."""
    return spec.c_in // spec.groups * copy_elements(spec, 1)


def why_not_direct_flat(op: str):
    """The direct_flat kernels' refusal for op: a copy too large for one of the problems its
    forward runs (the grad of input's are common/transpose.py's phases).  There is no direct_flat
    weight gradient: its transposed problem has a kh x kw output under an out_h x out_w filter, so
    the flat rows would be out_w + (kh - 1) * dh columns for kh kept (ResNet-18 conv1's: 229 for 7)."""
    problems = {"conv2d.fwd": lambda spec: [spec],
                "conv2d.bwd_data": lambda spec: [p.spec for p in transpose.data_problems(spec)]}[op]

    def why_not(spec):
        return too_large(max((direct_flat_copy(p) for p in problems(spec)), default=0))
    return why_not
