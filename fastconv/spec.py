"""The one place where arguments are normalized and checked, and output sizes are computed.

A spec is frozen and hashable: it is what every kernel receives (kernels never re-check
arguments) and what the dispatcher keys its choices on. Every user-facing error message is
written here, naming the argument and its value, e.g.
``conv2d: groups=3 does not divide in_channels=64``.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

FLOAT_DTYPES = ("float32", "float64")
_NATIVE = {name: np.dtype(name) for name in FLOAT_DTYPES}  # numpy's singleton descriptors

# Every hyper-parameter (stride, padding, dilation, kernel_size) is at most this per axis, and every
# size derived from them (padded input, window extent, output) at most INDEX_LIMIT, so that no
# kernel's 64-bit index arithmetic (products of a size and a stride, offsets plus padding) can
# overflow: stride=2**63 does not fit an int64 at all (the C wrappers raised OverflowError and
# numba.im2col wrapped it and returned zeros).  2**31 - 1 is far beyond any real layer.
PARAM_LIMIT = 2**31 - 1
INDEX_LIMIT = 2**62


# ----------------------------------------------------------------------------- helpers

def _pair(op: str, name: str, value, *, minimum: int) -> tuple[int, int]:
    """An int or an (h, w) pair of ints, each in [minimum, PARAM_LIMIT]."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{op}: {name}={value!r} must be an int or a pair of ints")
        pair = value
    else:
        pair = (value, value)
    out = []
    for v in pair:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{op}: {name}={value!r} must be an int or a pair of ints")
        v = operator.index(v)
        if v < minimum:
            what = "positive" if minimum == 1 else "non-negative"
            raise ValueError(f"{op}: {name}={value!r} must be {what}")
        if v > PARAM_LIMIT:
            raise ValueError(f"{op}: {name}={value!r} is too large (at most {PARAM_LIMIT} per axis)")
        out.append(v)
    return out[0], out[1]


def _check_array(op: str, name: str, a, ndim: int | None = None) -> None:
    """A float32/float64 ndarray of ndim dimensions.  Any byte order passes: the api layer hands
    the kernels native, aligned, C-contiguous copies (api.native)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype.name not in FLOAT_DTYPES or a.dtype.fields is not None:
        raise TypeError(f"{op}: {name} has dtype {a.dtype}; expected float32 or float64")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got {a.ndim}-D with shape {a.shape}")


def _same_dtype(op: str, **arrays) -> str:
    dtypes = {name: a.dtype.name for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"{op}: mixed dtypes ({listed}); all arrays must share one float dtype")
    return next(iter(dtypes.values()))


def conv_out_size(size: int, k: int, stride: int, pad_total: int, dilation: int) -> int:
    """O = floor((I + P_total - D(K-1) - 1) / S) + 1  (P_total = both sides)."""
    return (size + pad_total - dilation * (k - 1) - 1) // stride + 1


def pool_out_size(size: int, k: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's pooling size: floor or ceil of the conv formula; with ceil_mode a last window
    that would start inside the right/bottom padding is dropped."""
    span = size + 2 * pad - dilation * (k - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad:
            out -= 1
    else:
        out = span // stride + 1
    return out


def _as_shape(op: str, name: str, shape) -> tuple[int, ...]:
    try:
        if any(isinstance(s, (bool, np.bool_)) for s in shape):
            raise TypeError
        return tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"{op}: {name}={shape!r} must be a sequence of ints") from None


def float_dtype(op: str, dtype) -> str:
    """'float32' or 'float64' for a dtype-like, else a TypeError naming it (None too, which
    np.dtype would silently read as float64)."""
    try:
        name = np.dtype(dtype).name if dtype is not None else None
    except (TypeError, ValueError):
        name = None
    if name not in FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype={dtype} is not supported; expected float32 or float64")
    return name


def _check_output(op: str, shape, what: str) -> None:
    """An output (or gradient) shape whose element count the kernels' indices hold: numpy's own
    refusal ("array is too big") would name no argument."""
    if math.prod(shape) > INDEX_LIMIT // 8:
        raise ValueError(f"{op}: {what} shape {tuple(shape)} is too large ({math.prod(shape)} elements)")


def _check_bool(op: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name}={value!r} must be a bool")
    return bool(value)


def _check_sizes(op: str, shape, what: str, *, batch: bool = True) -> None:
    """No empty dimension but an empty batch (N = 0, as in PyTorch; batch=False: none), and none
    over INDEX_LIMIT."""
    if min(shape[1:] if batch else shape) < 1 or shape[0] < 0:
        raise ValueError(f"{op}: {what} has an empty dimension, shape {shape}")
    if max(shape) > INDEX_LIMIT:
        raise ValueError(f"{op}: {what} shape {shape} is too large (a dimension over {INDEX_LIMIT})")


