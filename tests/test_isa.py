"""The C microkernels' ISA paths: FASTCONV_ISA forces a lower one, the CPU bounds it, the choice
is named where a user looks (``fastconv kernels``, ``explain``, the tuning cache key), and every
path the CPU runs computes the reference's answer.  (CI also runs the kernel test modules once per
path below the CPU's: .ci/run.)"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv as fc
from fastconv import registry
from fastconv.c import _lib
from fastconv.dispatch import tuning_cache
from fastconv.spec import ConvSpec

pytestmark = pytest.mark.skipif(_lib.lib is None, reason="C extension not built")

CPU = _lib.lib.fc_cpu_isa() if _lib.lib is not None else 0
PATHS = _lib.ISA_NAMES[: CPU + 1]  # every path this CPU runs


def _run(script: str, tmp_path, **env) -> subprocess.CompletedProcess:
    """script in a fresh interpreter with env set (cwd away from the checkout: the installed package)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=dict(os.environ, **env))


CHECK = """
    import numpy as np, fastconv as fc
    from fastconv.c import _lib
    rng = np.random.default_rng(3)
    worst = 0.0
    # partial register tiles (channels and pixels not multiples of any tile), groups, stride,
    # dilation, padding, both dtypes, a plane of many tiles, a first layer of stride 2, and many
    # channels on small planes
    for xs, ws, kw in [((2, 5, 11, 13), (7, 5, 3, 3), dict(padding=1)),
                       ((1, 3, 45, 38), (21, 3, 7, 7), dict(stride=2, padding=3)),
                       ((1, 6, 9, 17), (9, 2, 3, 2), dict(stride=2, dilation=(1, 2), groups=3)),
                       ((1, 3, 40, 41), (33, 3, 5, 5), dict(padding=2)),
                       ((3, 16, 7, 7), (17, 16, 1, 1), {}),
                       ((1, 128, 6, 6), (70, 128, 3, 3), dict(padding=1)),  # direct_flat: weights read in place
                       ((1, 128, 9, 9), (67, 128, 3, 3), dict(stride=2, padding=1)),
                       # direct_flat's channel tiling: several images per task, groups and dilation
                       ((6, 32, 5, 6), (150, 32, 3, 3), dict(padding=1)),
                       ((2, 64, 23, 9), (40, 32, 3, 3), dict(stride=(2, 1), padding=2, dilation=(2, 1), groups=2))]:
        for dt in ("float32", "float64"):
            x, w = rng.standard_normal(xs).astype(dt), rng.standard_normal(ws).astype(dt)
            b = rng.standard_normal(ws[0]).astype(dt)
            algos = ("direct", "direct_flat", "im2col")
            for algo in algos + ("winograd",) if ws[2:] == (3, 3) and "stride" not in kw else algos:
                y = fc.conv2d(x, w, b, algo=algo, backend="c", **kw)
                err = fc.reference.rel_error(y, fc.reference.conv2d(x, w, b, **kw))
                worst = max(worst, err / (1e-4 if dt == "float32" else 1e-11))
            # im2col's unfold and its adjoint (col2im) run in the backward passes too
            gy = rng.standard_normal(fc.reference.conv2d(x, w, b, **kw).shape).astype(dt)
            want = fc.reference.conv2d_backward(gy, x, w, **kw)
            for algo in ("im2col", "direct_flat"):  # direct_flat: its forward on the transposed problems
                got = fc.conv2d_backward(gy, x, w, algo=algo, weight_algo="im2col", backend="c", **kw)
                for g, r in zip(got, want):
                    worst = max(worst, fc.reference.rel_error(g, r) / (1e-4 if dt == "float32" else 1e-11))
    # depthwise: forward and both backward passes; a multiplier, stride 2 (four phases), a plane
    # smaller than a vector, a row of several vectors with a partial last one, and channels for
    # its channel-blocked path (avx512: 21 = 16 + 5, a partial block)
    for xs, ws, kw in [((2, 6, 13, 12), (12, 1, 3, 3), dict(padding=1, groups=6)),
                       ((1, 5, 23, 70), (5, 1, 5, 3), dict(stride=2, padding=(2, 1), dilation=(1, 2), groups=5)),
                       ((3, 9, 7, 7), (9, 1, 3, 3), dict(padding=1, groups=9)),
                       ((2, 21, 10, 19), (21, 1, 3, 3), dict(stride=2, padding=1, groups=21))]:
        for dt in ("float32", "float64"):
            x, w = rng.standard_normal(xs).astype(dt), rng.standard_normal(ws).astype(dt)
            b = rng.standard_normal(ws[0]).astype(dt)
            y = fc.conv2d(x, w, b, algo="depthwise", backend="c", **kw)
            gy = rng.standard_normal(y.shape).astype(dt)
            got = (y, *fc.conv2d_backward(gy, x, w, algo="depthwise", weight_algo="depthwise", backend="c", **kw))
            want = (fc.reference.conv2d(x, w, b, **kw), *fc.reference.conv2d_backward(gy, x, w, **kw))
            for g, r in zip(got, want):
                worst = max(worst, fc.reference.rel_error(g, r) / (1e-4 if dt == "float32" else 1e-11))
    # max-pool: stride, padding, dilation, ceil mode, ties and NaN (values and argmax indices exact,
    # with and without indices)
    for xs, kw in [((2, 3, 17, 19), dict(kernel_size=3, stride=2, padding=1)),
                   ((1, 4, 16, 16), dict(kernel_size=2, stride=2)),
                   ((1, 2, 13, 11), dict(kernel_size=(3, 2), stride=(1, 3), dilation=2, ceil_mode=True))]:
        for dt in ("float32", "float64"):
            x = rng.integers(-3, 4, xs).astype(dt)  # many ties
            x[0, 0, 1, 2] = np.nan
            y, i = fc.max_pool2d(x, return_indices=True, backend="c", **kw)
            ry, ri = fc.reference.max_pool2d(x, return_indices=True, **kw)
            assert np.array_equal(y, ry, equal_nan=True) and np.array_equal(i, ri), (xs, kw, dt)
            alone = fc.max_pool2d(x, return_indices=False, backend="c", **kw)  # the index-free walk
            assert np.array_equal(alone, ry, equal_nan=True), (xs, kw, dt)
    print(_lib.isa(), worst)
"""


