"""Shared helpers for fastconv's tests: the error measure and the kernel/case tables.

Every kernel test is "kernel(spec) == reference(spec)" and is parametrized over the registry, so a
kernel is tested the moment it is registered (XNNPACK's tester pattern).

The dispatcher runs in ESTIMATE mode for the whole session, with a throw-away tuning cache: the
suite calls ``algo="auto"`` on hundreds of generated shapes and must not time every kernel on each
(nor read or write the user's cache).  Set before fastconv is imported, so subprocesses inherit it
too.  A test that wants measuring asks for the ``measuring`` fixture."""
import os
import shutil
import tempfile

_SESSION_CACHE = tempfile.mkdtemp(prefix="fastconv-test-tuning-")
os.environ["FASTCONV_CACHE_DIR"] = _SESSION_CACHE
os.environ["FASTCONV_TUNING"] = "estimate"
os.environ["FASTCONV_AUTOTUNE"] = "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastconv as fc  # noqa: E402
from fastconv import dispatch, reference  # noqa: E402
from fastconv.dispatch import measure, tuning_cache  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture
def measuring(tmp_path, monkeypatch):
    """MEASURE mode with a fresh, empty cache directory (also for subprocesses: the environment is
    set too) and short pauses; restores ESTIMATE mode afterwards.  Yields the directory."""
    cache = tmp_path / "tuning-cache"
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(cache))
    monkeypatch.setenv("FASTCONV_TUNING", "measure")
    monkeypatch.delenv("FASTCONV_AUTOTUNE", raising=False)
    monkeypatch.setattr(measure, "PAUSE_MIN_S", 0.0)
    monkeypatch.setattr(measure, "PAUSE_MAX_S", 0.002)
    tuning_cache.forget()
    dispatch.set_tuning("measure", budget_s=2.0)
    yield cache
    dispatch.set_tuning("estimate", budget_s=dispatch.DEFAULT_BUDGET_S)
    tuning_cache.forget()


# max |actual - expected| / max |expected| (the measure of the registry's rtol): the library's one
# function, with its one NaN rule, so a test measures as the tuner and the benchmarks do
rel_err = reference.rel_error


def kernel_params(op):
    """pytest params over every registered kernel of op; C kernels need the extension."""
    return [pytest.param(k, id=k.name) for k in fc.kernels(op)]


def random_array(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def assert_matches_finite_differences(loss, analytic_grads, arrays, rng, samples=10, eps=1e-6):
    """Central differences of loss() (float64) at random entries of each array, which are nudged
    in place and restored, against the analytic gradients."""
    for analytic, array in zip(analytic_grads, arrays):
        for flat in rng.choice(array.size, size=min(samples, array.size), replace=False):
            idx = np.unravel_index(flat, array.shape)
            old = array[idx]
            array[idx] = old + eps
            up = loss()
            array[idx] = old - eps
            down = loss()
            array[idx] = old
            assert analytic[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-7)


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture
def spy_forward(monkeypatch):
    """Installs c.spy as the only conv2d.fwd kernel beside the reference (it computes the reference's
    result and logs each call's activation); yields (log, uninstall)."""
    from fastconv import reference, registry
    log, kernels = [], registry.KERNELS

    def spy(spec, x, w, bias=None, *, act=None):
        log.append(act)
        return reference._conv2d(spec, x, w, bias, act=act)
    monkeypatch.setattr(registry, "KERNELS", (registry.Kernel("c.spy", "conv2d.fwd", spy),) +
                        tuple(k for k in kernels if k.op != "conv2d.fwd" or k.backend == "numpy"))
    yield log, lambda: monkeypatch.setattr(registry, "KERNELS", kernels)