def _check_extent(op: str, name: str, value, size: int, pad_total: int, k: int, dilation: int) -> None:
    """The padded input and the window extent of one axis fit the kernels' 64-bit arithmetic."""
    if size + pad_total > INDEX_LIMIT or dilation * (k - 1) + 1 > INDEX_LIMIT:
        raise ValueError(f"{op}: {name}={value!r} makes the padded input or the window too large "
                         f"(over {INDEX_LIMIT} along an axis)")


# ----------------------------------------------------------------------------- conv

@dataclass(frozen=True)
class ConvSpec:
    """One conv2d problem: NCHW input, OIHW weight, normalized hyper-parameters."""

    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, bottom, left, right
    dilation: tuple[int, int]
    groups: int
    dtype: str

    # The derived sizes are cached on the instance (a frozen dataclass's __dict__ takes them; eq,
    # hash and JSON see only the fields): every call asks for some of them, a few times, and
    # recomputing them cost ~1 us a call (an adapter call of a small layer is ~10 us).
    @cached_property
    def out_h(self) -> int:
        return conv_out_size(self.h, self.kh, self.stride[0], self.padding[0] + self.padding[1], self.dilation[0])

    @cached_property
    def out_w(self) -> int:
        return conv_out_size(self.w, self.kw, self.stride[1], self.padding[2] + self.padding[3], self.dilation[1])

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c_in, self.h, self.w)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.c_out, self.c_in // self.groups, self.kh, self.kw)

    @cached_property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c_out, self.out_h, self.out_w)

    @cached_property
    def flops(self) -> int:
        """Multiply-adds counted as 2 FLOPs, of the direct algorithm."""
        return 2 * self.n * self.c_out * self.out_h * self.out_w * (self.c_in // self.groups) * self.kh * self.kw

    @classmethod
    def from_shapes(cls, input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                    dtype="float32", *, op: str = "conv2d") -> "ConvSpec":
        """Build and validate a spec from shapes alone (explain, tune, benchmarks)."""
        xs = _as_shape(op, "input shape", input_shape)
        ws = _as_shape(op, "weight shape", weight_shape)
        dtype = float_dtype(op, dtype)
        if len(xs) != 4:
            raise ValueError(f"{op}: x must be 4-D (N, C, H, W), got {len(xs)}-D with shape {xs}")
        if len(ws) != 4:
            raise ValueError(f"{op}: weight must be 4-D (C_out, C_in/groups, kH, kW), got {len(ws)}-D with shape {ws}")
        _check_sizes(op, xs, "x")
        _check_sizes(op, ws, "weight", batch=False)
        n, c_in, h, w = xs
        c_out, c_per_group, kh, kw = ws
        if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)):
            raise TypeError(f"{op}: groups={groups!r} must be an int")
        groups = int(groups)
        if groups < 1:
            raise ValueError(f"{op}: groups={groups} must be positive")
        if c_in % groups:
            raise ValueError(f"{op}: groups={groups} does not divide in_channels={c_in}")
        if c_out % groups:
            raise ValueError(f"{op}: groups={groups} does not divide out_channels={c_out}")
        if c_per_group * groups != c_in:
            raise ValueError(f"{op}: weight shape {ws} expects {c_per_group * groups} input channels "
                             f"(C_in/groups={c_per_group}, groups={groups}), x has in_channels={c_in}")
        stride = _pair(op, "stride", stride, minimum=1)
        dilation = _pair(op, "dilation", dilation, minimum=1)
        if isinstance(padding, str):
            if padding == "valid":
                pads = (0, 0, 0, 0)
            elif padding == "same":
                if stride != (1, 1):
                    raise ValueError(f"{op}: padding='same' requires stride=1, got stride={stride}")
                th, tw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
                pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)  # extra row/col bottom/right
            else:
                raise ValueError(f"{op}: padding={padding!r} must be an int, a pair, 'valid' or 'same'")
        else:
            ph, pw = _pair(op, "padding", padding, minimum=0)
            pads = (ph, ph, pw, pw)
        _check_extent(op, "padding", padding, h, pads[0] + pads[1], kh, dilation[0])
        _check_extent(op, "padding", padding, w, pads[2] + pads[3], kw, dilation[1])
        spec = cls(n, c_in, h, w, c_out, kh, kw, stride, pads, dilation, groups, dtype)
        if spec.out_h < 1 or spec.out_w < 1:
            raise ValueError(
                f"{op}: output size would be {spec.out_h}x{spec.out_w} for input {h}x{w}, kernel {kh}x{kw}, "
                f"stride={stride}, padding={pads[0::2] if pads[0::2] == pads[1::2] else pads}, dilation={dilation}")
        _check_output(op, spec.output_shape, f"the output (padding={padding!r}, dilation={dilation})")
        return spec

    @classmethod
    def from_args(cls, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1,
                  *, op: str = "conv2d") -> "ConvSpec":
        """Validate actual arrays (types, ndim, dtypes, bias) and build the spec."""
        _check_array(op, "x", x, 4)
        _check_array(op, "weight", w, 4)
        if bias is not None:
            _check_array(op, "bias", bias, 1)
        dtype = _same_dtype(op, x=x, weight=w, bias=bias)
        spec = cls.from_shapes(x.shape, w.shape, stride, padding, dilation, groups, dtype, op=op)
        if bias is not None and bias.shape != (spec.c_out,):
            raise ValueError(f"{op}: bias has shape {bias.shape}; expected ({spec.c_out},) = (out_channels,)")
        return spec

    def check_grad_output(self, grad_y, op: str = "conv2d_backward") -> None:
        if type(grad_y) is np.ndarray and grad_y.dtype is _NATIVE.get(self.dtype) and grad_y.shape == self.output_shape:
            return  # the common case, without dtype.name (~2 us a call, every backward)
        _check_array(op, "grad_y", grad_y, 4)
        if grad_y.shape != self.output_shape:
            raise ValueError(f"{op}: grad_y has shape {grad_y.shape}; the forward output is {self.output_shape}")
        if grad_y.dtype.name != self.dtype:
            raise TypeError(f"{op}: mixed dtypes (grad_y={grad_y.dtype}, x={self.dtype})")


