"""PyTorch adapter: run a model's convolutions and max-pools on fastconv, forward and backward.

    import fastconv.torch as fct
    y = fct.conv2d(x, w, b, stride, padding, dilation, groups)       # autograd-aware
    model = fct.patch(model)        # every nn.Conv2d / nn.MaxPool2d now runs on fastconv
    print(model.fastconv_patch)     # what was swapped, and what was not and why
    fast = fct.optimize(model.eval())   # inference: BatchNorm folded, activations fused
    print(fast.fastconv_optimize)   # what was folded and fused, and what was not and why

Tensors cross without copies: contiguous CPU tensors are viewed as NumPy arrays
(``Tensor.numpy()``) and results wrapped back (``torch.from_numpy``).  CUDA tensors, dtypes other
than float32/float64, and ``padding_mode`` other than ``'zeros'`` are refused with a ValueError by
the functions, and left on torch's own implementation by ``patch``, which says so.

Higher derivatives (``autograd.grad(..., create_graph=True)`` twice, Hessian-vector products,
``gradgradcheck``) run on fastconv too: the backward is recorded as a differentiable Function
only when grad mode is on during backward, so a plain ``.backward()`` costs what it did.

torch is an optional extra (``pip install fastconv[torch]``): ``import fastconv`` never imports it.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("fastconv.torch needs PyTorch; install it with `pip install fastconv[torch]` "
                      "(CPU wheels: https://download.pytorch.org/whl/cpu)") from exc

import fastconv
from fastconv import api as _api
from fastconv.common.config import WEIGHTS_VARY as _WEIGHTS_VARY
from fastconv.common.winograd import TRUSTED as _TRUSTED
from fastconv.spec import activation_arg

__all__ = ["conv2d", "max_pool2d", "Conv2d", "MaxPool2d", "patch", "PatchReport", "optimize", "OptimizeReport",
           "FusedConv2d", "enabled", "enable", "disable"]

_DTYPES = (torch.float32, torch.float64)


def _why_not(t: torch.Tensor) -> str | None:
    if t.device.type != "cpu":
        return f"tensor on {t.device}; fastconv runs on the CPU only (move it with .cpu())"
    if t.dtype not in _DTYPES:
        return f"dtype {t.dtype}; fastconv serves float32 and float64"
    return None


def _numpy(t: torch.Tensor, what: str, op: str):
    if t.is_cpu and (t.dtype is torch.float32 or t.dtype is torch.float64):  # the common case, in ~1 us
        return (t.detach() if t.requires_grad else t).contiguous().numpy()  # a view when contiguous
    raise ValueError(f"fastconv.torch.{op}: {what} is a {_why_not(t)}")


def _grad_wanted(*tensors) -> bool:
    """Whether autograd must record a call on these tensors (None entries ignored)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _tensor(a) -> torch.Tensor:
    return torch.from_numpy(a)  # fastconv returns new C-contiguous arrays: no copy


def _conv_backward(grad_y, x, w, has_bias, args, need=(True, True, True)):
    """(gx, gw, gb) of conv2d on fastconv, as tensors, each None where need says no (or gb without
    a bias).  Weights that get gradients change every step: the dispatcher is told so
    (config.WEIGHTS_VARY)."""
    vary = _WEIGHTS_VARY.set(w.requires_grad)
    try:
        gx, gw, gb = fastconv.api.conv2d_grads(
            _numpy(grad_y, "grad_output", "conv2d"), _numpy(x, "input", "conv2d"), _numpy(w, "weight", "conv2d"),
            *args, bias=has_bias and need[2], grad_input=need[0], grad_weight=need[1])
    finally:
        _WEIGHTS_VARY.reset(vary)
    return tuple(None if g is None else _tensor(g) for g in (gx, gw, gb))


