"""Every registered max-pool kernel against the reference: values and indices must be *equal*
(max-pool does no arithmetic), including ties, NaN, -inf, dilation and ceil_mode; the backward
pass must route each gradient to its argmax and refuse indices outside the plane."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv.spec import PoolBackwardSpec, PoolSpec

from conftest import kernel_params

FORWARD = kernel_params("maxpool2d.fwd")
BACKWARD = kernel_params("maxpool2d.bwd")

# (input shape, kernel_size, stride, padding, dilation, ceil_mode).  C pools rows of up to a
# vector of outputs by output and wider ones along the rows (csrc/maxpool.c): the "wide" cases
# take the row loop on every ISA path, most others the by-output one.
CASES = {
    "vgg-2x2s2": ((1, 3, 8, 8), 2, 2, 0, 1, False),
    "2x2s2-odd": ((2, 3, 7, 9), 2, 2, 0, 1, False),  # floor: the last row and column unread
    "2x2s2-ceil-odd": ((1, 2, 7, 5), 2, 2, 0, 1, True),  # partial windows: the general loop
    "resnet-3x3s2p1": ((2, 4, 13, 11), 3, 2, 1, 1, False),
    "overlapping-s1": ((1, 2, 7, 9), 3, 1, 1, 1, False),
    "ceil-mode": ((1, 2, 5, 5), 2, 2, 1, 1, True),
    "ceil-mode-alexnet": ((1, 3, 14, 14), 3, 2, 0, 1, True),
    "dilation": ((1, 2, 11, 12), (3, 2), (2, 1), (1, 1), (2, 3), False),
    "asymmetric": ((3, 2, 6, 17), (1, 4), (1, 3), (0, 2), 1, True),
    "global": ((2, 5, 7, 7), 7, 7, 0, 1, False),
    "1x1": ((1, 1, 3, 3), 1, 1, 0, 1, False),
    "alexnet-pool5": ((1, 3, 13, 13), 3, 2, 0, 1, False),
    "wide-3x3s2p1": ((1, 2, 9, 40), 3, 2, 1, 1, False),
    "wide-dilated-ceil": ((1, 2, 7, 45), (2, 3), (1, 2), (1, 1), (2, 2), True),
}


def _data(rng, shape, dtype, flavour):
    if flavour == "ties":
        return rng.integers(-2, 3, shape).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    if flavour == "nan":
        x[rng.random(shape) < 0.15] = np.nan
    if flavour == "inf":
        x[rng.random(shape) < 0.4] = -np.inf
        x[rng.random(shape) < 0.05] = np.inf
    return x


def _check_forward(kernel, case, dtype, flavour, rng):
    shape, *args = case
    x = _data(rng, shape, dtype, flavour)
    x0 = x.copy()
    y_ref, i_ref = fc.reference.max_pool2d(x, *args)
    y, idx = fc.max_pool2d(x, *args, backend=kernel.backend)
    assert y.dtype == np.dtype(dtype) and idx.dtype == np.int64 and y.flags.c_contiguous
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, i_ref)
    np.testing.assert_array_equal(x, x0)
    # Without indices (inference): the kernel returns none, and the same values.
    values_only = PoolSpec.from_shape(shape, *args, dtype=dtype, indices=False)
    y_alone, no_idx = kernel.run(values_only, x)
    assert no_idx is None
    np.testing.assert_array_equal(y_alone, y_ref)
    assert np.array_equal(fc.max_pool2d(x, *args, return_indices=False, backend=kernel.backend), y_ref,
                          equal_nan=True)


@pytest.mark.parametrize("flavour", ["normal", "ties", "nan", "inf"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("kernel", FORWARD)
def test_forward_cases(kernel, case, dtype, flavour, rng):
    _check_forward(kernel, case, dtype, flavour, rng)


@st.composite
def pool_problems(draw):
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    args = (k, (draw(st.integers(1, 4)), draw(st.integers(1, 4))),
            (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))),
            (draw(st.integers(1, 3)), draw(st.integers(1, 3))), draw(st.booleans()))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 20)), draw(st.integers(1, 20)))
    return (shape, *args)


@pytest.mark.parametrize("kernel", FORWARD)
@settings(max_examples=80, deadline=None)
@given(case=pool_problems(), flavour=st.sampled_from(["normal", "ties", "nan", "inf"]),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**32 - 1))
def test_forward_property(kernel, case, flavour, dtype, seed):
    shape, k, s, p, d, ceil = case
    try:
        fc.spec.PoolSpec.from_shape(shape, k, s, p, d, ceil, dtype)
    except ValueError:
        return
    _check_forward(kernel, case, dtype, flavour, np.random.default_rng(seed))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("kernel", BACKWARD)
def test_backward_routes_to_argmax(kernel, case, dtype, rng):
    shape, *args = case
    x = _data(rng, shape, dtype, "ties")
    y, idx = fc.reference.max_pool2d(x, *args)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gy0, idx0 = gy.copy(), idx.copy()
    expected = fc.reference.max_pool2d_backward(gy, idx, shape)
    gx = fc.max_pool2d_backward(gy, idx, shape, backend=kernel.backend)
    assert gx.shape == shape and gx.dtype == np.dtype(dtype) and gx.flags.c_contiguous
    # overlapping windows sum several gradients into one input: the order may differ
    np.testing.assert_allclose(gx, expected, rtol=kernel.rtol[dtype], atol=kernel.rtol[dtype] * 10)
    np.testing.assert_array_equal(gy, gy0)
    np.testing.assert_array_equal(idx, idx0)
    # what was routed adds up to what came in, plane by plane
    np.testing.assert_allclose(gx.sum(axis=(2, 3)), gy.astype(np.float64).sum(axis=(2, 3)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [-1, 64, 10**12])
@pytest.mark.parametrize("kernel", BACKWARD)
def test_backward_refuses_indices_outside_the_plane(kernel, bad):
    gy = np.ones((1, 2, 4, 4), np.float32)
    idx = np.zeros((1, 2, 4, 4), np.int64)
    idx[0, 1, 3, 2] = bad
    with pytest.raises(ValueError, match=r"indices must lie in \[0, H\*W\) = \[0, 64\)"):
        fc.max_pool2d_backward(gy, idx, (1, 2, 8, 8), backend=kernel.backend)
    assert kernel.refusal(PoolBackwardSpec.from_args(gy, idx, (1, 2, 8, 8))) is None


def test_backward_accepts_non_contiguous_gradients(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y, idx = fc.max_pool2d(x, 2)
    big = np.zeros((2, 3, 4, 8), np.float32)
    big[..., ::2] = rng.standard_normal(y.shape)
    gy = big[..., ::2]
    for kernel in fc.kernels("maxpool2d.bwd"):
        np.testing.assert_allclose(fc.max_pool2d_backward(gy, idx, x.shape, backend=kernel.backend),
                                   fc.reference.max_pool2d_backward(np.ascontiguousarray(gy), idx, x.shape))