# ----------------------------------------------------------------------------- pool

@dataclass(frozen=True)
class PoolSpec:
    """One max_pool2d problem (NCHW)."""

    n: int
    c: int
    h: int
    w: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool
    dtype: str
    indices: bool = True  # the caller wants the argmax indices (return_indices); False: values only

    @property
    def out_h(self) -> int:
        return pool_out_size(self.h, self.kernel[0], self.stride[0], self.padding[0], self.dilation[0], self.ceil_mode)

    @property
    def out_w(self) -> int:
        return pool_out_size(self.w, self.kernel[1], self.stride[1], self.padding[1], self.dilation[1], self.ceil_mode)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.out_h, self.out_w)

    @classmethod
    def from_shape(cls, input_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   dtype="float32", *, indices: bool = True, op: str = "max_pool2d") -> "PoolSpec":
        xs = _as_shape(op, "input shape", input_shape)
        if len(xs) != 4:
            raise ValueError(f"{op}: x must be 4-D (N, C, H, W), got {len(xs)}-D with shape {xs}")
        _check_sizes(op, xs, "x")
        dtype = float_dtype(op, dtype)
        kernel = _pair(op, "kernel_size", kernel_size, minimum=1)
        stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
            else _pair(op, "stride", stride, minimum=1)
        padding = _pair(op, "padding", padding, minimum=0)
        dilation = _pair(op, "dilation", dilation, minimum=1)
        for p, k, axis in zip(padding, kernel, "hw"):
            if p > k // 2:
                raise ValueError(f"{op}: padding={p} (along {axis}) must be at most half of kernel_size={k}")
        ceil_mode = _check_bool(op, "ceil_mode", ceil_mode)
        indices = _check_bool(op, "return_indices", indices)
        for axis in (0, 1):
            _check_extent(op, "kernel_size", kernel_size, xs[2 + axis], 2 * padding[axis], kernel[axis], dilation[axis])
        spec = cls(*xs, kernel, stride, padding, dilation, ceil_mode, dtype, indices)
        if spec.out_h < 1 or spec.out_w < 1:
            raise ValueError(
                f"{op}: output size would be {spec.out_h}x{spec.out_w} for input {xs[2]}x{xs[3]}, "
                f"kernel_size={kernel}, stride={stride}, padding={padding}, dilation={dilation}")
        _check_output(op, spec.output_shape, f"the output (kernel_size={kernel_size!r}, padding={padding!r})")
        return spec

    def backward_spec(self) -> "PoolBackwardSpec":
        """The max_pool2d_backward problem of this pool (gradients and indices of its output)."""
        return PoolBackwardSpec(self.n, self.c, self.h, self.w, self.out_h, self.out_w, self.dtype)

    @classmethod
    def from_args(cls, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                  *, indices: bool = True, op: str = "max_pool2d") -> "PoolSpec":
        _check_array(op, "x", x, 4)
        return cls.from_shape(x.shape, kernel_size, stride, padding, dilation, ceil_mode, x.dtype,
                              indices=indices, op=op)


