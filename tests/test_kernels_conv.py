"""Every registered conv2d kernel against the reference: fixed edge cases and a property space.

Cases follow XNNPACK's and NNPACK's testers: single and partial tiles, prime sizes, strides,
dilation, groups (depthwise too), 1x1 and 7x7 filters, batch 1 and 3, and non-contiguous inputs.
Tolerances are per kernel and dtype, from the registry.  A kernel that refuses a case must raise
the documented ValueError naming itself, never return something wrong.
"""
import itertools
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv import threads
from fastconv.c import _lib as c_lib
from fastconv.c import phases
from fastconv.spec import ConvSpec

from conftest import kernel_params, random_array, rel_err

FORWARD = kernel_params("conv2d.fwd")
DTYPES = ["float32", "float64"]

# (input NCHW, weight OIHW, stride, padding, dilation, groups)
CASES = {
    "1x1-single-pixel": ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1, 1),
    "3x3-same": ((1, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1, 1),
    "primes": ((3, 7, 13, 11), (5, 7, 3, 3), 1, 1, 1, 1),
    "partial-tiles": ((1, 5, 17, 37), (13, 5, 3, 3), 1, 0, 1, 1),
    "stride2-7x7-stem": ((2, 3, 23, 19), (8, 3, 7, 7), 2, 3, 1, 1),
    "stride3-asym": ((1, 4, 16, 15), (6, 4, 2, 5), (3, 2), (1, 2), 1, 1),
    "dilation": ((1, 4, 15, 14), (6, 4, 3, 3), 1, 2, (2, 3), 1),
    "groups": ((2, 8, 9, 10), (12, 2, 3, 3), 1, 1, 1, 4),
    "depthwise": ((1, 16, 12, 12), (16, 1, 3, 3), 2, 1, 1, 16),
    # depthwise kernels' own edges (csrc/depthwise.c): a channel multiplier, stride 2 with a
    # dilated 5x5 and uneven padding (four phases of the copy), planes smaller than one vector,
    # a row of many vectors with a partial last one, and padding past the kernel
    "depthwise-multiplier": ((2, 3, 11, 10), (6, 1, 3, 3), 1, 1, 1, 3),
    "depthwise-stride2-dilated-5x5": ((1, 4, 17, 16), (4, 1, 5, 5), 2, (2, 3), (2, 1), 4),
    "depthwise-small-planes": ((3, 20, 7, 7), (20, 1, 3, 3), 1, 1, 1, 20),
    "depthwise-wide-rows": ((1, 2, 5, 75), (4, 1, 3, 3), (1, 3), (0, 2), 1, 2),
    "depthwise-padding-beyond-kernel": ((1, 3, 4, 6), (3, 1, 2, 3), (1, 2), (3, 4), 1, 3),
    # its channel-blocked path (AVX-512 and AVX2, csrc/depthwise.c): a partial last block (37 = 2 x 16 + 5;
    # float64 4 x 8 + 5), a 5x3 dilated tap set with uneven strides, rows of one tile and a short
    # last one; rows of several transposed blocks of columns
    "depthwise-blocks-partial-dilated": ((2, 37, 9, 11), (37, 1, 5, 3), (2, 1), (3, 2), (2, 1), 37),
    "depthwise-blocks-wide-rows": ((1, 24, 6, 40), (24, 1, 3, 3), 1, 1, 1, 24),
    # its whole loads and stores where the plane has room, masked ones at its end: rows narrower
    # than a vector (several rows per load and per store), and rows of a vector and a bit
    "depthwise-blocks-narrow-planes": ((2, 11, 6, 3), (11, 1, 3, 3), 1, 2, 1, 11),
    "depthwise-blocks-row-ends": ((1, 12, 5, 9), (12, 1, 3, 3), (1, 2), 1, 1, 12),
    # first layers (csrc/direct_flat.c): output channels not a multiple of any register tile,
    # planes cut into several runs of rows (each its own copy), strides 2 and 4 (4 and 16 phases)
    "first-layer-3x3-many-rows": ((1, 3, 61, 45), (13, 3, 3, 3), 1, 1, 1, 1),
    "first-layer-7x7-stride2": ((2, 3, 45, 38), (21, 3, 7, 7), 2, 3, 1, 1),
    "first-layer-11x11-stride4": ((1, 3, 51, 47), (11, 3, 11, 11), 4, 2, 1, 1),
    # many channels on small planes: weights over direct_flat's packing bound (256 KB), read in
    # place, a partial last block of channels packed; stride 1 and 2
    "many-channels-small-plane": ((1, 128, 6, 6), (70, 128, 3, 3), 1, 1, 1, 1),
    "many-channels-small-plane-stride2": ((1, 128, 9, 9), (67, 128, 3, 3), 2, 1, 1, 1),
    # direct_flat's channel tiling (256 taps or more): several images per task, the last set short
    # (float64: 6 images as 5 + 1); a plane of several runs of rows; groups with a stride and a
    # dilation; partial blocks of channels (150, 24 and 20 are not multiples of 64 or 32)
    "many-channels-batch-small-plane": ((6, 32, 5, 6), (150, 32, 3, 3), 1, 1, 1, 1),
    "many-channels-tall-plane": ((1, 32, 40, 37), (24, 32, 3, 3), 1, 1, 1, 1),
    "many-channels-groups-dilated": ((2, 64, 23, 9), (40, 32, 3, 3), (2, 1), 2, (2, 1), 2),
    "pointwise": ((2, 32, 7, 7), (19, 32, 1, 1), 1, 0, 1, 1),
    # batch-1 1x1s big enough for two threads, whose output channels im2col splits between them
    # (an uneven split: 67 + 66), without an unfold and with one (stride 2)
    "pointwise-batch1-split": ((1, 50, 9, 9), (133, 50, 1, 1), 1, 0, 1, 1),
    "pointwise-batch1-split-stride2": ((1, 50, 17, 17), (133, 50, 1, 1), 2, 0, 1, 1),
    # batch-1 3x3s: on a 7x7 plane the output channels split, their parts sharing one unfold (a
    # stride-2 one too); on a larger plane the rows split
    "3x3-batch1-7x7-split": ((1, 16, 7, 7), (133, 16, 3, 3), 1, 1, 1, 1),
    "3x3-batch1-7x7-split-stride2": ((1, 8, 14, 14), (200, 8, 3, 3), 2, 1, 1, 1),
    "3x3-batch1-row-split": ((1, 8, 20, 20), (133, 8, 3, 3), 1, 1, 1, 1),
    # batch > 1 on 7x7 and smaller planes with 256 output channels or more per group: im2col folds
    # runs of images into one GEMM, the last run short (3 = 2 + 1, 5 = 3 + 2 on two threads);
    # a 1x1 without an unfold (its grad of input then no longer written by the GEMM), and groups
    # with a stride; the forward and the grad of input alike
    "folded-batch-7x7": ((3, 16, 7, 7), (256, 16, 3, 3), 1, 1, 1, 1),
    "folded-batch-pointwise": ((5, 24, 6, 5), (256, 24, 1, 1), 1, 0, 1, 1),
    "folded-batch-groups-stride2": ((4, 16, 13, 13), (512, 8, 3, 3), 2, 1, 1, 2),
    "same-even-kernel": ((1, 3, 9, 8), (2, 3, 4, 2), 1, "same", (1, 2), 1),
    "valid-wide-kernel": ((1, 2, 5, 30), (3, 2, 5, 29), 1, "valid", 1, 1),
    "kernel-bigger-than-input-with-padding": ((1, 2, 3, 3), (2, 2, 5, 5), 1, 2, 1, 1),
    "many-channels": ((1, 67, 6, 6), (33, 67, 3, 3), 1, 1, 1, 1),
    # Shapes that stress the backward passes written as forward convolutions (fastconv/common/transpose.py):
    # inputs that no tap reaches, padding wider than the kernel (a negative padding after the
    # rewrite), and stride and dilation sharing a factor (half the phases get every tap).
    "stride-beyond-kernel": ((2, 3, 10, 11), (4, 3, 1, 2), (3, 4), 0, 1, 1),
    "padding-beyond-kernel": ((1, 2, 4, 5), (3, 2, 2, 2), 1, (3, 2), 1, 1),
    "stride-and-dilation": ((1, 3, 11, 12), (4, 3, 3, 3), (2, 3), 2, (2, 2), 1),
}


