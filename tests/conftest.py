"""Shared helpers for fastconv's tests: the error measure and the kernel/case tables.

Every kernel test is "kernel(spec) == reference(spec)" and is parametrized over the registry, so a
kernel is tested the moment it is registered (XNNPACK's tester pattern)."""
import numpy as np
import pytest

import fastconv as fc


def rel_err(actual, expected) -> float:
    """max |actual - expected| / max |expected| (the measure of the registry's rtol)."""
    expected = np.asarray(expected, np.float64)
    scale = np.abs(expected).max() if expected.size else 0.0
    err = np.abs(np.asarray(actual, np.float64) - expected).max() if expected.size else 0.0
    return float(err / scale) if scale > 0 else float(err)


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
