"""PyTorch adapter: run a model's convolutions and max-pools on fastconv, forward and backward.

    import fastconv.torch as fct
    y = fct.conv2d(x, w, b, stride, padding, dilation, groups)       # autograd-aware
    model = fct.patch(model)        # every nn.Conv2d / nn.MaxPool2d now runs on fastconv
    print(model.fastconv_patch)     # what was swapped, and what was not and why

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

from dataclasses import dataclass, field

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("fastconv.torch needs PyTorch; install it with `pip install fastconv[torch]` "
                      "(CPU wheels: https://download.pytorch.org/whl/cpu)") from exc

import fastconv

__all__ = ["conv2d", "max_pool2d", "Conv2d", "MaxPool2d", "patch", "PatchReport"]

_DTYPES = (torch.float32, torch.float64)


def _why_not(t: torch.Tensor) -> str | None:
    if t.device.type != "cpu":
        return f"tensor on {t.device}; fastconv runs on the CPU only (move it with .cpu())"
    if t.dtype not in _DTYPES:
        return f"dtype {t.dtype}; fastconv serves float32 and float64"
    return None


def _numpy(t: torch.Tensor, what: str, op: str):
    reason = _why_not(t)
    if reason:
        raise ValueError(f"fastconv.torch.{op}: {what} is a {reason}")
    return t.detach().contiguous().numpy()  # a view when already contiguous


def _tensor(a) -> torch.Tensor:
    return torch.from_numpy(a)  # fastconv returns new C-contiguous arrays: no copy


def _conv_backward(grad_y, x, w, has_bias, args):
    """(gx, gw, gb) of conv2d on fastconv, as tensors; gb is None without a bias."""
    gx, gw, gb = fastconv.conv2d_backward(_numpy(grad_y, "grad_output", "conv2d"), _numpy(x, "input", "conv2d"),
                                          _numpy(w, "weight", "conv2d"), *args, bias=has_bias)
    return _tensor(gx), _tensor(gw), None if gb is None else _tensor(gb)


def _pool_backward(grad_y, idx, input_shape):
    return _tensor(fastconv.max_pool2d_backward(_numpy(grad_y, "grad_output", "max_pool2d"), idx.numpy(),
                                                input_shape))


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        args = (stride, padding, dilation, groups)
        y = fastconv.conv2d(_numpy(x, "input", "conv2d"), _numpy(w, "weight", "conv2d"),
                            None if b is None else _numpy(b, "bias", "conv2d"), *args)
        ctx.save_for_backward(x, w)
        ctx.args, ctx.has_bias = args, b is not None
        return _tensor(y)

    @staticmethod
    def backward(ctx, grad_y):
        x, w = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: record the backward so it can be differentiated
            gx, gw, gb = _Conv2dBackward.apply(grad_y, x, w, ctx.has_bias, *ctx.args)
        else:  # first order: straight to fastconv, nothing recorded
            gx, gw, gb = _conv_backward(grad_y, x, w, ctx.has_bias, ctx.args)
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


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d on fastconv's kernels, differentiable (any order) in input, weight, bias."""
    return _Conv2d.apply(input, weight, bias, stride, padding, dilation, groups)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool2d on fastconv's kernels; indices as torch's (int64, per plane); any order.
    Without return_indices, when no gradient can flow back (torch.no_grad(), inference_mode, or an
    input that does not require grad), the indices are neither computed nor stored."""
    if not return_indices and not (input.requires_grad and torch.is_grad_enabled()):
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
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d (same constructor) computed by fastconv."""

    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, self.return_indices)


@dataclass
class PatchReport:
    swapped: list = field(default_factory=list)   # (module name, torch class)
    skipped: list = field(default_factory=list)   # (module name, reason)

    def __str__(self) -> str:
        lines = [f"fastconv.torch.patch: {len(self.swapped)} swapped, {len(self.skipped)} left on torch"]
        lines += [f"  swapped  {name or '<model>'}: {kind}" for name, kind in self.swapped]
        lines += [f"  skipped  {name or '<model>'}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def _patch_refusal(module) -> str | None:
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} (fastconv pads with zeros only)"
    for p in module.parameters(recurse=False):
        reason = _why_not(p)
        if reason:
            return f"parameters on a {reason}"
    return None


def patch(model: nn.Module) -> nn.Module:
    """Make every nn.Conv2d / nn.MaxPool2d of model (and model itself) run on fastconv, in place.

    The modules keep their identity, parameters, hooks and state dicts (only their class changes,
    to the fastconv subclass), so optimizers built before patching keep working.  Modules fastconv
    cannot serve stay on torch; ``model.fastconv_patch`` (a PatchReport) lists both."""
    report = PatchReport()
    for name, module in model.named_modules():
        if type(module) in (nn.Conv2d, nn.MaxPool2d):
            reason = _patch_refusal(module)
            if reason:
                report.skipped.append((name, reason))
                continue
            report.swapped.append((name, type(module).__name__))
            module.__class__ = Conv2d if type(module) is nn.Conv2d else MaxPool2d
        elif isinstance(module, (nn.Conv2d, nn.MaxPool2d)) and not isinstance(module, (Conv2d, MaxPool2d)):
            report.skipped.append((name, f"{type(module).__name__} subclasses torch's layer; left as is"))
    model.fastconv_patch = report
    return model