# the activation each edge case also runs with (fused into the kernels' own output loops)
ACTIVATIONS = ["relu", "relu6", ("leaky_relu", 0.25), "leaky_relu"]


def _run_case(kernel, case, dtype, rng, contiguous=True, activation=None):
    xs, ws, stride, padding, dilation, groups = case
    x, w = random_array(rng, xs, dtype), random_array(rng, ws, dtype)
    bias = random_array(rng, (ws[0],), dtype)
    if not contiguous:  # XNNPACK's input_offset: a strided view of a larger array
        big = random_array(rng, (xs[0], xs[1], xs[2] * 2, xs[3] + 3), dtype)
        big[:, :, ::2, 1:-2] = x
        x = big[:, :, ::2, 1:-2]
        assert not x.flags.c_contiguous
    spec = ConvSpec.from_args(x, w, bias, stride, padding, dilation, groups)
    expected = fc.reference.conv2d(x, w, bias, stride, padding, dilation, groups)
    reason = kernel.refusal(spec)
    if reason is not None:
        with pytest.raises(ValueError, match=kernel.name):
            fc.conv2d(x, w, bias, stride, padding, dilation, groups, algo=kernel.algo, backend=kernel.backend)
        return
    x0, w0 = x.copy(), w.copy()
    y = fc.conv2d(x, w, bias, stride, padding, dilation, groups, algo=kernel.algo, backend=kernel.backend)
    assert y.shape == expected.shape and y.dtype == np.dtype(dtype) and y.flags.c_contiguous
    assert rel_err(y, expected) <= kernel.rtol[dtype]
    np.testing.assert_array_equal(x, x0)  # inputs never modified
    np.testing.assert_array_equal(w, w0)
    # no bias is the same as a zero bias
    y0 = fc.conv2d(x, w, None, stride, padding, dilation, groups, algo=kernel.algo, backend=kernel.backend)
    assert rel_err(y0 + bias[None, :, None, None], expected) <= 2 * kernel.rtol[dtype]
    if activation is not None:
        ya = fc.conv2d(x, w, bias, stride, padding, dilation, groups, activation=activation, algo=kernel.algo,
                       backend=kernel.backend)
        # errors relative to the unactivated result's scale: the activation moves no value further
        # (slope at most 1), but relu6 shrinks the largest one that rel_err divides by to 6
        assert np.abs(ya - _activated(expected, activation)).max() <= kernel.rtol[dtype] * np.abs(expected).max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("kernel", FORWARD)
