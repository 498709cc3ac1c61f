"""The im2col kernels unfold in chunks: extra memory stays within the workspace budget even where
the full column matrix would be far larger (VGG-16's first layers: over 100 MB per image)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv as fc
from fastconv.c import _lib as c_lib
from fastconv.common import config

from conftest import rel_err

IM2COL = [pytest.param(k, id=k.name) for k in fc.kernels("conv2d.fwd") if k.family == "im2col"]


@pytest.mark.parametrize("kernel", IM2COL)
def test_peak_memory_stays_within_the_workspace_budget(kernel, tmp_path):
    # Full cols for this layer: K=64*9=576 taps x 112*112 pixels x 4 B = 28.9 MB; budget 4 MiB.
    # 256 output channels, so the kernels' own preference (wide GEMMs) would exceed the budget.
    script = "BUDGET = 4 << 20\n" + textwrap.dedent(f"""
        import resource, numpy as np, fastconv as fc
        from fastconv.common import config
        config.set_workspace_bytes(BUDGET)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, 64, 112, 112)).astype(np.float32)
        w = rng.standard_normal((256, 64, 3, 3)).astype(np.float32)
        fc.conv2d(x[:, :, :8, :8], w, padding=1, algo="{kernel.algo}", backend="{kernel.backend}")  # load, JIT
        y = np.empty((1, 256, 112, 112), np.float32); y[:] = 0; del y  # the output's pages, once
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        y = fc.conv2d(x, w, padding=1, algo="{kernel.algo}", backend="{kernel.backend}")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ref = fc.reference.conv2d(x, w, padding=1)
        assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
        print((after - before) * 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path, env=dict(os.environ, FASTCONV_NUM_THREADS="2"))
    assert out.returncode == 0, out.stderr[-2000:]
    grown = int(out.stdout.split()[-1])
    # The output's pages were touched once before, so the high-water mark grows only by what the
    # kernel adds: its column buffers (unbounded they would be ~10 MB here; the full matrix 29 MB).
    assert grown < (4 << 20) + (2 << 20), grown


def test_workspace_setting_is_validated():
    before = config.workspace_bytes()
    try:
        config.set_workspace_bytes(1 << 20)
        assert config.workspace_bytes() == 1 << 20
        with pytest.raises(ValueError, match="n=0"):
            config.set_workspace_bytes(0)
        with pytest.raises(TypeError, match="n=1.5"):
            config.set_workspace_bytes(1.5)
    finally:
        config.set_workspace_bytes(before)


@pytest.mark.parametrize("kernel", IM2COL)
def test_a_tiny_budget_still_computes_the_right_answer(kernel):
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 17, 19)).astype(np.float64)
    w = rng.standard_normal((10, 3, 3, 3)).astype(np.float64)
    before = config.workspace_bytes()
    try:
        config.set_workspace_bytes(1)  # below one row: one output row per chunk
        y = fc.conv2d(x, w, stride=(2, 1), padding=1, groups=2, algo=kernel.algo, backend=kernel.backend)
    finally:
        config.set_workspace_bytes(before)
    ref = fc.reference.conv2d(x, w, stride=(2, 1), padding=1, groups=2)
    assert np.abs(y - ref).max() <= 1e-10 * np.abs(ref).max()


@pytest.mark.parametrize("kernel", IM2COL)
def test_a_budget_of_a_few_images_folds_them_in_runs(kernel):
    """im2col folds images into one GEMM, as many as the budget holds.  The forward on a 7x7 plane
    with 256 output channels (float64, 144 taps): four images' columns and outputs, two threads each
    holding a run, so runs of 2 + 2 + 1.  A tiny weight gradient (36 taps, 8 channels, 25 pixels):
    two images' columns and dY, so 2 + 2 + 1, the later runs adding to the first's grad_w."""
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((5, 16, 7, 7)), rng.standard_normal((256, 16, 3, 3))
    xs, ws = rng.standard_normal((5, 4, 5, 5)), rng.standard_normal((8, 4, 3, 3))
    gy = rng.standard_normal((5, 8, 5, 5))
    before = config.workspace_bytes()
    try:
        config.set_workspace_bytes(4 * (144 + 256) * 49 * 8 + 1000)
        y = fc.conv2d(x, w, padding=1, algo=kernel.algo, backend=kernel.backend)
        config.set_workspace_bytes(2 * (36 + 8) * 25 * 8 + 100)
        _, gw, _ = fc.api.conv2d_grads(gy, xs, ws, padding=1, bias=False, grad_input=False,
                                       weight_algo=kernel.algo, backend=kernel.backend)
    finally:
        config.set_workspace_bytes(before)
    assert rel_err(y, fc.reference.conv2d(x, w, padding=1)) <= 1e-12
    assert rel_err(gw, fc.reference.conv2d_backward(gy, xs, ws, padding=1)[1]) <= 1e-12


C_KERNELS = [pytest.param(k, id=k.name) for k in fc.kernels("conv2d.fwd") if k.backend == "c"
             and k.family not in ("depthwise",)]


@pytest.mark.skipif(c_lib.lib is None, reason="C extension not built")
@pytest.mark.parametrize("kernel", C_KERNELS)
def test_kept_workspaces_serve_later_calls_of_other_sizes_correctly(kernel):
    # blocks kept from one call serve the next of a similar size: the results must not depend on
    # what a reused block held (garbage, NaN) nor on the order of the sizes
    rng = np.random.default_rng(3)
    shapes = [((2, 64, 40, 40), (64, 64, 3, 3)), ((1, 32, 24, 24), (48, 32, 3, 3)), ((2, 64, 40, 40), (64, 64, 3, 3)),
              ((1, 128, 20, 20), (128, 128, 3, 3))]
    c_lib.release_workspace()
    for round_ in range(2):
        for xs, ws in shapes:
            x = rng.standard_normal(xs).astype(np.float32)
            w = rng.standard_normal(ws).astype(np.float32)
            y = fc.conv2d(x, w, padding=1, algo=kernel.algo, backend=kernel.backend)
            assert rel_err(y, fc.reference.conv2d(x, w, padding=1)) <= kernel.rtol["float32"]
        if round_ == 0:
            assert c_lib.workspace_kept_bytes() > 0 or kernel.family == "direct"
            c_lib.release_workspace()
            assert c_lib.workspace_kept_bytes() == 0


@pytest.mark.skipif(c_lib.lib is None, reason="C extension not built")
def test_the_kept_workspace_is_bounded_and_shared_by_threads_safely():
    import threading
    rng = np.random.default_rng(4)
    problems = []
    for hw in (16, 24, 32, 40, 48, 56, 64, 72, 80, 88):  # more sizes than the pool has slots
        x = rng.standard_normal((1, 64, hw, hw)).astype(np.float32)
        w = rng.standard_normal((96, 64, 3, 3)).astype(np.float32)
        problems.append((x, w, fc.reference.conv2d(x, w, padding=1)))
    errors = []

    def work(order):
        for i in order:
            x, w, expected = problems[i]
            for algo in ("im2col", "winograd_f4k3", "direct_flat"):
                y = fc.conv2d(x, w, padding=1, algo=algo, backend="c")
                if rel_err(y, expected) > 5e-5:
                    errors.append((i, algo))
    threads = [threading.Thread(target=work, args=(order,)) for order in
               (range(10), reversed(range(10)), [3, 7, 1, 9, 0, 5, 2, 8, 4, 6])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert 0 < c_lib.workspace_kept_bytes() <= 256 << 20
