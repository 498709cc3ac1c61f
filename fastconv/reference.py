"""The NumPy oracle: readable, exact, slow.

Semantics are those of ``torch.nn.functional.conv2d`` / ``max_pool2d`` (NCHW input, OIHW weight).
Everything is computed in float64 whatever the input dtype (NNPACK's reference does the same) and
cast once at the end, so a float32 kernel is measured against an answer more accurate than itself.
Every kernel in the registry is tested against these functions, by the one measure of agreement
with them, ``rel_error`` (the tests, the tuner and the benchmarks all use it).
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .backend import Backend
from .spec import ConvSpec, PoolBackwardSpec, PoolSpec, index_error

# The reference as a backend (its kernels serve only when no other kernel can: fastconv/registry.py)
BACKEND = Backend("numpy", None, lambda: {"numpy": np.__version__}, lambda: f"NumPy reference: numpy {np.__version__}",
                  lambda: "numpy's")

# ----------------------------------------------------------------------------- conv


def _padded(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    top, bottom, left, right = spec.padding
    return np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))


def _windows(a: np.ndarray, kernel, stride, dilation, out_hw) -> np.ndarray:
    """View (N, C, OH, OW, kH, kW) of the receptive field of every output of a padded input."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    win = sliding_window_view(a, span, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    return win[:, :, : out_hw[0], : out_hw[1]]