@dataclass(frozen=True)
class PoolBackwardSpec:
    """max_pool2d_backward: route grad_y (N, C, OH, OW) to input_shape (N, C, H, W) by indices."""

    n: int
    c: int
    h: int
    w: int
    out_h: int
    out_w: int
    dtype: str

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @classmethod
    def from_args(cls, grad_y, indices, input_shape, *, op: str = "max_pool2d_backward") -> "PoolBackwardSpec":
        _check_array(op, "grad_y", grad_y, 4)
        if not isinstance(indices, np.ndarray):
            raise TypeError(f"{op}: indices must be a numpy.ndarray, got {type(indices).__name__}")
        if indices.dtype.name != "int64" or indices.dtype.fields is not None:  # any byte order
            raise TypeError(f"{op}: indices has dtype {indices.dtype}; expected int64")
        if indices.shape != grad_y.shape:
            raise ValueError(f"{op}: indices has shape {indices.shape}; grad_y has shape {grad_y.shape}")
        xs = _as_shape(op, "input_shape", input_shape)
        if len(xs) != 4 or min(xs[1:]) < 1 or xs[0] < 0 or max(xs) > INDEX_LIMIT:
            raise ValueError(f"{op}: input_shape={tuple(input_shape)} must be 4 sizes (N, C, H, W), "
                             "C, H and W positive")
        _check_output(op, xs, "input_shape")
        if xs[:2] != grad_y.shape[:2]:
            raise ValueError(f"{op}: input_shape={xs} and grad_y shape {grad_y.shape} differ in (N, C)")
        return cls(*xs, grad_y.shape[2], grad_y.shape[3], grad_y.dtype.name)


def index_error(op: str, spec: PoolBackwardSpec) -> ValueError:
    """The error every pool-backward kernel raises for an index outside its (H, W) plane."""
    return ValueError(f"{op}: indices must lie in [0, H*W) = [0, {spec.h * spec.w}) for input_shape "
                      f"{spec.input_shape}; got an index outside that range (max_pool2d gives one, as "
                      "PyTorch does, to a window whose taps all fall in padding: it has no argmax to "
                      "route a gradient to)")


# ----------------------------------------------------------------------------- activations

ACTIVATIONS = ("relu", "relu6", "leaky_relu")


def activation_code(act) -> tuple:
    """(code, slope) of activation_arg's form for the kernels: 0 for None, else 1 + its index in
    ACTIVATIONS (csrc/fastconv.h's FC_ACT_RELU, FC_ACT_RELU6, FC_ACT_LEAKY_RELU)."""
    return (0, 0.0) if act is None else (ACTIVATIONS.index(act[0]) + 1, act[1])


def activation_arg(op: str, value):
    """conv2d's ``activation``: None, "relu", "relu6", "leaky_relu" (slope 0.01, torch's default) or
    ("leaky_relu", negative_slope), normalized to None or a (name, slope) pair (slope 0.0 unless
    leaky).  Applied to the convolution's result as torch's functions of the same names do."""
    if value is None:
        return None
    name, slope = value, 0.01
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "leaky_relu":
        name, slope = value
        if isinstance(slope, bool) or not isinstance(slope, (int, float, np.floating, np.integer)) \
                or not math.isfinite(slope):
            raise ValueError(f"{op}: activation={value!r}: the negative slope must be a finite number")
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"{op}: activation={value!r} is not one of None, 'relu', 'relu6', 'leaky_relu' "
                         "or ('leaky_relu', negative_slope)")
    return (name, float(slope) if name == "leaky_relu" else 0.0)


# ----------------------------------------------------------------------------- back to arguments

def conv_hyper(spec: ConvSpec) -> dict:
    """The public functions' (and torch's) hyper-parameters for spec (an asymmetric padding came
    from "same")."""
    t, b, l, r = spec.padding
    return dict(stride=spec.stride, padding=(t, l) if (t, l) == (b, r) else "same", dilation=spec.dilation,
                groups=spec.groups)


def pool_hyper(spec: PoolSpec) -> dict:
    return dict(kernel_size=spec.kernel, stride=spec.stride, padding=spec.padding, dilation=spec.dilation,
                ceil_mode=spec.ceil_mode, return_indices=spec.indices)


# ----------------------------------------------------------------------------- JSON (the tuning cache's form)

_SPEC_TYPES = {t.__name__: t for t in (ConvSpec, PoolSpec, PoolBackwardSpec)}


def spec_to_json(spec) -> dict:
    return {"type": type(spec).__name__, **{f: getattr(spec, f) for f in spec.__dataclass_fields__}}


def spec_from_json(data: dict):
    """The spec a JSON object describes, or None when it cannot be rebuilt."""
    try:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "type"}
        return _SPEC_TYPES[data["type"]](**fields)
    except (KeyError, TypeError, AttributeError):
        return None


__all__ = ["ConvSpec", "PoolSpec", "PoolBackwardSpec", "conv_out_size", "pool_out_size", "index_error",
           "spec_to_json", "spec_from_json", "conv_hyper", "pool_hyper", "activation_arg", "activation_code", "ACTIVATIONS"]
