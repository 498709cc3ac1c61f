"""One thread count for every backend, and safety under concurrent calls from Python threads."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv as fc
from fastconv import threads


def test_set_num_threads_validates_and_round_trips():
    before = fc.get_num_threads()
    try:
        fc.set_num_threads(1)
        assert fc.get_num_threads() == 1
        with pytest.raises(ValueError, match="n=0"):
            fc.set_num_threads(0)
        with pytest.raises(ValueError, match=f"n={threads.max_threads() + 1}"):
            fc.set_num_threads(threads.max_threads() + 1)
        with pytest.raises(TypeError, match="n='2'"):
            fc.set_num_threads("2")
    finally:
        fc.set_num_threads(before)


@pytest.mark.parametrize("kernel", fc.kernels("conv2d.fwd") + fc.kernels("maxpool2d.fwd"), ids=lambda k: f"{k.op}:{k.name}")
def test_results_do_not_depend_on_the_thread_count(kernel):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 8, 15, 15)).astype(np.float32)
    w = rng.standard_normal((10, 8, 3, 3)).astype(np.float32)
    groups = 8 if kernel.family == "depthwise" else 1  # a depthwise kernel on the kind it serves
    w = w.reshape(-1)[:16 * 9].reshape(16, 1, 3, 3) if groups > 1 else w
    run = (lambda: fc.conv2d(x, w, padding=1, groups=groups, algo=kernel.algo, backend=kernel.backend)) \
        if kernel.op == "conv2d.fwd" else (lambda: fc.max_pool2d(x, 3, 2, 1, backend=kernel.backend)[0])
    before = fc.get_num_threads()
    try:
        results = []
        for n in sorted({1, threads.max_threads()}):
            fc.set_num_threads(n)
            results.append(run())
    finally:
        fc.set_num_threads(before)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])  # tasks are disjoint: bitwise equal


def test_environment_variable_sets_the_count_and_bad_values_warn(tmp_path):
    code = "import fastconv as fc; print(fc.get_num_threads())"
    env = dict(os.environ, FASTCONV_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "1"
    env["FASTCONV_NUM_THREADS"] = "lots"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == str(threads.max_threads()) and "FASTCONV_NUM_THREADS='lots'" in out.stderr
    # without it, OMP_NUM_THREADS (torchrun's 1 per process; a nested list's first level; at most
    # the pool; nonsense ignored)
    del env["FASTCONV_NUM_THREADS"]
    for omp, expected in (("1", 1), ("1,4", 1), ("999", threads.max_threads()), ("zero", threads.max_threads()),
                          ("0", threads.max_threads())):
        env["OMP_NUM_THREADS"] = omp
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                             cwd=tmp_path)
        assert out.stdout.strip() == str(expected), omp
    env["FASTCONV_NUM_THREADS"] = "1"
    env["OMP_NUM_THREADS"] = "999"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "1"  # fastconv's own variable first


def test_concurrent_calls_from_four_python_threads(tmp_path):
    """Numba's default workqueue layer aborts the process here; fastconv must pick a safe layer.
    Run in a subprocess so an abort fails this test instead of killing the test session."""
    script = textwrap.dedent("""
        import threading, numpy as np, numba, fastconv as fc
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 16, 20, 20)).astype(np.float32)
        w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
        expected = fc.reference.conv2d(x, w, padding=1)
        pooled = fc.reference.max_pool2d(x, 2)
        errors = []
        def work(backend):
            try:
                for _ in range(20):
                    y = fc.conv2d(x, w, padding=1, backend=backend)
                    assert np.abs(y - expected).max() <= 1e-4 * np.abs(expected).max()
                    v, i = fc.max_pool2d(x, 2, backend=backend)
                    assert np.array_equal(i, pooled[1])
            except BaseException as exc:
                errors.append(repr(exc))
        fc.conv2d(x, w, padding=1, backend="numba"); fc.max_pool2d(x, 2, backend="numba")  # compile first
        ts = [threading.Thread(target=work, args=(b,)) for b in ("numba", "numba", "c", "numba")]
        [t.start() for t in ts]; [t.join() for t in ts]
        print(numba.threading_layer(), len(errors), errors[:1])
    """)
    # cwd away from the checkout, so the subprocess imports the installed package
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    layer, n_errors = out.stdout.split()[:2]
    assert layer in ("omp", "tbb") and n_errors == "0", out.stdout


def test_small_problems_run_on_one_thread():
    """A parallel region on a busy machine waits for a time slice per core: tiny problems stay serial."""
    from fastconv import threads
    from fastconv.spec import ConvSpec, PoolSpec

    tiny = ConvSpec.from_shapes((2, 4, 7, 6), (6, 4, 3, 3))
    big = ConvSpec.from_shapes((1, 64, 56, 56), (64, 64, 3, 3))
    assert tiny.flops < threads.SERIAL_WORK <= big.flops
    assert threads.for_problem(tiny) == 1
    assert threads.for_problem(big) == threads.get_num_threads() == threads.for_problem(None)
    assert threads.for_problem(PoolSpec.from_shape((1, 64, 112, 112), 2)) == threads.get_num_threads()
    assert threads.for_problem(PoolSpec.from_shape((1, 2, 8, 8), 2)) == 1
    # a pool's work is its taps: AlexNet's pool5 (a small input, 9 taps an output) takes both
    assert threads.for_problem(PoolSpec.from_shape((1, 256, 13, 13), 3, 2)) == threads.get_num_threads()
