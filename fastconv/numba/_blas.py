"""OpenBLAS's sgemm/dgemm, the very copy the C backend links, called from compiled Numba code
(with cache=True).

How: at import, the addresses of ``scipy_cblas_sgemm``/``dgemm`` in the scipy-openblas32 library
(fastconv/common/openblas.py, which also sets its threads to 1) are registered with LLVM under private
names (``llvmlite.binding.add_symbol``), and Numba declares them as ``types.ExternalFunction``s of
those names.  Compiled code refers to the functions by name, so Numba's on-disk cache holds no
process-specific address and a fresh process reuses it: importing this module, which every kernel
using it does first, registers the names again.  (ctypes or cffi function objects run as fast
but bake their address into the code, and Numba refuses to cache it.)  The private names leave no
chance for LLVM to resolve a plain ``scipy_cblas_sgemm`` to another OpenBLAS copy in the process
(scipy's bundled one exports the same names).

This module is ABI for Numba's cache, which notices edits only in the decorated function's own
file: a kernel compiled against ``gemm`` keeps the old code after this file changes.  So it holds
only what the CBLAS interface fixes (names, C signatures, argument order), and a test
(tests/test_numba_blas.py) makes every edit here also edit the kernels that call it.
"""
import llvmlite.binding as llvm
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from ..common import openblas

# CBLAS enum values (cblas.h)
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

for _name in ("scipy_cblas_sgemm", "scipy_cblas_dgemm"):
    llvm.add_symbol("fastconv_" + _name, openblas.address(_name))


def _gemm_type(name, real):
    # void cblas_?gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    i, p = types.int32, types.voidptr
    return types.ExternalFunction(name, types.void(i, i, i, i, i, i, real, p, i, p, i, real, p, i))


cblas_sgemm = _gemm_type("fastconv_scipy_cblas_sgemm", types.float32)
cblas_dgemm = _gemm_type("fastconv_scipy_cblas_dgemm", types.float64)


@intrinsic
def _address(typingctx, arr, offset):
    """void* to element ``offset`` of a C-contiguous array's data (no copy, no bounds check)."""
    if not (isinstance(arr, types.Array) and arr.layout == "C" and isinstance(offset, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        off = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.bitcast(builder.gep(data, [off]), context.get_value_type(types.voidptr))

    return types.voidptr(arr, offset), codegen


def gemm(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    """C = alpha * op(A) . op(B) + beta * C, row-major, as cblas_?gemm, on flat offsets:
    C is the m x n matrix at element c_off of c with leading dimension ldc; op(A) is m x k, stored
    from a_off as m x k (or k x m when trans_a) with leading dimension lda; B likewise, k x n.
    The arrays are C-contiguous, of any ndim, all float32 or all float64.  Beta 0 does not read C.

    This Python body defines the semantics with NumPy (it runs under NUMBA_DISABLE_JIT); compiled
    code calls OpenBLAS instead (the overload below), single-threaded.
    """
    def matrix(arr, off, rows, cols, ld):
        flat = arr.reshape(-1)[off:]
        return np.lib.stride_tricks.as_strided(flat, (rows, cols), (ld * flat.itemsize, flat.itemsize))

    A = matrix(a, a_off, k, m, lda).T if trans_a else matrix(a, a_off, m, k, lda)
    B = matrix(b, b_off, n, k, ldb).T if trans_b else matrix(b, b_off, k, n, ldb)
    C = matrix(c, c_off, m, n, ldc)
    C[...] = alpha * (A @ B) + (beta * C if beta != 0 else 0)


@overload(gemm, jit_options=dict(nogil=True))
def _gemm_blas(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    if not (isinstance(c, types.Array) and a.dtype == b.dtype == c.dtype):
        return None
    if c.dtype == types.float32:
        xgemm, real = cblas_sgemm, np.float32
    elif c.dtype == types.float64:
        xgemm, real = cblas_dgemm, np.float64
    else:
        return None

    def impl(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
        i32 = np.int32
        xgemm(i32(ROW_MAJOR), i32(TRANS if trans_a else NO_TRANS), i32(TRANS if trans_b else NO_TRANS),
              i32(m), i32(n), i32(k), real(alpha), _address(a, a_off), i32(lda),
              _address(b, b_off), i32(ldb), real(beta), _address(c, c_off), i32(ldc))

    return impl
