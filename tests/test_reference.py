"""The oracle is checked too: against cases worked by hand, finite differences, and (when it is
installed) PyTorch itself."""
import numpy as np
import pytest

import fastconv.reference as ref

from conftest import assert_matches_finite_differences

# The lecture's curve detector: a 7x7 filter with 30s along a curve.  Over a receptive field that
# holds the curve (four pixels of 50 and one of 20 under the filter's 30s) the response is
# 4*50*30 + 20*30 = 6600; over a region without the curve it is 0.
CURVE = [(1, 5), (2, 4), (3, 3), (4, 3), (5, 3)]


def test_curve_detector_responds_6600_to_the_curve_and_0_elsewhere():
    w = np.zeros((1, 1, 7, 7))
    for r, c in CURVE:
        w[0, 0, r, c] = 30
    with_curve = np.zeros((1, 1, 7, 7))
    for (r, c), v in zip(CURVE, [50, 50, 50, 20, 50]):
        with_curve[0, 0, r, c] = v
    without = np.zeros((1, 1, 7, 7))
    without[0, 0, 0, :3] = 50        # a stroke far from the curve
    without[0, 0, 6, 4:] = 20
    assert ref.conv2d(with_curve, w)[0, 0, 0, 0] == 6600
    assert ref.conv2d(without, w)[0, 0, 0, 0] == 0
    # Both fields side by side in one image: the filter slides and finds the curve.
    image = np.concatenate([without, with_curve], axis=3)
    y = ref.conv2d(image, w)
    assert y.shape == (1, 1, 1, 8) and y[0, 0, 0, 0] == 0 and y[0, 0, 0, 7] == 6600


def test_small_convolutions_by_hand():
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)          # 1 2 3 / 4 5 6 / 7 8 9
    ones = np.ones((1, 1, 2, 2))
    np.testing.assert_array_equal(ref.conv2d(x, ones)[0, 0], [[12, 16], [24, 28]])
    # padding 1, stride 2: windows at the corners see one zero row and column each
    np.testing.assert_array_equal(ref.conv2d(x, ones, stride=2, padding=1)[0, 0], [[1, 5], [11, 28]])
    # dilation 2 on a 3x3 input: one window holding the four corners
    np.testing.assert_array_equal(ref.conv2d(x, ones, dilation=2)[0, 0], [[1 + 3 + 7 + 9]])
    # cross-correlation, not convolution: the kernel is not flipped
    k = np.array([[[[1.0, 0], [0, 0]]]])
    np.testing.assert_array_equal(ref.conv2d(x, k)[0, 0], [[1, 2], [4, 5]])
    # bias, and groups: each half of the channels sees only its own filter
    x2 = np.concatenate([x, 10 * x], axis=1)
    w2 = np.ones((2, 1, 3, 3))
    np.testing.assert_array_equal(ref.conv2d(x2, w2, bias=np.array([1.0, -1.0]), groups=2)[0, :, 0, 0], [46, 449])


def test_backward_by_hand():
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    w = np.array([[[[1.0, 2], [3, 4]]]])
    gy = np.ones((1, 1, 2, 2))
    gx, gw, gb = ref.conv2d_backward(gy, x, w)
    # d(sum y)/dx counts, for each pixel, the weights that touched it
    np.testing.assert_array_equal(gx[0, 0], [[1, 3, 2], [4, 10, 6], [3, 7, 4]])
    # d(sum y)/dw[i, j] is the sum of the input under tap (i, j) over all windows
    np.testing.assert_array_equal(gw[0, 0], [[12, 16], [24, 28]])
    np.testing.assert_array_equal(gb, [4])
    assert ref.conv2d_backward(gy, x, w, bias=False)[2] is None


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 0, 1, 1), (2, 1, 1, 1), ((1, 2), (2, 0), (2, 1), 2), (1, "same", 2, 1), (3, 2, 1, 4)])
def test_backward_matches_finite_differences(stride, padding, dilation, groups):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((4, 4 // groups, 3, 2))
    b = rng.standard_normal(4)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = rng.standard_normal(ref.conv2d(x, w, b, **args).shape)
    loss = lambda: float(np.sum(ref.conv2d(x, w, b, **args) * gy))  # noqa: E731
    assert_matches_finite_differences(loss, ref.conv2d_backward(gy, x, w, **args), (x, w, b), rng, samples=12)


def test_max_pool_by_hand_ties_nan_and_padding():
    x = np.array([[[[1.0, 3, 3],
                    [2, 0, np.nan],
                    [5, 5, np.nan]]]])
    y, idx = ref.max_pool2d(x, 2, stride=1)
    # window (0,0): max 3 first seen at offset 1; window (0,1) holds a NaN at offset 5;
    # window (1,1) holds two NaNs: the *last* one (offset 8) wins, as in PyTorch's CPU kernel.
    np.testing.assert_array_equal(idx[0, 0], [[1, 5], [6, 8]])
    np.testing.assert_array_equal(y[0, 0], [[3, np.nan], [5, np.nan]])
    # -inf padding is never chosen, even when every real value is -inf
    neg = np.full((1, 1, 2, 2), -np.inf)
    y, idx = ref.max_pool2d(neg, 2, stride=1, padding=1)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])
    # a window whose taps all fall in the padding (dilation steps over the only column) keeps
    # PyTorch's initial index, its start stepped by the dilation: -1 + 2 = 1
    y, idx = ref.max_pool2d(np.ones((1, 1, 3, 1)), (3, 2), stride=1, padding=1, dilation=(1, 2))
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(idx[0, 0, :, 0], [1, 1, 2])
    # backward: overlapping windows accumulate onto a shared argmax
    x = np.array([[[[0.0, 9, 0], [0, 0, 0], [0, 0, 0]]]])
    y, idx = ref.max_pool2d(x, 2, stride=1)
    gx = ref.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert gx[0, 0, 0, 1] == 2 and gx.sum() == 4