def test_forward_edge_cases(kernel, case, dtype, rng):
    _run_case(kernel, case, dtype, rng, activation=ACTIVATIONS[list(CASES.values()).index(case) % len(ACTIVATIONS)])


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("kernel", FORWARD)
def test_forward_fused_activation_is_the_activation_of_its_output(kernel, case, rng):
    """Each kernel applies the activation in its own output loops (the paths the cases reach: tiles,
    tasks, folds, splits): exactly the activation of its unfused output, bit for bit.  A leaky slope
    of 0.25 shows an output activated twice (0.0625) or never."""
    xs, ws, stride, padding, dilation, groups = case
    x, w = random_array(rng, xs, "float32"), random_array(rng, ws, "float32")
    bias = random_array(rng, (ws[0],), "float32")
    spec = ConvSpec.from_args(x, w, bias, stride, padding, dilation, groups)
    if kernel.refusal(spec) is not None:
        return
    act = ("leaky_relu", 0.25)
    plain = kernel.run(spec, x, w, bias)
    np.testing.assert_array_equal(kernel.run(spec, x, w, bias, act=act), fc.reference.activate(plain.copy(), act))


@pytest.mark.parametrize("case", [CASES["primes"], CASES["stride2-7x7-stem"], CASES["groups"]],
                         ids=["primes", "stride2", "groups"])