@pytest.mark.parametrize("path", PATHS)
def test_every_path_the_cpu_runs_matches_the_reference(path, tmp_path):
    out = _run(CHECK, tmp_path, FASTCONV_ISA=path)
    assert out.returncode == 0, out.stderr
    isa, worst = out.stdout.split()
    assert isa == path and float(worst) <= 1.0, out.stdout


def test_a_path_above_the_cpu_or_unknown_is_refused_with_a_warning(tmp_path):
    script = "from fastconv.c import _lib; print(_lib.isa())"
    out = _run(script, tmp_path, FASTCONV_ISA="sse9")
    assert out.stdout.strip() == _lib.ISA_NAMES[CPU] and "ignoring FASTCONV_ISA='sse9'" in out.stderr
    if CPU < len(_lib.ISA_NAMES) - 1:
        above = _lib.ISA_NAMES[CPU + 1]
        out = _run(script, tmp_path, FASTCONV_ISA=above)
        assert out.stdout.strip() == _lib.ISA_NAMES[CPU] and f"runs at most {_lib.ISA_NAMES[CPU]}" in out.stderr


def test_a_shape_asking_for_more_than_the_cpu_runs_is_lowered():
    """The C side never trusts the request: isa=99 in the shape struct runs the CPU's best path."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 4, 10, 10), dtype=np.float32), rng.standard_normal((6, 4, 3, 3), dtype=np.float32)
    spec = ConvSpec.from_args(x, w, padding=1)
    shape = _lib.ffi.new("fc_conv2d_shape *", _lib.conv_shape(spec)[0])  # a copy: the cached one stays
    shape.isa = 99
    y = np.empty(spec.output_shape, np.float32)
    status = _lib.lib.fc_conv2d_fwd_direct_f32(_lib.ptr(x), _lib.ptr(w), _lib.ffi.NULL, _lib.ffi.NULL,
                                                _lib.ptr(y, out=True), shape, 1, _lib.ffi.NULL)
    assert status == 0 and fc.reference.rel_error(y, fc.reference.conv2d(x, w, padding=1)) <= 1e-5


def test_the_machine_facts_and_cpuid_agree_on_the_cpus_path():
    """fastconv.machine reads /proc/cpuinfo's flags, the C side cpuid: the same x86-64 levels."""
    from fastconv import machine

    if not machine.isa_flags():
        pytest.skip("no /proc/cpuinfo flags here")
    assert machine.isa_path() == _lib.cpu_isa()


def test_the_path_is_named_where_a_user_looks(capsys):
    from fastconv import cli

    c = registry.BACKENDS["c"]
    assert f"ISA {_lib.isa()}" in c.status() and c.isa() == _lib.isa()
    assert c.fingerprint()["c_isa"] == _lib.isa()  # so the tuning cache keys on it
    assert tuning_cache.environment(1)["c_isa"] == _lib.isa()
    plan = fc.explain((1, 8, 12, 12), (8, 8, 3, 3), padding=1, backend="c", rigor="estimate")
    assert f"; ISA {_lib.isa()}" in str(plan).splitlines()[1]
    assert cli.main(["kernels"]) == 0
    assert f"C: ISA {_lib.isa()}" in capsys.readouterr().out
