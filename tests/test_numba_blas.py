"""The Numba binding of OpenBLAS's gemm (fastconv/numba/_blas.py): results against NumPy in every
transpose combination, with leading dimensions and offsets; the on-disk cache of a kernel that
calls it is reused by a fresh process; and the cache rule for edits to _blas.py."""
import hashlib
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from fastconv.numba import _blas
from fastconv.numba import im2col as nb_im2col


@numba.njit
def _jitted_gemm(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    _blas.gemm(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans_a", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["B", "Bt"])
@pytest.mark.parametrize("gemm", [_jitted_gemm, _blas.gemm], ids=["openblas", "python-body"])
def test_gemm_matches_numpy(gemm, trans_a, trans_b, dtype):
    rng = np.random.default_rng(3)
    m, n, k = 37, 29, 53  # primes; each matrix sits at an offset inside a wider array (ld > cols)
    (ra, ca), (rb, cb) = ((k, m) if trans_a else (m, k)), ((n, k) if trans_b else (k, n))
    lda, ldb, ldc = ca + 3, cb + 5, n + 7
    a = rng.standard_normal((ra + 2, lda)).astype(dtype)
    b = rng.standard_normal((2, rb + 1, ldb)).astype(dtype)  # any ndim: offsets are flat
    c = rng.standard_normal((m + 2, ldc)).astype(dtype)
    a_off, b_off, c_off = lda + 1, 2 * ldb, ldc + 2
    A = a.reshape(-1)[a_off:a_off + ra * lda].reshape(ra, lda)[:, :ca].astype(np.float64)
    B = b.reshape(-1)[b_off:b_off + rb * ldb].reshape(rb, ldb)[:, :cb].astype(np.float64)
    A, B = (A.T if trans_a else A), (B.T if trans_b else B)
    expected = c.astype(np.float64)
    expected.reshape(-1)[c_off:c_off + m * ldc].reshape(m, ldc)[:, :n] *= 0.5
    expected.reshape(-1)[c_off:c_off + m * ldc].reshape(m, ldc)[:, :n] += 2.0 * A @ B
    gemm(trans_a, trans_b, m, n, k, 2.0, a, a_off, lda, b, b_off, ldb, 0.5, c, c_off, ldc)
    tol = 1e-5 if dtype == "float32" else 1e-13
    assert np.abs(c - expected).max() <= tol * np.abs(expected).max()  # and nothing else was written


@pytest.mark.parametrize("gemm", [_jitted_gemm, _blas.gemm], ids=["openblas", "python-body"])
def test_gemm_with_beta_zero_does_not_read_c(gemm):
    a, b = np.ones((2, 3)), np.ones((3, 4))
    c = np.full((2, 4), np.nan)
    gemm(False, False, 2, 4, 3, 1.0, a, 0, 3, b, 0, 4, 0.0, c, 0, 4)
    np.testing.assert_array_equal(c, 3.0)


def test_a_fresh_process_loads_the_kernel_from_the_cache(tmp_path):
    """Compiled code names the BLAS functions instead of baking in their address, so the cache
    written by one process serves the next."""
    script = textwrap.dedent("""
        import numpy as np, fastconv as fc
        from fastconv.numba import im2col
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
        w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
        y = fc.conv2d(x, w, padding=1, algo="im2col", backend="numba")
        ref = fc.reference.conv2d(x, w, padding=1)
        assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
        stats = im2col._conv2d_forward.stats
        print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba_cache"))
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path, env=env) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
        assert "Cannot cache" not in run.stderr, run.stderr[-2000:]
    assert runs[0].stdout.split() == ["0", "1"]  # compiled and stored
    assert runs[1].stdout.split() == ["1", "0"]  # loaded, not compiled


def test_blas_edits_reach_the_kernels_that_call_it():
    """Numba's cache notices edits only in the decorated function's own file, so a kernel compiled
    against _blas.py would keep running the old code after it changes.  Recording the file's hash
    in the calling kernel's file makes every edit of _blas.py edit (and so recompile) it too."""
    digest = hashlib.sha256(open(_blas.__file__, "rb").read()).hexdigest()[:16]
    assert nb_im2col.BLAS_ABI == digest, (
        f"fastconv/numba/_blas.py changed: set BLAS_ABI = {digest!r} in fastconv/numba/im2col.py "
        "(that edit makes Numba recompile its cached kernels)")