@pytest.mark.parametrize("kernel", FORWARD)
def test_forward_non_contiguous_input(kernel, case, rng):
    _run_case(kernel, case, "float32", rng, contiguous=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", [k for k in FORWARD if k.values[0].algo in ("direct_flat", "depthwise")])
def test_forward_stride2_rows_of_every_width(kernel, dtype, rng):
    """The flat kernels' stride-2 phase copy (csrc/fc_flat_copy.h: copy_even's whole vectors, its
    masked tail, and the last row of the last plane ending at the array's end) on rows 1..20 wide,
    against the reference, by kernel.run itself."""
    k, c = kernel, 3
    for width, height, padding, dilation in itertools.product(range(1, 21), (1, 6), (0, 1, 2), (1, 2)):
        x = random_array(rng, (2, c, height, width), dtype)
        w = random_array(rng, (c, 1 if k.family == "depthwise" else c, 3, 3), dtype)
        groups = c if k.family == "depthwise" else 1
        try:
            spec = ConvSpec.from_args(x, w, stride=2, padding=padding, dilation=dilation, groups=groups)
        except ValueError:  # no output pixel
            continue
        if k.why_not(spec) is not None:
            continue
        expected = fc.reference.conv2d(x, w, None, 2, padding, dilation, groups)
        assert rel_err(k.run(spec, x, w, None), expected) <= k.rtol[dtype], (width, height, padding, dilation)


def valid(problem, dtype) -> bool:
    """Whether a drawn problem is a valid convolution (its output at least 1x1)."""
    xs, ws, stride, padding, dilation, groups = problem
    try:
        ConvSpec.from_shapes(xs, ws, stride, padding, dilation, groups, dtype)
    except ValueError:
        return False
    return True


@st.composite
def conv_problems(draw):
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 6)), groups * draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.one_of(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.just("valid"),
                             st.just("same")))
    if padding == "same":
        stride = (1, 1)
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * 3), 24))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * 3), 24))
    n = draw(st.integers(1, 3))
    return (n, cin, h, w), (cout, cin // groups, kh, kw), stride, padding, dilation, groups


@st.composite
def depthwise_problems(draw):
    """groups = in_channels, with a channel multiplier: the depthwise kernels' space (the other
    kernels serve it too, as grouped convolutions)."""
    (n, cin, h, w), (_, _, kh, kw), stride, padding, dilation, _ = draw(conv_problems())
    cin, mult = draw(st.integers(1, 8)), draw(st.integers(1, 3))
    return (n, cin, h, w), (cin * mult, 1, kh, kw), stride, padding, dilation, cin


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", FORWARD)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=depthwise_problems(), seed=st.integers(0, 2**32 - 1))
def test_forward_depthwise_property(kernel, dtype, problem, seed):
    if valid(problem, dtype):  # else the output is smaller than 1: the spec tests cover that refusal
        _run_case(kernel, problem, dtype, np.random.default_rng(seed))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", FORWARD)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=conv_problems(), seed=st.integers(0, 2**32 - 1))
def test_forward_property(kernel, dtype, problem, seed):
    if valid(problem, dtype):  # else the output is smaller than 1: the spec tests cover that refusal
        _run_case(kernel, problem, dtype, np.random.default_rng(seed))


def test_every_forward_kernel_is_reachable_by_name():
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    for kernel in fc.kernels("conv2d.fwd"):
        if kernel.refusal(ConvSpec.from_args(x, w)) is None:
            np.testing.assert_array_equal(fc.conv2d(x, w, algo=kernel.algo, backend=kernel.backend), 9.0)


# ----------------------------------------------------------------------------- phase profiles

@pytest.mark.skipif(c_lib.lib is None, reason="C extension not built")
@pytest.mark.parametrize("problem", [((2, 16, 20, 18), 24), ((3, 16, 7, 7), 256)], ids=["plane", "folded-batch"])
@pytest.mark.parametrize("name", sorted(phases.FORWARD))
def test_a_profiled_call_computes_the_same_and_accounts_for_its_threads_time(name, problem):
    """fastconv.c.phases: profiling changes no output bit, every phase the kernel has is counted
    (a 3x3 layer unfolds, packs or transforms its input; every kernel multiplies), and the threads'
    phase seconds fit within the call's wall time on its threads.  On a 7x7 batch im2col folds images."""
    rng = np.random.default_rng(11)
    (n, c, h, w_), o = problem
    x = rng.standard_normal((n, c, h, w_), dtype=np.float32)
    w = rng.standard_normal((o, c, 3, 3), dtype=np.float32)
    b = rng.standard_normal(o, dtype=np.float32)
    spec = ConvSpec.from_args(x, w, b, padding=1)
    run = phases.FORWARD[name]
    plain = run(spec, x, w, b)
    acc = np.zeros(len(phases.PHASES))
    t0 = time.perf_counter()
    profiled = run(spec, x, w, b, profile=acc)
    wall = time.perf_counter() - t0
    assert np.array_equal(plain, profiled)
    got = dict(zip(phases.PHASES, acc))
    assert got["input"] > 0 and got["gemm"] > 0 and min(acc) >= 0, got
    assert acc.sum() <= wall * threads.get_num_threads() * 1.05 + 1e-4, (got, wall)
    out = phases.profile(name, spec, x, w, b, seconds=0.01)
    assert out["wall_s"] > 0 and set(out["phases"]) == set(phases.PHASES)


def test_the_gemm_phase_counts_winograds_own_multiply_adds():
    spec = ConvSpec.from_args(np.zeros((1, 8, 10, 10), np.float32), np.zeros((4, 8, 3, 3), np.float32), padding=1)
    assert phases.gemm_flops(spec) == 2 * 4 * 100 * 8 * 9        # direct: every tap of every pixel
    assert phases.gemm_flops(spec, 2) == 2 * 16 * 25 * 4 * 8    # F(2x2): 16 positions, 5x5 tiles
    assert phases.gemm_flops(spec, 4) == 2 * 36 * 9 * 4 * 8     # F(4x4): 36 positions, 3x3 tiles (one partial)


def _activated(y, activation):
    """activation applied by hand to a reference result (torch's definitions)."""
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "relu6":
        return np.minimum(np.maximum(y, 0), 6)
    slope = activation[1] if isinstance(activation, tuple) else 0.01
    return np.where(y < 0, y * slope, y)


@pytest.mark.parametrize("activation", ["relu", "relu6", "leaky_relu", ("leaky_relu", 0.25)], ids=str)
@pytest.mark.parametrize("kernel", FORWARD)
def test_forward_activation(kernel, activation, rng):
    # values spread to +-8, so relu6 clips above too; a NaN input stays NaN through the activation
    x = 3 * random_array(rng, (2, 4, 9, 8), "float32")
    w = random_array(rng, (6, 4, 3, 3), "float32")
    bias = random_array(rng, (6,), "float32")
    if kernel.refusal(ConvSpec.from_args(x, w, bias, 1, 1)) is not None:  # depthwise: a refusal, not a result
        with pytest.raises(ValueError, match=kernel.name):
            fc.conv2d(x, w, bias, 1, 1, activation=activation, algo=kernel.algo, backend=kernel.backend)
        return
    raw = fc.reference.conv2d(x, w, bias, 1, 1)
    assert (raw > 6).any() and (raw < 0).any()  # every branch of every activation is exercised
    y = fc.conv2d(x, w, bias, 1, 1, activation=activation, algo=kernel.algo, backend=kernel.backend)
    assert rel_err(y, _activated(raw, activation)) <= kernel.rtol["float32"]


def test_forward_activation_keeps_nan_and_checks_its_argument(rng):
    x = random_array(rng, (1, 2, 5, 5), "float64")
    x[0, 0, 2, 2] = np.nan
    w = random_array(rng, (3, 2, 3, 3), "float64")
    for activation in ("relu", "relu6", "leaky_relu"):
        y = fc.conv2d(x, w, padding=1, activation=activation)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(fc.reference.conv2d(x, w, padding=1)))
    for bad in ("gelu", ("leaky_relu", float("nan")), ("leaky_relu", "0.1"), ("relu", 0.1), 1):
        with pytest.raises(ValueError, match="conv2d: activation="):
            fc.conv2d(x, w, activation=bad)