def test_ceil_mode_drops_a_window_that_starts_in_the_padding():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    y, idx = ref.max_pool2d(x, 2, stride=2, padding=1, ceil_mode=True)
    assert y.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(y[0, 0], [[0, 2, 4], [10, 12, 14], [20, 22, 24]])


def test_reference_keeps_dtype_and_never_modifies_inputs():
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    x0, w0 = x.copy(), w.copy()
    y = ref.conv2d(x, w, padding=1)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


# ----------------------------------------------------------------------------- against torch

def _torch_cases(rng, count):
    for _ in range(count):
        g = int(rng.choice([1, 2, 3]))
        args = dict(stride=tuple(map(int, rng.integers(1, 4, 2))), dilation=tuple(map(int, rng.integers(1, 3, 2))),
                    padding=(int(rng.integers(0, 3)), int(rng.integers(0, 3))), groups=g)
        if rng.random() < 0.2:
            args.update(stride=(1, 1), padding="same")
        yield ((int(rng.integers(1, 3)), g * int(rng.integers(1, 4)), int(rng.integers(5, 12)), int(rng.integers(5, 12))),
               (g * int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 5))), args)


def test_conv_matches_torch_forward_and_backward():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    checked = 0
    for xs, (o, cpg, kh, kw), args in _torch_cases(rng, 120):
        x = rng.standard_normal(xs)
        w = rng.standard_normal((o, xs[1] // args["groups"], kh, kw))
        b = rng.standard_normal(o)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        try:
            ty = F.conv2d(tx, tw, tb, **args)
        except RuntimeError:  # torch refuses it too (output too small): the spec test covers ours
            continue
        np.testing.assert_allclose(ref.conv2d(x, w, b, **args), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        gy = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(gy))
        for ours, theirs in zip(ref.conv2d_backward(gy, x, w, **args), (tx.grad, tw.grad, tb.grad)):
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-10)
        checked += 1
    assert checked > 60


def test_max_pool_matches_torch_including_ties_nan_inf_and_ceil_mode():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    checked = 0
    for t in range(300):
        k = tuple(map(int, rng.integers(1, 5, 2)))
        args = dict(kernel_size=k, stride=tuple(map(int, rng.integers(1, 4, 2))),
                    padding=tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k),
                    dilation=tuple(map(int, rng.integers(1, 3, 2))), ceil_mode=bool(t % 2))
        x = rng.integers(-3, 3, (2, 2, *map(int, rng.integers(4, 12, 2)))).astype(np.float64)  # many ties
        x[rng.random(x.shape) < (0.1 if t % 3 == 0 else 0)] = np.nan
        x[rng.random(x.shape) < (0.3 if t % 5 == 0 else 0)] = -np.inf
        try:
            ty, ti = F.max_pool2d(torch.tensor(x), return_indices=True, **args)
        except RuntimeError:
            continue
        y, idx = ref.max_pool2d(x, **args)
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(idx, ti.numpy())
        gy = rng.standard_normal(y.shape)
        tx = torch.tensor(x, requires_grad=True)
        F.max_pool2d(tx, **args).backward(torch.tensor(gy))
        np.testing.assert_allclose(ref.max_pool2d_backward(gy, idx, x.shape), tx.grad.numpy(), rtol=1e-12)
        checked += 1
    assert checked > 150