def _grouped_windows(spec: ConvSpec, x: np.ndarray) -> np.ndarray:
    """Receptive fields as (N, G, C/G, OH, OW, kH, kW), in float64."""
    win = _windows(_padded(x, spec), (spec.kh, spec.kw), spec.stride, spec.dilation, (spec.out_h, spec.out_w))
    return win.reshape(spec.n, spec.groups, spec.c_in // spec.groups, spec.out_h, spec.out_w, spec.kh, spec.kw)


def _grouped_weight(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """Weights as (G, O/G, C/G, kH, kW), in float64."""
    g = spec.groups
    return w.astype(np.float64).reshape(g, spec.c_out // g, spec.c_in // g, spec.kh, spec.kw)


def activate(y: np.ndarray, act) -> np.ndarray:
    """act (activation_arg's (name, slope), or None) applied to y in place, as torch's relu, relu6
    and leaky_relu: NaN stays NaN (maximum and clip propagate it; leaky_relu scales only y < 0),
    the slope in y's dtype."""
    if act is None:
        return y
    name, slope = act
    if name == "relu":
        np.maximum(y, 0, out=y)
    elif name == "relu6":
        np.clip(y, 0, 6, out=y)
    else:
        np.multiply(y, y.dtype.type(slope), out=y, where=y < 0)
    return y


def _conv2d(spec: ConvSpec, x, w, bias=None, *, act=None) -> np.ndarray:
    y = np.einsum("ngchwij,gocij->ngohw", _grouped_windows(spec, x), _grouped_weight(spec, w), optimize=True)
    y = y.reshape(spec.output_shape)
    if bias is not None:
        y += bias.astype(np.float64)[None, :, None, None]
    return activate(np.ascontiguousarray(y, dtype=spec.dtype), act)


def _conv2d_grad_input(spec: ConvSpec, grad_y, w) -> np.ndarray:
    """dX: every tap (i, j) scatters W[:, :, i, j]^T dY back onto the input positions it read."""
    g, (sh, sw), (dh, dw) = spec.groups, spec.stride, spec.dilation
    oh, ow = spec.out_h, spec.out_w
    gy = grad_y.astype(np.float64).reshape(spec.n, g, spec.c_out // g, oh, ow)
    wg = _grouped_weight(spec, w)
    top, bottom, left, right = spec.padding
    grad_xp = np.zeros((spec.n, spec.c_in, spec.h + top + bottom, spec.w + left + right))
    for i in range(spec.kh):
        for j in range(spec.kw):
            contrib = np.einsum("ngohw,goc->ngchw", gy, wg[..., i, j], optimize=True)
            grad_xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw] += \
                contrib.reshape(spec.n, spec.c_in, oh, ow)
    return np.ascontiguousarray(grad_xp[:, :, top: top + spec.h, left: left + spec.w], dtype=spec.dtype)


def _conv2d_grad_weight(spec: ConvSpec, grad_y, x) -> np.ndarray:
    """dW[g, o, c, i, j] = sum over images and outputs of dY * (the input tap under (i, j))."""
    g = spec.groups
    gy = grad_y.astype(np.float64).reshape(spec.n, g, spec.c_out // g, spec.out_h, spec.out_w)
    grad_w = np.einsum("ngohw,ngchwij->gocij", gy, _grouped_windows(spec, x), optimize=True)
    return np.ascontiguousarray(grad_w.reshape(spec.weight_shape), dtype=spec.dtype)


def _conv2d_grad_bias(spec: ConvSpec, grad_y) -> np.ndarray:
    return grad_y.astype(np.float64).sum(axis=(0, 2, 3)).astype(spec.dtype)


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """torch.nn.functional.conv2d on NumPy arrays."""
    spec = ConvSpec.from_args(x, w, bias, stride, padding, dilation, groups)
    return _conv2d(spec, x, w, bias)


def conv2d_backward(grad_y, x, w, stride=1, padding=0, dilation=1, groups=1, *, bias=True):
    """(grad_x, grad_w, grad_bias) of conv2d; grad_bias is None when bias=False."""
    spec = ConvSpec.from_args(x, w, None, stride, padding, dilation, groups, op="conv2d_backward")
    spec.check_grad_output(grad_y)
    grad_b = _conv2d_grad_bias(spec, grad_y) if bias else None
    return _conv2d_grad_input(spec, grad_y, w), _conv2d_grad_weight(spec, grad_y, x), grad_b


# ----------------------------------------------------------------------------- max-pool


# The most window taps of one (H, W) plane the pool oracle materializes: windows of 2^30 taps (all
# but a few in padding) it cannot hold, while the batch and the channels only scale what it holds.
ORACLE_TAPS = 1 << 27


def _max_pool2d(spec: PoolSpec, x):
    """Values and PyTorch's int64 flat (H, W) argmax indices (None when spec.indices is False:
    the oracle still finds them, the kernels skip them)."""
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = spec.kernel, spec.padding, spec.stride, spec.dilation
    out_hw = (spec.out_h, spec.out_w)
    if spec.out_h * spec.out_w * kh * kw > ORACLE_TAPS:
        raise ValueError(f"reference.max_pool2d: kernel_size={spec.kernel} is too large for the oracle, which "
                         f"holds every tap of every window ({kh * kw} taps a window); the kernels serve it")
    # Padding (never chosen: it is masked out below) and enough extra rows/columns for ceil_mode.
    extra_h = max(0, (spec.out_h - 1) * sh + (kh - 1) * dh + 1 - (spec.h + 2 * ph))
    extra_w = max(0, (spec.out_w - 1) * sw + (kw - 1) * dw + 1 - (spec.w + 2 * pw))
    pads = ((0, 0), (0, 0), (ph, ph + extra_h), (pw, pw + extra_w))
    xp = np.pad(x.astype(np.float64), pads, constant_values=-np.inf)
    valid = np.pad(np.ones((1, 1, spec.h, spec.w), bool), pads, constant_values=False)
    win = _windows(xp, spec.kernel, spec.stride, spec.dilation, out_hw).reshape(*spec.output_shape, kh * kw)
    ok = _windows(valid, spec.kernel, spec.stride, spec.dilation, out_hw).reshape(1, 1, *out_hw, kh * kw)

    # Ties: the first in-bounds maximum in scan order (PyTorch replaces only on `val > max`).
    best = np.where(ok, win, -np.inf).max(axis=-1, keepdims=True)
    tap = np.argmax((win == best) & ok, axis=-1)
    # NaN: PyTorch also replaces on isnan(val), so a window with NaN ends on its *last* NaN.
    nan = np.isnan(win) & ok
    has_nan = nan.any(axis=-1)
    last_nan = kh * kw - 1 - np.argmax(nan[..., ::-1], axis=-1)
    tap = np.where(has_nan, last_nan, tap)
    values = np.take_along_axis(win, tap[..., None], axis=-1)[..., 0]

    # Tap (i, j) of output (oh, ow) reads input (oh*sh - ph + i*dh, ow*sw - pw + j*dw).
    i, j = np.divmod(tap, kw)
    start_h, start_w = np.arange(spec.out_h)[:, None] * sh - ph, np.arange(spec.out_w)[None, :] * sw - pw
    indices = ((start_h + i * dh) * spec.w + start_w + j * dw).astype(np.int64)
    # A window with no in-bounds tap at all (padding and dilation can leave one) keeps PyTorch's
    # initial index: its start, stepped by the dilation until it is no longer negative.
    first_h = np.where(start_h < 0, start_h + (-start_h + dh - 1) // dh * dh, start_h)
    first_w = np.where(start_w < 0, start_w + (-start_w + dw - 1) // dw * dw, start_w)
    indices = np.where(ok.any(axis=-1), indices, first_h * spec.w + first_w)
    return np.ascontiguousarray(values, dtype=spec.dtype), np.ascontiguousarray(indices) if spec.indices else None


def _max_pool2d_backward(spec: PoolBackwardSpec, grad_y, indices):
    planes = spec.n * spec.c
    flat_idx = indices.reshape(planes, -1)
    if flat_idx.size and (flat_idx.min() < 0 or flat_idx.max() >= spec.h * spec.w):
        raise index_error("max_pool2d_backward", spec)
    grad_x = np.zeros((planes, spec.h * spec.w))
    rows = np.broadcast_to(np.arange(planes)[:, None], flat_idx.shape)
    np.add.at(grad_x, (rows, flat_idx), grad_y.reshape(planes, -1).astype(np.float64))
    return np.ascontiguousarray(grad_x.reshape(spec.input_shape), dtype=spec.dtype)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=True):
    """torch.nn.functional.max_pool2d on NumPy arrays; returns (y, indices) or y."""
    spec = PoolSpec.from_args(x, kernel_size, stride, padding, dilation, ceil_mode)
    y, idx = _max_pool2d(spec, x)
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_y, indices, input_shape):
    """Route every gradient to its argmax; overlapping windows accumulate."""
    spec = PoolBackwardSpec.from_args(grad_y, indices, input_shape)
    return _max_pool2d_backward(spec, grad_y, indices)


# ----------------------------------------------------------------------------- agreement

ERROR_CHUNK = 1 << 18  # elements per step of rel_error (2 MiB of float64 per temporary)


def rel_error(out, ref, chunk: int = ERROR_CHUNK) -> float:
    """max |out - ref| / max |ref|, the measure of every kernel's registered rtol.

    A list of outputs (a backward pass's gradients) gives the largest error of its pairs; a tuple
    is a max-pool's (values, indices), compared by its values.  Computed in float64 one chunk at a
    time, so no float64 copy of a whole output is made.  NaN and inf follow one rule: a NaN where
    the other array has none (either way) is an infinite error; NaNs in the same places, and equal
    infinities, agree.  Arrays of different shapes are an infinite error; an all-zero ref gives
    the absolute error."""
    if isinstance(out, list):
        return max((rel_error(o, r, chunk) for o, r in zip(out, ref, strict=True)), default=0.0)
    out, ref = (out[0], ref[0]) if isinstance(out, tuple) else (out, ref)
    out, ref = np.asarray(out), np.asarray(ref)
    if out.shape != ref.shape:
        return math.inf
    o, r = np.ravel(out), np.ravel(ref)  # views of C-contiguous arrays (kernels return them)
    err = scale = 0.0
    buf_a, buf_b = np.empty(min(chunk, o.size)), np.empty(min(chunk, o.size))  # float64, reused
    for i in range(0, o.size, chunk):
        a, b = buf_a[: min(chunk, o.size - i)], buf_b[: min(chunk, o.size - i)]
        np.copyto(a, o[i: i + chunk])
        np.copyto(b, r[i: i + chunk])
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        if (nan_a != nan_b).any():
            return math.inf
        with np.errstate(invalid="ignore"):
            np.subtract(a, b, out=a)  # NaN where both are NaN, or where both are the same infinity
        diff = np.abs(a, out=a)
        agree = np.isnan(diff)  # both NaN (checked above), or the same infinity
        if agree.any():
            diff[agree] = 0.0
        err = max(err, float(diff.max()))
        mag = np.abs(b, out=b)
        mag[nan_b] = 0.0
        scale = max(scale, float(mag.max()))
    if math.isinf(err):
        return math.inf
    return err / scale if scale > 0 else err
