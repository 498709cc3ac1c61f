"""The public functions: normalize (spec) -> choose (dispatch) -> run (kernel).

Kernels receive C-contiguous arrays and a validated spec; they never re-check arguments.
Inputs are never modified; outputs are new C-contiguous arrays of the input dtype.
"""
from __future__ import annotations

import numpy as np

from . import dispatch, registry
from .spec import ConvSpec, PoolBackwardSpec, PoolSpec, _check_bool, activation_arg

# The canonical dtypes the kernels read.  numpy's float32/float64 descriptors are singletons, so an
# identity check (a few ns) tells a plain native array from a variant that dtype.name hides: another
# byte order ('>f4', as FITS, HDF5 and network-order files give; the C kernels would read its bytes
# as native, Numba refuses it with a TypingError) or a descriptor carrying metadata.
_F32, _F64, _I64 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)


def _c(a: np.ndarray) -> np.ndarray:
    """a as the kernels need it: C-contiguous, aligned, native byte order and writeable; no copy
    when it is.  (Read-only arrays are copied: Numba compiles a separate version of a kernel for
    every combination of read-only arguments, 13-70 s each, where the copy costs one pass.)"""
    d, f = a.dtype, a.flags
    if (d is _F32 or d is _F64 or d is _I64) and f.c_contiguous and f.aligned and f.writeable:
        return a
    return np.require(a, np.dtype(d.name), ["C", "A", "W"])

# Specs of argument signatures already validated: a repeated call (a network's layer, every step)
# skips the spec's from_args (conv and pool alike), whose checks cost more than the dispatch itself (numpy's dtype.name
# alone is ~3 us).  The signature holds everything the spec and its checks depend on, with the
# exact types of the hyper-parameters (stride=True must still be refused), so a hit returns what
# from_args would.  Anything else (lists, numpy ints, ndarray subclasses) takes the full path.
_SPECS: dict = {}
_SPECS_MAX = 4096


def _plain(v) -> bool:
    t = type(v)
    return t is int or t is str or (t is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int)


def _memo(sig, build):
    """build(), or the spec it returned for the same signature before; sig None: always build."""
    spec = _SPECS.get(sig) if sig is not None else None
    if spec is None:
        spec = build()
        if sig is not None:
            if len(_SPECS) >= _SPECS_MAX:
                _SPECS.clear()
            _SPECS[sig] = spec
    return spec


def _conv_spec(x, w, bias, stride, padding, dilation, groups, op: str) -> ConvSpec:
    sig = None
    if type(x) is np.ndarray and type(w) is np.ndarray and (bias is None or type(bias) is np.ndarray) \
            and _plain(stride) and _plain(padding) and _plain(dilation) and type(groups) is int:
        sig = ("conv", x.shape, x.dtype, w.shape, w.dtype, None if bias is None else (bias.shape, bias.dtype),
               stride, padding, dilation, groups)
    return _memo(sig, lambda: ConvSpec.from_args(x, w, bias, stride, padding, dilation, groups, op=op))


def _pool_spec(x, kernel_size, stride, padding, dilation, ceil_mode, indices) -> PoolSpec:
    sig = None
    if type(x) is np.ndarray and _plain(kernel_size) and (stride is None or _plain(stride)) and _plain(padding) \
            and _plain(dilation) and type(ceil_mode) is bool and type(indices) is bool:
        sig = ("pool", x.shape, x.dtype, kernel_size, stride, padding, dilation, ceil_mode, indices)
    return _memo(sig, lambda: PoolSpec.from_args(x, kernel_size, stride, padding, dilation, ceil_mode,
                                                 indices=indices))


def _pool_backward_spec(grad_y, indices, input_shape) -> PoolBackwardSpec:
    sig = None
    if type(grad_y) is np.ndarray and type(indices) is np.ndarray and type(input_shape) is tuple \
            and all(type(v) is int for v in input_shape):
        sig = ("pool_bwd", grad_y.shape, grad_y.dtype, indices.shape, indices.dtype, input_shape)
    return _memo(sig, lambda: PoolBackwardSpec.from_args(grad_y, indices, input_shape))


_ACTIVATIONS: dict = {}  # activation argument -> its normalized form (the argument check, once)