def _pool_backward(grad_y, idx, input_shape):
    return _tensor(fastconv.max_pool2d_backward(_numpy(grad_y, "grad_output", "max_pool2d"), idx.numpy(),
                                                input_shape))


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        args = (stride, padding, dilation, groups)
        # weights that get gradients (a training step) change every call: the dispatcher times and
        # keeps its choice for that case apart (fastconv.common.config.WEIGHTS_VARY)
        vary = _WEIGHTS_VARY.set(w.requires_grad)
        try:
            y = fastconv.conv2d(_numpy(x, "input", "conv2d"), _numpy(w, "weight", "conv2d"),
                                None if b is None else _numpy(b, "bias", "conv2d"), *args)
        finally:
            _WEIGHTS_VARY.reset(vary)
        ctx.save_for_backward(x, w)
        ctx.args, ctx.has_bias = args, b is not None
        return _tensor(y)

    @staticmethod
    def backward(ctx, grad_y):
        x, w = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: record the backward so it can be differentiated
            gx, gw, gb = _Conv2dBackward.apply(grad_y, x, w, ctx.has_bias, *ctx.args)
        else:  # first order: straight to fastconv, nothing recorded, only the gradients wanted
            gx, gw, gb = _conv_backward(grad_y, x, w, ctx.has_bias, ctx.args, ctx.needs_input_grad[:3])
        need = ctx.needs_input_grad
        return (gx if need[0] else None, gw if need[1] else None, gb if need[2] else None,
                None, None, None, None)


class _Conv2dBackward(torch.autograd.Function):
    """conv2d's first backward, (grad_y, x, w) -> (gx, gw, gb), as a differentiable function.

    gx = bwd_data(grad_y, w), gw = bwd_weight(grad_y, x), gb = sum(grad_y) are each linear in
    grad_y and in one of x, w, so the backward is convolutions again.  It is written with conv2d and
    this Function itself, hence is differentiable in turn: every order works."""

    @staticmethod
    def forward(ctx, grad_y, x, w, has_bias, stride, padding, dilation, groups):
        ctx.set_materialize_grads(False)  # outputs nobody used (often gb, gx) come back None: no work
        ctx.save_for_backward(grad_y, x, w)
        ctx.args = (stride, padding, dilation, groups)
        return _conv_backward(grad_y, x, w, has_bias, ctx.args)

    @staticmethod
    def backward(ctx, ggx, ggw, ggb):
        grad_y, x, w = ctx.saved_tensors
        args, need = ctx.args, ctx.needs_input_grad
        g_grad_y = g_x = g_w = None
        if need[0]:
            terms = []
            if ggx is not None:
                terms.append(conv2d(ggx, w, None, *args))
            if ggw is not None:
                terms.append(conv2d(x, ggw, None, *args))
            if ggb is not None:
                terms.append(ggb.reshape(1, -1, 1, 1).expand(grad_y.shape))
            g_grad_y = sum(terms[1:], terms[0]) if terms else None
        if need[1] and ggw is not None:  # adjoint of x -> gw: the input gradient, ggw as the weight
            g_x = _Conv2dBackward.apply(grad_y, x, ggw, False, *args)[0]
        if need[2] and ggx is not None:  # adjoint of w -> gx: the weight gradient, ggx as the input
            g_w = _Conv2dBackward.apply(grad_y, ggx, w, False, *args)[1]
        return g_grad_y, g_x, g_w, None, None, None, None, None


