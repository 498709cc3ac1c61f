"""What im2col + GEMM needs of a problem, the same in both backends (the twins: fastconv/numba/
im2col.py and csrc/im2col.c): OpenBLAS's limits."""

INT32_MAX = 2**31 - 1


def why_not(spec):
    """Why im2col (either backend) cannot serve spec, or None: OpenBLAS (scipy-openblas32) takes
    32-bit dimensions, so K = C_in/groups * kH * kW, out_h * out_w and C_out/groups must each fit
    (csrc/im2col.c checks the same in fc_im2col_too_big).  A 1x1 convolution of a 46341x46341 plane
    does not: the registry's eligibility knows, so ``auto`` picks a direct kernel instead."""
    dims = {"C_in/groups*kH*kW": spec.c_in // spec.groups * spec.kh * spec.kw,
            "out_h*out_w": spec.out_h * spec.out_w, "C_out/groups": spec.c_out // spec.groups}
    over = [f"{name}={v}" for name, v in dims.items() if v > INT32_MAX]
    return f"a GEMM dimension exceeds OpenBLAS's 32-bit integers ({', '.join(over)})" if over else None