def _activation(activation):
    act = _ACTIVATIONS.get(activation) if type(activation) is str else None
    if act is None:
        act = activation_arg("conv2d", activation)
        if type(activation) is str:
            _ACTIVATIONS[activation] = act
    return act


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           activation=None, algo="auto", backend="auto", rtol=None):
    """torch.nn.functional.conv2d on NumPy arrays (NCHW input, OIHW weight), then ``activation``:
    None, "relu", "relu6", "leaky_relu" or ("leaky_relu", negative_slope), as torch's functions."""
    spec = _conv_spec(x, w, bias, stride, padding, dilation, groups, "conv2d")
    act = None if activation is None else _activation(activation)
    # every forward kernel applies the activation itself, to outputs it has just written (in cache),
    # at its own cost (c.direct in registers, im2col a pass over each task's rows): timed with it
    kernel = dispatch.choose("conv2d.fwd", spec, algo, backend, rtol, caller="conv2d", act=act)
    if spec.n == 0:  # an empty batch, as in PyTorch: an empty output, no kernel runs
        return np.empty(spec.output_shape, spec.dtype)
    x, w, bias = _c(x), _c(w), None if bias is None else _c(bias)
    return kernel.run(spec, x, w, bias) if act is None else kernel.run(spec, x, w, bias, act=act)


class Conv2dPlan:
    """conv2d's decisions for one signature of its call, made once: the arguments checked into a
    spec, the activation normalized, the kernel chosen.  ``run_plan(plan, x, w, bias)`` then makes
    the call on arrays of the same shapes and dtype, with the same hyper-parameters (``plan.fits``),
    without deciding again, while
    ``plan.holds()``: the dispatcher's choices forgotten (set_tuning), a new thread count or kernel
    list void it, and the caller makes a new plan.  For callers repeating one call, as
    fastconv.torch's fused layers do on every image of a model: the checks and the dispatch were
    ~8-10 us of a small layer's ~20 us call (AMD EPYC Zen 3)."""

    __slots__ = ("spec", "kernel", "kw", "x_shape", "w_shape", "dtype", "bias", "hyper", "state")

    def __init__(self, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None):
        self.spec = _conv_spec(x, w, bias, stride, padding, dilation, groups, "conv2d")
        act = None if activation is None else _activation(activation)
        # a choice never older than the state it is kept under; choose may forget the others first
        # (a new kernel list), and another thread may (set_tuning): then again, a few times at most
        # (a plan whose state moved on only makes its caller plan anew)
        for _ in range(4):
            self.state = dispatch.state()
            self.kernel = dispatch.choose("conv2d.fwd", self.spec, caller="conv2d", act=act)
            if self.state == dispatch.state():
                break
        self.kw = {} if act is None else {"act": act}
        self.x_shape, self.w_shape, self.dtype, self.bias = x.shape, w.shape, x.dtype, bias is not None
        self.hyper = (stride, padding, dilation, groups)

    def fits(self, x: np.ndarray, w: np.ndarray, bias, hyper: tuple) -> bool:
        """Whether the call on these arrays with these (stride, padding, dilation, groups) is the
        planned one (the spec's shapes, dtype and hyper-parameters)."""
        d = self.dtype
        return (x.shape == self.x_shape and x.dtype is d and w.shape == self.w_shape and w.dtype is d and
                (bias is not None) is self.bias and (bias is None or bias.dtype is d) and hyper == self.hyper)

    def holds(self) -> bool:
        """Whether the kernel is still the dispatcher's choice for the plan's problem."""
        return self.state == dispatch.state()


def replan(plan, x, w, bias, hyper: tuple, activation=None) -> Conv2dPlan:
    """``plan`` if it still serves conv2d(x, w, bias, *hyper, activation=) (it fits the call and
    holds), else a new plan for it: the check of a caller that keeps the plan of its last call."""
    if plan is not None and plan.fits(x, w, bias, hyper) and plan.holds():
        return plan
    return Conv2dPlan(x, w, bias, *hyper, activation=activation)


def run_plan(plan: Conv2dPlan, x, w, bias=None):
    """conv2d(x, w, bias, ...) as planned (plan.fits(x, w, bias, hyper) and plan.holds() are the caller's)."""
    spec = plan.spec
    if spec.n == 0:
        return np.empty(spec.output_shape, spec.dtype)
    return plan.kernel.run(spec, _c(x), _c(w), None if bias is None else _c(bias), **plan.kw)