class _MaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, idx = fastconv.max_pool2d(_numpy(x, "input", "max_pool2d"), kernel_size, stride, padding,
                                     dilation, ceil_mode, return_indices=True)
        idx = _tensor(idx)
        ctx.save_for_backward(idx)
        ctx.input_shape = tuple(x.shape)
        ctx.mark_non_differentiable(idx)
        return _tensor(y), idx

    @staticmethod
    def backward(ctx, grad_y, _grad_idx):
        (idx,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: record the backward so it can be differentiated
            gx = _MaxPool2dBackward.apply(grad_y, idx, ctx.input_shape)
        else:
            gx = _pool_backward(grad_y, idx, ctx.input_shape)
        return gx, None, None, None, None, None


class _MaxPool2dBackward(torch.autograd.Function):
    """max_pool2d's backward, grad_y -> gx: a scatter of grad_y to the argmax indices, linear in
    grad_y, so its own backward is the gather of ggx at those indices (torch's gather, which
    autograd differentiates further)."""

    @staticmethod
    def forward(ctx, grad_y, idx, input_shape):
        ctx.save_for_backward(idx)
        ctx.input_shape = input_shape
        return _pool_backward(grad_y, idx, input_shape)

    @staticmethod
    def backward(ctx, ggx):
        (idx,) = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        # sizes spelled out, not -1: reshaping an empty (N = 0) tensor cannot infer a dimension
        planes = idx.reshape(n, c, idx.shape[2] * idx.shape[3])
        return ggx.reshape(n, c, h * w).gather(2, planes).reshape(idx.shape), None, None


# ------------------------------------------------------------- torch.compile / torch.export
# Under torch.compile and torch.export (torch.compiler.is_compiling()) conv2d and max_pool2d go
# through custom ops registered with torch.library, with shape functions and autograd formulas, so
# a patched model compiles into one graph (no break on fastconv's calls) and exports.  In eager
# mode the autograd Functions above run instead: their per-call cost is lower, and they support
# derivatives of any order (the ops: first order; a second derivative of a compiled graph raises
# torch's own error for an op without one).

def _pair_list(v) -> list:
    return [v, v] if isinstance(v, int) else [int(v[0]), int(v[1])]


@torch.library.custom_op("fastconv::conv2d", mutates_args=())
def _conv2d_op(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: list[int], padding: list[int],
               padding_mode: str, dilation: list[int], groups: int) -> torch.Tensor:
    pad = padding_mode or tuple(padding)
    return _tensor(fastconv.conv2d(_numpy(x, "input", "conv2d"), _numpy(w, "weight", "conv2d"),
                                   None if b is None else _numpy(b, "bias", "conv2d"), tuple(stride), pad,
                                   tuple(dilation), groups))


@_conv2d_op.register_fake
def _(x, w, b, stride, padding, padding_mode, dilation, groups):
    spec = fastconv.spec.ConvSpec.from_shapes(tuple(x.shape), tuple(w.shape), tuple(stride),
                                              padding_mode or tuple(padding), tuple(dilation), groups,
                                              str(x.dtype).replace("torch.", ""))
    return x.new_empty(spec.output_shape)


@torch.library.custom_op("fastconv::conv2d_backward", mutates_args=())
def _conv2d_backward_op(grad_y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stride: list[int],
                        padding: list[int], padding_mode: str, dilation: list[int],
                        groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pad = padding_mode or tuple(padding)
    gx, gw, gb = _conv_backward(grad_y, x, w, True, (tuple(stride), pad, tuple(dilation), groups))
    return gx, gw, gb


@_conv2d_backward_op.register_fake
def _(grad_y, x, w, stride, padding, padding_mode, dilation, groups):
    return x.new_empty(x.shape), w.new_empty(w.shape), w.new_empty(w.shape[0])


def _conv2d_setup(ctx, inputs, output):
    x, w, b, *args = inputs
    ctx.save_for_backward(x, w)
    ctx.args, ctx.has_bias = args, b is not None


def _conv2d_grad(ctx, grad_y):
    x, w = ctx.saved_tensors
    gx, gw, gb = _conv2d_backward_op(grad_y.contiguous(), x, w, *ctx.args)
    return gx, gw, gb if ctx.has_bias else None, None, None, None, None, None


_conv2d_op.register_autograd(_conv2d_grad, setup_context=_conv2d_setup)


@torch.library.custom_op("fastconv::max_pool2d", mutates_args=())
def _max_pool2d_op(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                   dilation: list[int], ceil_mode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    y, idx = fastconv.max_pool2d(_numpy(x, "input", "max_pool2d"), tuple(kernel_size), tuple(stride),
                                 tuple(padding), tuple(dilation), ceil_mode, return_indices=True)
    return _tensor(y), _tensor(idx)


@_max_pool2d_op.register_fake
def _(x, kernel_size, stride, padding, dilation, ceil_mode):
    spec = fastconv.spec.PoolSpec.from_shape(tuple(x.shape), tuple(kernel_size), tuple(stride), tuple(padding),
                                             tuple(dilation), ceil_mode, str(x.dtype).replace("torch.", ""))
    return x.new_empty(spec.output_shape), x.new_empty(spec.output_shape, dtype=torch.int64)


@torch.library.custom_op("fastconv::max_pool2d_backward", mutates_args=())
def _max_pool2d_backward_op(grad_y: torch.Tensor, idx: torch.Tensor, input_shape: list[int]) -> torch.Tensor:
    return _pool_backward(grad_y, idx, tuple(input_shape))


@_max_pool2d_backward_op.register_fake
def _(grad_y, idx, input_shape):
    return grad_y.new_empty(input_shape)


def _max_pool2d_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.input_shape = list(inputs[0].shape)
    ctx.mark_non_differentiable(output[1])


def _max_pool2d_grad(ctx, grad_y, _grad_idx):
    (idx,) = ctx.saved_tensors
    return _max_pool2d_backward_op(grad_y.contiguous(), idx, ctx.input_shape), None, None, None, None, None


_max_pool2d_op.register_autograd(_max_pool2d_grad, setup_context=_max_pool2d_setup)


def _compiled_conv2d(input, weight, bias, stride, padding, dilation, groups):
    mode = padding if isinstance(padding, str) else ""
    return _conv2d_op(input, weight, bias, _pair_list(stride), [0, 0] if mode else _pair_list(padding), mode,
                      _pair_list(dilation), groups)


def _compiled_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    k = _pair_list(kernel_size)
    y, idx = _max_pool2d_op(input, k, k if stride is None or stride == [] or stride == () else _pair_list(stride),
                            _pair_list(padding), _pair_list(dilation), bool(ceil_mode))
    return (y, idx) if return_indices else y


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d on fastconv's kernels, differentiable (any order) in input, weight, bias."""
    if torch.compiler.is_compiling():
        return _compiled_conv2d(input, weight, bias, stride, padding, dilation, groups)
    if _grad_wanted(input, weight, bias):
        return _Conv2d.apply(input, weight, bias, stride, padding, dilation, groups)
    # nothing to differentiate (no_grad, inference_mode, frozen weights on a plain input): no autograd
    # Function, whose bookkeeping costs more than the rest of a small layer's call
    return _tensor(fastconv.conv2d(_numpy(input, "input", "conv2d"), _numpy(weight, "weight", "conv2d"),
                                   None if bias is None else _numpy(bias, "bias", "conv2d"), stride, padding,
                                   dilation, groups))


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool2d on fastconv's kernels; indices as torch's (int64, per plane); any order.
    Without return_indices, when no gradient can flow back (torch.no_grad(), inference_mode, or an
    input that does not require grad), the indices are neither computed nor stored."""
    if torch.compiler.is_compiling():
        return _compiled_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    if not return_indices and not _grad_wanted(input):
        y = fastconv.max_pool2d(_numpy(input, "input", "max_pool2d"), kernel_size, stride, padding,
                                dilation, ceil_mode, return_indices=False)
        return _tensor(y)
    y, idx = _MaxPool2d.apply(input, kernel_size, stride, padding, dilation, ceil_mode)
    return (y, idx) if return_indices else y


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same constructor, parameters and state dict) computed by fastconv."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"fastconv.torch.Conv2d: padding_mode={self.padding_mode!r} is not supported "
                             "(fastconv pads with zeros); keep this layer as torch.nn.Conv2d")

    def _conv_forward(self, input, weight, bias):
        if torch.compiler.is_compiling() or _grad_wanted(input, weight, bias):
            return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        # inference: the call's checks and dispatch made once per input shape, as FusedConv2d's
        x, w = _numpy(input, "input", "conv2d"), _numpy(weight, "weight", "conv2d")
        b = None if bias is None else _numpy(bias, "bias", "conv2d")
        kept = self.__dict__.get("_fastconv_plan")
        plan = _api.replan(kept, x, w, b, (self.stride, self.padding, self.dilation, self.groups))
        if plan is not kept:  # (nn.Module.__setattr__ costs ~1 us: only on a new plan)
            self._fastconv_plan = plan
        return _tensor(_api.run_plan(plan, x, w, b))

    def __getstate__(self):
        return {**self.__dict__, "_fastconv_plan": None}  # a plan holds the process's kernels


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d (same constructor) computed by fastconv."""

    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, self.return_indices)


@dataclass
class PatchReport:
    swapped: list = field(default_factory=list)   # (module name, torch class)
    skipped: list = field(default_factory=list)   # (module name, reason)
    relaid: list = field(default_factory=list)    # (module name, the weight's layout before)

    def __str__(self) -> str:
        lines = [f"fastconv.torch.patch: {len(self.swapped)} swapped, {len(self.skipped)} left on torch"]
        lines += [f"  swapped  {name or '<model>'}: {kind}" for name, kind in self.swapped]
        lines += [f"  skipped  {name or '<model>'}: {reason}" for name, reason in self.skipped]
        lines += [f"  relaid   {name or '<model>'}: weight was {was}, now stored contiguous (OIHW)"
                  for name, was in self.relaid]
        return "\n".join(lines)


def _patch_refusal(module) -> str | None:
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} (fastconv pads with zeros only)"
    for p in module.parameters(recurse=False):
        reason = _why_not(p)
        if reason:
            return f"parameters on a {reason}"
    return None


def _store_weight_contiguous(conv: nn.Conv2d) -> str | None:
    """Store conv's weight (and its grad) contiguously if it is not, as torch's own
    ``model.to(memory_format=torch.contiguous_format)`` does (``param.data`` replaced: the Parameter
    object stays, so optimizers and hooks keep it, and only views of the old storage taken before
    are left behind).  fastconv's kernels read OIHW: a channels_last weight would be copied on every
    call (ResNet-18 at batch 1: 1.5x the time).  Returns the layout it had, or None if unchanged.
    A weight computed per call (a parametrization) is not a Parameter here and is left alone."""
    w = conv._parameters.get("weight")  # on the CPU in float32/64: patch refused the others
    if w is None or w.is_contiguous():
        return None
    was = "channels_last" if w.is_contiguous(memory_format=torch.channels_last) else f"strided {tuple(w.stride())}"
    with torch.no_grad():
        w.data = w.data.contiguous()
        if w.grad is not None and not w.grad.is_contiguous():
            w.grad.data = w.grad.data.contiguous()
    return was


def patch(model: nn.Module) -> nn.Module:
    """Make every nn.Conv2d / nn.MaxPool2d of model (and model itself) run on fastconv, in place.

    The modules keep their identity, parameters, hooks and state dicts (only their class changes,
    to the fastconv subclass), so optimizers built before patching keep working.  A convolution's
    weight stored in another layout (channels_last) is stored contiguously, values unchanged
    (_store_weight_contiguous).  Modules fastconv cannot serve stay on torch;
    ``model.fastconv_patch`` (a PatchReport) lists what was swapped, skipped and relaid."""
    report = PatchReport()
    for name, module in model.named_modules():
        if type(module) in (nn.Conv2d, nn.MaxPool2d):
            reason = _patch_refusal(module)
            if reason:
                report.skipped.append((name, reason))
                continue
            report.swapped.append((name, type(module).__name__))
            if type(module) is nn.Conv2d:
                was = _store_weight_contiguous(module)
                if was:
                    report.relaid.append((name, was))
            module.__class__ = Conv2d if type(module) is nn.Conv2d else MaxPool2d
        elif isinstance(module, (nn.Conv2d, nn.MaxPool2d)) and not isinstance(module, (Conv2d, MaxPool2d)):
            report.skipped.append((name, f"{type(module).__name__} subclasses torch's layer; left as is"))
    model.fastconv_patch = report
    return model


# ------------------------------------------------------------------------------------- inference

# The activations optimize() fuses into the convolution before them: torch's modules and functions
# (call_module / call_function / call_method nodes of a torch.fx graph) -> fastconv's activation.
_ACT_MODULES = {nn.ReLU: lambda m: "relu", nn.ReLU6: lambda m: "relu6",
                nn.LeakyReLU: lambda m: ("leaky_relu", m.negative_slope)}
_ACT_FUNCTIONS = {nn.functional.relu: "relu", torch.relu: "relu", torch.relu_: "relu", nn.functional.relu6: "relu6",
                  nn.functional.leaky_relu: "leaky_relu"}
_ACT_METHODS = {"relu": "relu", "relu_": "relu"}


_FOLDS = itertools.count()  # a token per fold: FusedConv2d vouches for the weights it folded


def _act_module(act) -> nn.Module:
    name, slope = activation_arg("optimize", act)
    return {"relu": nn.ReLU, "relu6": nn.ReLU6}[name]() if name != "leaky_relu" else nn.LeakyReLU(slope)


class FusedConv2d(nn.Module):
    """conv -> BatchNorm2d (optional) -> activation (optional) of an eval-mode model, one fastconv call.

    It holds the model's own modules: the folded weight and bias are computed from their current
    values, and computed again whenever one of them changed since (an optimizer step, an in-place
    edit, ``load_state_dict``, a parameter replaced): tensor version counters tell, at a few tens of
    ns per tensor.  The fused call runs when no gradient can be asked for (``torch.no_grad()``,
    ``inference_mode``, or nothing requiring grad) in eval mode; otherwise (training mode, or grad
    of the input or the parameters wanted) the three modules run one after the other, exactly as
    before optimize, so training and gradients stay right."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, activation=None):
        super().__init__()
        self.conv, self.bn = conv, bn
        self.act = None if activation is None else _act_module(activation)
        self.activation = activation
        self._conv_params = conv._parameters
        self._bn_params = None if bn is None else bn._parameters
        self._bn_buffers = None if bn is None else bn._buffers
        self._key = None  # (id, version) of every tensor the folded weights were made from
        self._folded = None  # (weight, bias) as contiguous NumPy arrays
        self._plan = None  # the fused call's api.Conv2dPlan, for the last input shape

    def _sources(self):
        # through the modules' own dicts: nn.Module.__getattr__ costs ~0.7 us a lookup, six per call
        c, b = self._conv_params, self._bn_params
        if b is None:
            return c.get("weight"), c.get("bias")
        bb = self._bn_buffers
        return (c.get("weight"), c.get("bias"), b.get("weight"), b.get("bias"), bb.get("running_mean"),
                bb.get("running_var"))

    def _fold(self):
        sources = self._sources()  # what identifies them and their contents: ~1.2 us for six
        key = (tuple(map(id, sources)), [t._version for t in sources if t is not None])
        if key != self._key:
            with torch.no_grad():
                w, b = self.conv.weight, self.conv.bias
                if self.bn is not None:  # in float64, rounded once to the conv's dtype
                    bn, d = self.bn, torch.float64
                    w64, b64 = torch.nn.utils.fusion.fuse_conv_bn_weights(
                        w.to(d), None if b is None else b.to(d), bn.running_mean.to(d), bn.running_var.to(d),
                        bn.eps, None if bn.weight is None else bn.weight.to(d),
                        None if bn.bias is None else bn.bias.to(d))
                    w, b = w64.to(w.dtype), b64.to(w.dtype)
                else:  # a copy of our own: only a fold can change it, so it can be vouched for (below)
                    w, b = w.detach().clone(), None if b is None else b.detach().clone()
                self._folded = (_numpy(w, "weight", "optimize"), None if b is None else _numpy(b, "bias", "optimize"))
                self._trust = (self._folded[0].__array_interface__["data"][0], next(_FOLDS))
            self._key = key
        return self._folded

    def forward(self, x):
        if self.training or (torch.is_grad_enabled() and _grad_wanted(x, *self._sources())):
            y = self.conv(x)
            y = y if self.bn is None else self.bn(y)
            return y if self.act is None else self.act(y)
        w, b = self._fold()
        xn = _numpy(x, "input", "conv2d")
        # the call's checks and dispatch, made once per input shape (api.Conv2dPlan)
        c = self._modules["conv"]  # not self.conv: nn.Module.__getattr__ costs ~0.7 us
        kept = self._plan
        plan = _api.replan(kept, xn, w, b, (c.stride, c.padding, c.dilation, c.groups), self.activation)
        if plan is not kept:  # (nn.Module.__setattr__ costs ~1 us: only on a new plan)
            self._plan = plan
        # The folded weights are this module's own and change only with a new fold (a new token),
        # so Winograd's filter cache may skip comparing them with the copy it keeps
        # (fastconv/common/winograd.py; VGG's 512 x 512 layers: 0.85 ms a call)
        vouched = _TRUSTED.set(self._trust)
        try:
            y = _api.run_plan(plan, xn, w, b)
        finally:
            _TRUSTED.reset(vouched)
        return _tensor(y)

    def __getstate__(self):
        # a copy or a pickle plans its own call (a plan holds the process's kernels)
        return {**self.__dict__, "_plan": None}

    def extra_repr(self) -> str:
        return f"bn={'folded' if self.bn is not None else 'none'}, activation={self.activation!r}"


@dataclass
class OptimizeReport:
    folded: list = field(default_factory=list)    # (conv name, BatchNorm name)
    fused: list = field(default_factory=list)     # (conv name, activation)
    unfused: list = field(default_factory=list)   # (name, reason)
    patch: PatchReport | None = None              # the patch of what optimize left in place

    def __str__(self) -> str:
        lines = [f"fastconv.torch.optimize: {len(self.folded)} BatchNorm folded, {len(self.fused)} activations "
                 f"fused, {len(self.unfused)} left as they were"]
        lines += [f"  folded   {bn} into {conv}" for conv, bn in self.folded]
        lines += [f"  fused    {act} into {conv}" for conv, act in self.fused]
        lines += [f"  kept     {name}: {why}" for name, why in self.unfused]
        return "\n".join(lines + ([str(self.patch)] if self.patch is not None else []))


def _activation_of(node, modules):
    """fastconv's activation for an fx node that applies one to a single tensor, else None."""
    if node.op == "call_module":
        m = modules[node.target]
        make = _ACT_MODULES.get(type(m))
        return make(m) if make else None
    if node.op == "call_function" and node.target in _ACT_FUNCTIONS:
        name = _ACT_FUNCTIONS[node.target]
        if name == "leaky_relu":
            slope = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01)
            return ("leaky_relu", slope) if isinstance(slope, (int, float)) else None
        return name
    if node.op == "call_method" and node.target in _ACT_METHODS and len(node.args) == 1:
        return _ACT_METHODS[node.target]
    return None


