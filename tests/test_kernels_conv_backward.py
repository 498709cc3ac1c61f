"""Every registered conv2d backward kernel (input gradient and weight gradient are separate ops)
against the reference, over the forward tests' edge cases and property space, plus float64
finite-difference checks through the public conv2d_backward."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv import api, registry
from fastconv.spec import ConvSpec

from conftest import assert_matches_finite_differences, kernel_params, random_array, rel_err
from test_kernels_conv import CASES, DTYPES, conv_problems, depthwise_problems, valid

BACKWARD = kernel_params("conv2d.bwd_data") + kernel_params("conv2d.bwd_weight")


def _check(kernel, case, dtype, rng):
    xs, ws, stride, padding, dilation, groups = case
    x, w = random_array(rng, xs, dtype), random_array(rng, ws, dtype)
    spec = ConvSpec.from_args(x, w, None, stride, padding, dilation, groups)
    gy = random_array(rng, spec.output_shape, dtype)
    data = {"x": x, "w": w, "grad_y": gy}
    args = [data[n] for n in registry.OPS[kernel.op].args]  # (grad_y, w) or (grad_y, x)
    expected, run = registry.kernels(kernel.op)[-1].run(spec, *args), (lambda: kernel.run(spec, *args))
    if kernel.refusal(spec) is not None:  # the public call, this kernel named, says why
        with pytest.raises(ValueError, match=kernel.name):
            api.op_call(kernel.op, spec, data, kernel)()
        return
    copies = [a.copy() for a in (x, w, gy)]
    got = run()
    assert got.shape == expected.shape and got.dtype == np.dtype(dtype) and got.flags.c_contiguous
    if rel_err(got, expected) > kernel.rtol[dtype]:
        # A sum is accurate relative to its terms' magnitudes, not to its value: where every entry
        # of a small gradient cancels (a 5-tap weight gradient whose one nonzero entry sums 51
        # terms of order 1 to 0.004, where every kernel, im2col's OpenBLAS too, measured 2-7e-5),
        # the scale is the same problem on the magnitudes.
        magnitudes = registry.kernels(kernel.op)[-1].run(spec, *map(np.abs, args))
        assert np.max(np.abs(got.astype(np.float64) - expected)) <= kernel.rtol[dtype] * np.max(magnitudes)
    for a, c in zip((x, w, gy), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("kernel", BACKWARD)
def test_backward_edge_cases(kernel, case, dtype, rng):
    _check(kernel, case, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", BACKWARD)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=conv_problems(), seed=st.integers(0, 2**32 - 1))
def test_backward_property(kernel, dtype, problem, seed):
    if valid(problem, dtype):
        _check(kernel, problem, dtype, np.random.default_rng(seed))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", BACKWARD)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=depthwise_problems(), seed=st.integers(0, 2**32 - 1))
def test_backward_depthwise_property(kernel, dtype, problem, seed):
    if valid(problem, dtype):
        _check(kernel, problem, dtype, np.random.default_rng(seed))


# The depthwise grad of input splits gx by stride phase and reads one window of each gy plane
# (common/depthwise.py's data_window): phases no tap reaches (a stride past the kernel, padding
# that moves every tap off one phase), a stride past the plane, one row or column, odd widths at
# stride 2 (the interleaved column phases), a window cropped by a padding past the kernel, and
# the multiplier's planes summed.
DEPTHWISE_DATA_PHASES = {
    "stride3-1x1": ((1, 3, 10, 11), (3, 1, 1, 1), 3, 0, 1),
    "stride3-2x2-pad1": ((2, 2, 9, 8), (4, 1, 2, 2), 3, 1, 1),
    "stride-past-plane": ((1, 2, 3, 2), (2, 1, 3, 3), (5, 4), (2, 1), 1),
    "one-column-stride2": ((1, 2, 9, 1), (2, 1, 3, 3), 2, 1, 1),
    "one-row-stride2": ((1, 2, 1, 12), (6, 1, 3, 3), 2, 1, 1),
    "odd-width-stride2": ((1, 5, 13, 13), (5, 1, 3, 3), 2, 1, 1),
    "stride2-dilation3-5x5": ((1, 3, 21, 19), (9, 1, 5, 5), 2, (4, 2), 3),
    "pad-past-kernel-stride2": ((1, 2, 6, 7), (2, 1, 3, 2), 2, (5, 4), 1),
    "stride-2x3-7x7": ((2, 3, 23, 29), (3, 1, 7, 7), (2, 3), 3, 1),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DEPTHWISE_DATA_PHASES.values(), ids=DEPTHWISE_DATA_PHASES.keys())
@pytest.mark.parametrize("name", ["c.depthwise", "numba.depthwise"])
def test_depthwise_grad_input_phases(name, case, dtype, rng):
    xs, ws, stride, padding, dilation = case
    kernel = registry.kernel("conv2d.bwd_data", name)
    spec = ConvSpec.from_args(np.empty(xs, dtype), np.empty(ws, dtype), None, stride, padding, dilation, xs[1])
    assert kernel.refusal(spec) is None
    _check(kernel, (*case, xs[1]), dtype, rng)


@pytest.mark.parametrize("data_kernel", kernel_params("conv2d.bwd_data"))
@pytest.mark.parametrize("weight_kernel", kernel_params("conv2d.bwd_weight"))
@pytest.mark.parametrize("args", [dict(), dict(stride=2, padding=1), dict(padding="same", dilation=2),
                                  dict(stride=(2, 1), padding=(0, 2), groups=2)], ids=str)
def test_gradients_match_finite_differences(data_kernel, weight_kernel, args):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 7, 8))
    w = rng.standard_normal((6, 4 // args.get("groups", 1), 3, 3))
    b = rng.standard_normal(6)
    gy = rng.standard_normal(fc.reference.conv2d(x, w, b, **args).shape)
    loss = lambda: float(np.sum(fc.reference.conv2d(x, w, b, **args) * gy))  # noqa: E731
    spec = ConvSpec.from_args(x, w, b, **args)
    refused = [k for k in (data_kernel, weight_kernel) if k.refusal(spec)]
    if refused:  # e.g. Winograd on a strided layer: the documented error, naming the kernel
        with pytest.raises(ValueError, match=refused[0].name):
            fc.conv2d_backward(gy, x, w, **args, algo=data_kernel.algo, weight_algo=weight_kernel.algo)
        return
    grads = fc.conv2d_backward(gy, x, w, **args, algo=data_kernel.algo, weight_algo=weight_kernel.algo)
    assert_matches_finite_differences(loss, grads, (x, w, b), rng)