def conv2d_backward(grad_y, x, w, stride=1, padding=0, dilation=1, groups=1, *, bias=True,
                    algo="auto", weight_algo="auto", backend="auto", rtol=None):
    """(grad_x, grad_w, grad_bias) of conv2d; grad_bias is None when bias=False.
    ``algo`` picks the input-gradient kernel, ``weight_algo`` the weight-gradient one."""
    return conv2d_grads(grad_y, x, w, stride, padding, dilation, groups, bias=bias, algo=algo,
                        weight_algo=weight_algo, backend=backend, rtol=rtol)


def conv2d_grads(grad_y, x, w, stride=1, padding=0, dilation=1, groups=1, *, bias=True, grad_input=True,
                 grad_weight=True, algo="auto", weight_algo="auto", backend="auto", rtol=None):
    """conv2d_backward computing only the gradients asked for (the others None): the adapter's
    backward, where the first layer's input (the images) needs no gradient.  ResNet-18's conv1 at
    batch 8 spent about half of its 29 ms backward on that grad of the input."""
    op = "conv2d_backward"
    spec = _conv_spec(x, w, None, stride, padding, dilation, groups, op)
    spec.check_grad_output(grad_y, op)
    if type(bias) is not bool:
        bias = _check_bool(op, "bias", bias)
    data_kernel = dispatch.choose("conv2d.bwd_data", spec, algo, backend, rtol, caller=op) if grad_input else None
    weight_kernel = (dispatch.choose("conv2d.bwd_weight", spec, weight_algo, backend, rtol, caller=op)
                     if grad_weight else None)
    if spec.n == 0:  # an empty batch: no gradient flows, as in PyTorch
        return (np.empty(spec.input_shape, spec.dtype) if grad_input else None,
                np.zeros(spec.weight_shape, spec.dtype) if grad_weight else None,
                np.zeros(spec.c_out, spec.dtype) if bias else None)
    grad_y = _c(grad_y)
    grad_x = data_kernel.run(spec, grad_y, _c(w)) if grad_input else None
    grad_w = weight_kernel.run(spec, grad_y, _c(x)) if grad_weight else None
    grad_b = grad_bias(grad_y) if bias else None
    return grad_x, grad_w, grad_b


def grad_bias(grad_y: np.ndarray) -> np.ndarray:
    """Sum of grad_y over images and pixels, per channel.  Reduced along each contiguous plane
    first, where numpy sums pairwise in the input dtype: within a few ulps of a float64 sum,
    at twice its speed (a float64 accumulator converts every element)."""
    n, c = grad_y.shape[:2]
    return grad_y.reshape(n, c, -1).sum(axis=2).sum(axis=0)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=True, *, backend="auto"):
    """torch.nn.functional.max_pool2d; returns (y, indices) or, with return_indices=False, y
    alone, computed without indices.  Indices are int64 flat offsets into each (H, W) input plane."""
    spec = _pool_spec(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    kernel = dispatch.choose("maxpool2d.fwd", spec, "auto", backend, caller="max_pool2d")
    if spec.n == 0:
        y = np.empty(spec.output_shape, spec.dtype)
        indices = np.empty(spec.output_shape, np.int64) if spec.indices else None
    else:
        y, indices = kernel.run(spec, _c(x))
    return (y, indices) if spec.indices else y


def max_pool2d_backward(grad_y, indices, input_shape, *, backend="auto"):
    """Route every gradient to its argmax (overlapping windows accumulate)."""
    spec = _pool_backward_spec(grad_y, indices, input_shape)
    kernel = dispatch.choose("maxpool2d.bwd", spec, "auto", backend, caller="max_pool2d_backward")
    if spec.n == 0:
        return np.empty(spec.input_shape, spec.dtype)
    return kernel.run(spec, _c(grad_y), _c(indices))


def op_call(op: str, spec, data: dict, kernel=None):
    """A call of op's public function (registry.Op says which, and with which arguments) on the named
    arrays of data, for spec's hyper-parameters; kernel: the registered kernel to name (its algo and
    backend), or None for ``auto``.  The call returns the function's whole result (conv2d_backward's
    three gradients); ``registry.Op.output_of`` takes op's part of it."""
    record = registry.OPS[op]
    fn = globals()[record.public]
    args, kwargs = [data[n] for n in record.public_args], record.hyper(spec)
    if kernel is not None:
        kwargs["backend"] = kernel.backend
        if record.algo_arg:
            kwargs[record.algo_arg] = kernel.algo
    return lambda: fn(*args, **kwargs)