def _bn_refusal(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> str | None:
    if type(bn) is not nn.BatchNorm2d:
        return f"{type(bn).__name__} subclasses BatchNorm2d"
    if not bn.track_running_stats or bn.running_mean is None:
        return "BatchNorm2d without running statistics normalizes by the batch's: nothing to fold"
    if bn.num_features != conv.out_channels:
        return f"BatchNorm2d of {bn.num_features} features after {conv.out_channels} channels"
    return None


def optimize(model: nn.Module) -> nn.Module:
    """An inference version of an eval-mode model on fastconv: every nn.Conv2d followed directly by
    a BatchNorm2d has it folded into its weights and bias, and a ReLU / ReLU6 / LeakyReLU right
    after (module or function) runs inside fastconv's call (FusedConv2d).  The rest is patched
    (convolutions and max-pools on fastconv, pools without indices under no_grad).

    The model is traced with torch.fx into a new GraphModule that shares the model's modules and
    parameters (nothing is copied; the model keeps working as before, its convolutions and pools
    patched as ``patch`` does).  Parameters changed later are picked up on the next call (see
    FusedConv2d).  Full speed needs ``torch.no_grad()`` or ``torch.inference_mode()``; in training
    mode the result computes what the model does.  A model torch.fx cannot trace is only patched,
    and the report (``result.fastconv_optimize``) says why."""
    if model.training:
        raise ValueError("fastconv.torch.optimize: the model is in training mode; optimize folds BatchNorm's "
                         "running statistics, which is right only for inference: call model.eval() first")
    report = OptimizeReport()
    try:
        import torch.fx
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure: fall back to patch, and say so
        report.unfused.append(("<model>", f"torch.fx cannot trace it ({type(exc).__name__}: {exc}); only patched"))
        report.patch = patch(model).fastconv_patch
        model.fastconv_optimize = report
        return model
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or type(modules[node.target]) is not nn.Conv2d:
            continue
        conv, name = modules[node.target], node.target
        reason = _patch_refusal(conv)
        if reason:
            report.unfused.append((name, reason))
            continue
        last, bn, act = node, None, None
        users = list(last.users)
        if len(users) == 1 and users[0].op == "call_module" and isinstance(modules[users[0].target], nn.BatchNorm2d):
            reason = _bn_refusal(modules[users[0].target], conv)
            if reason:
                report.unfused.append((users[0].target, reason))
            else:
                bn, last = modules[users[0].target], users[0]
                report.folded.append((name, last.target))
        users = list(last.users)
        if len(users) == 1 and users[0].args and users[0].args[0] is last:
            act = _activation_of(users[0], modules)
            if act is not None:
                last = users[0]
                report.fused.append((name, act if isinstance(act, str) else f"{act[0]}({act[1]})"))
        if last is node:
            continue
        fused_name = "fastconv_fused_" + name.replace(".", "_")
        gm.add_submodule(fused_name, FusedConv2d(conv, bn, act))
        with gm.graph.inserting_after(last):
            new = gm.graph.call_module(fused_name, node.args, node.kwargs)
        last.replace_all_uses_with(new)
        while last is not node:  # drop the chain, last node first (each the only user of the one before)
            prev = last.args[0]
            gm.graph.erase_node(last)
            last = prev
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    gm.eval()  # a new GraphModule and new FusedConv2d start in training mode; the model is in eval
    report.patch = patch(gm).fastconv_patch
    gm.fastconv_optimize = report
    return gm


# ------------------------------------------------------------------------- the functional switch

def _servable(*tensors) -> bool:
    """Whether fastconv serves a call on these tensors (None ignored): CPU, one float32/float64 dtype."""
    dtype = None
    for t in tensors:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or _why_not(t) is not None or (dtype is not None and t.dtype != dtype):
            return False
        dtype = t.dtype
    return True


def _routed_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if not _servable(input, weight, bias) or input.dim() != 4:  # unbatched (C, H, W) input: torch's
        return NotImplemented
    return conv2d(input, weight, bias, stride, padding, dilation, groups)


def _routed_max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False):
    if not _servable(input) or input.dim() != 4:
        return NotImplemented
    if stride is not None and not isinstance(stride, int) and len(stride) == 0:  # torch's "default" spelling
        stride = None
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _routed_max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                                    return_indices=True):
    return _routed_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


