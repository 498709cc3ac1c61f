"""The build: the C extension is there (CI makes its absence fatal), carries a fingerprint that
matches the sources, uses OpenMP when the probe passed, and the Numba policy holds."""
import os
import pathlib
import re

import pytest

import fastconv
from fastconv.c import _lib

PACKAGE = pathlib.Path(fastconv.__file__).parent
# The checkout these tests belong to: the extension must have been built from its csrc/.
SOURCE_CSRC = pathlib.Path(__file__).resolve().parents[1] / "csrc"


def test_c_extension_is_built_or_says_why():
    if os.environ.get("FASTCONV_REQUIRE_C") == "1":
        assert _lib.UNAVAILABLE is None, _lib.UNAVAILABLE
    if _lib.UNAVAILABLE is not None:
        assert "C extension not built" in _lib.UNAVAILABLE
        pytest.skip(_lib.UNAVAILABLE)
    info = _lib.build_info()
    assert info.startswith(f"fastconv {fastconv.__version__} csrc:")
    assert f"openmp:{int(_lib.has_openmp())}" in info


@pytest.mark.skipif(_lib.lib is None, reason="C extension not built")
def test_fingerprint_matches_the_sources_in_a_checkout():
    from fastconv._build_cffi import csrc_hash

    assert f"csrc:{csrc_hash(str(SOURCE_CSRC))}" in _lib.build_info(), "stale _cconv: rebuild with pip install -e ."


@pytest.mark.skipif(_lib.lib is None, reason="C extension not built")
def test_a_kernel_pointer_is_never_made_to_strided_data():
    """_lib.ptr checks nothing itself: the buffer protocol refuses what is not C-contiguous."""
    import numpy as np

    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    assert _lib.ffi.cast("float *", _lib.ptr(a))[7] == 7 and _lib.ptr(None) == _lib.ffi.NULL
    for strided in (a[:, ::2], a.T, a[::2]):
        with pytest.raises(ValueError, match="not C-contiguous"):
            _lib.ptr(strided)


def test_stale_extension_warns(monkeypatch, tmp_path):
    if _lib.lib is None:
        pytest.skip(_lib.UNAVAILABLE)
    monkeypatch.setattr(_lib, "build_info", lambda: "fastconv 0 csrc:0000000000000000 openmp:1")
    fake_root = tmp_path / "root"
    (fake_root / "csrc").mkdir(parents=True)
    (fake_root / "csrc" / "x.c").write_text("int x;")
    monkeypatch.setattr(_lib, "__file__", str(fake_root / "fastconv" / "c" / "_lib.py"))
    with pytest.warns(RuntimeWarning, match="stale"):
        _lib._check_stale()


def test_numba_decorator_policy_lives_in_one_module():
    """fastmath flags are chosen once in _options.py (never fastmath=True: NaN rules matter)."""
    for path in (PACKAGE / "numba").glob("*.py"):
        text = path.read_text()
        if path.name == "_options.py":
            assert "nnan" not in re.findall(r"FASTMATH = frozenset\(\{(.*)\}\)", text)[0]
            continue
        assert "fastmath" not in text, f"{path.name} sets fastmath itself"
        assert "@njit" not in text and "numba.njit" not in text, f"{path.name} bypasses the policy"


def test_no_fast_math_in_the_c_build():
    from fastconv import _build_cffi

    assert not any("fast-math" in f or f == "-Ofast" for f in _build_cffi.BASE_FLAGS)


def test_sanitize_switch():
    """FASTCONV_SANITIZE (.ci/sanitize): off by default, 1 means ASan + UBSan on compile and link."""
    from fastconv import _build_cffi

    assert _build_cffi.sanitize_flags("") == _build_cffi.sanitize_flags("0") == ([], [])
    compile_args, link_args = _build_cffi.sanitize_flags("1")
    assert "-fsanitize=address,undefined" in compile_args and link_args == ["-fsanitize=address,undefined"]
    assert compile_args[-1] == "-O1"  # appended after BASE_FLAGS, so it wins over -O3
    # ASan's 32-byte-aligned fake stack frames break 64-byte vector locals (AVX-512)
    assert "--param=asan-use-after-return=0" in compile_args
    assert not any("asan" in f for f in _build_cffi.sanitize_flags("undefined")[0])
    assert _build_cffi.sanitize_flags("undefined")[1] == ["-fsanitize=undefined"]
    with pytest.raises(ValueError, match="FASTCONV_SANITIZE"):
        _build_cffi.sanitize_flags("address; rm -rf /")


def test_openblas_stays_private(tmp_path):
    """fastconv's OpenBLAS copy (pinned to one thread) must not leak its scipy_* symbols into the
    process's global namespace, where scipy's own OpenBLAS, exporting the same names, would lose
    them to it.  Checked in a fresh process, after fastconv's kernels have run."""
    import subprocess
    import sys

    code = ("import ctypes, numpy as np, fastconv\n"
            "x = np.ones((1, 2, 5, 5), np.float32); w = np.ones((3, 2, 3, 3), np.float32)\n"
            "assert fastconv.conv2d(x, w, algo='im2col', backend='numba')[0, 0, 1, 1] == 18\n"
            "try:\n    ctypes.CDLL(None).scipy_cblas_sgemm\nexcept AttributeError:\n    print('private')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.stdout.strip() == "private", out.stderr