_ROUTES = {torch.conv2d: _routed_conv2d, nn.functional.max_pool2d: _routed_max_pool2d,
           torch.max_pool2d: _routed_max_pool2d, nn.functional.max_pool2d_with_indices: _routed_max_pool2d_with_indices}


class _Routing(torch.overrides.TorchFunctionMode):
    """Every torch.nn.functional.conv2d / max_pool2d call (nn.Conv2d's and nn.MaxPool2d's too,
    and those of libraries that call the functions, Keras 3 on its torch backend) goes to
    fastconv when fastconv serves it, else to torch unchanged (CUDA, other dtypes, unbatched
    inputs).  torch's own interception mechanism: no torch attribute is overwritten."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        route = _ROUTES.get(func)
        if route is not None:
            out = route(*args, **(kwargs or {}))
            if out is not NotImplemented:
                return out
        return func(*args, **(kwargs or {}))


def enabled():
    """``with fastconv.torch.enabled(): ...``: route the functional calls of the block through
    fastconv (see _Routing), in the calling thread; nests, and undoes itself on exit."""
    return _Routing()


_ENABLED = threading.local()  # .mode: the thread's enable() mode, if any


def enable() -> None:
    """Route the functional calls through fastconv from now on, in the calling thread (torch's
    function modes are per thread), until disable(); calling it twice changes nothing."""
    if getattr(_ENABLED, "mode", None) is None:
        mode = _Routing()
        mode.__enter__()
        _ENABLED.mode = mode


def disable() -> None:
    """Undo enable() in the calling thread (nothing when it did not enable)."""
    mode = getattr(_ENABLED, "mode", None)
    if mode is not None:
        _ENABLED.mode = None
        mode.__exit__(None, None, None)
