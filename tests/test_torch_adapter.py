"""fastconv.torch: autograd functions checked by torch.autograd.gradcheck, modules and patch()
against the native layers, state dicts both ways, and the optional-dependency contract."""
import contextlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
import fastconv.torch as fct  # noqa: E402

nn, F = torch.nn, torch.nn.functional

CONV_ARGS = [dict(), dict(stride=2, padding=1), dict(padding=(2, 0), dilation=(1, 2)), dict(groups=2, padding=1),
             dict(padding="same", dilation=2), dict(stride=(1, 2), padding="valid")]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("args", CONV_ARGS, ids=str)
def test_conv2d_gradcheck(args, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(6, 4 // args.get("groups", 1), 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    conv_args = (args.get("stride", 1), args.get("padding", 0), args.get("dilation", 1), args.get("groups", 1))
    assert torch.autograd.gradcheck(lambda *t: fct.conv2d(*t, *conv_args), (x, w, b))
    torch.testing.assert_close(fct.conv2d(x, w, b, *conv_args), F.conv2d(x, w, b, *conv_args))


@pytest.mark.parametrize("args", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                  dict(kernel_size=(3, 2), stride=1, dilation=(2, 1), ceil_mode=True)], ids=str)
def test_max_pool2d_gradcheck(args):
    # distinct values: gradcheck's finite differences must not move the argmax
    x = torch.randperm(2 * 3 * 9 * 8, generator=torch.Generator().manual_seed(1)).double().reshape(2, 3, 9, 8)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: fct.max_pool2d(t, **args), (x,))
    y, idx = fct.max_pool2d(x, **args, return_indices=True)
    ty, tidx = F.max_pool2d(x, **args, return_indices=True)
    torch.testing.assert_close(y, ty)
    assert torch.equal(idx, tidx)


GRADGRAD_ARGS = [dict(), dict(stride=2, padding=1), dict(dilation=2), dict(groups=2, padding=1),
                 dict(padding="same")]


def _conv_inputs(groups=1, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 7, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(6, 4 // groups, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True)
    return x, w, b


def _distinct(*shape, seed=1):
    # distinct values: no ties, and finite differences cannot move the argmax
    n = torch.Size(shape).numel()
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).double().reshape(shape).requires_grad_()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("args", GRADGRAD_ARGS, ids=str)
def test_conv2d_gradgradcheck(args, bias):
    x, w, b = _conv_inputs(args.get("groups", 1))
    inputs = (x, w, b) if bias else (x, w)
    assert torch.autograd.gradgradcheck(lambda *t: fct.conv2d(*t, **args), inputs)


@pytest.mark.parametrize("args", [dict(kernel_size=3, stride=2, padding=1),
                                  dict(kernel_size=(3, 2), stride=1, dilation=(2, 1), ceil_mode=True)], ids=str)
def test_max_pool2d_gradgradcheck(args):
    assert torch.autograd.gradgradcheck(lambda t: fct.max_pool2d(t, **args), (_distinct(2, 3, 9, 8),))


def _derivatives(f, inputs, order):
    """The first `order` derivatives of a scalar built from f(*inputs), each taken of a nonlinear
    function of the previous ones (so every order mixes all inputs), by autograd.grad(create_graph)."""
    out, found = f(*inputs).sin().sum(), []
    for _ in range(order):
        grads = torch.autograd.grad(out, inputs, create_graph=True)
        found.append(grads)
        out = sum(g.sin().sum() for g in grads)
    return found


@pytest.mark.parametrize("args", GRADGRAD_ARGS, ids=str)
def test_conv2d_second_and_third_derivatives_match_native(args):
    # the double backward is built of fct.conv2d and itself, so every order runs on fastconv
    inputs = _conv_inputs(args.get("groups", 1))
    ours = _derivatives(lambda *t: fct.conv2d(*t, **args), inputs, 3)
    native = _derivatives(lambda *t: F.conv2d(*t, **args), inputs, 3)
    for order, (got, want) in enumerate(zip(ours, native), 1):
        for name, a, e in zip("xwb", got, want):
            torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11 * e.abs().max().item(), msg=f"{order} {name}")


@pytest.mark.parametrize("args", [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2)], ids=str)
def test_max_pool2d_second_and_third_derivatives_match_native(args):
    x = _distinct(2, 3, 9, 8)
    scale = lambda t: t / 100  # keeps sin() away from saturation: non-trivial derivatives
    ours = _derivatives(lambda t: fct.max_pool2d(scale(t), **args), (x,), 3)
    native = _derivatives(lambda t: F.max_pool2d(scale(t), **args), (x,), 3)
    for order, (got, want) in enumerate(zip(ours, native), 1):
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-14, msg=f"order {order}")


def test_first_order_backward_does_not_build_the_differentiable_path(monkeypatch):
    # plain .backward() must go straight to fastconv, without the double-backward Functions' graph
    def refuse(*_):
        raise AssertionError("double-backward path taken without create_graph")
    monkeypatch.setattr(fct._Conv2dBackward, "apply", refuse)
    monkeypatch.setattr(fct._MaxPool2dBackward, "apply", refuse)
    x, w, b = _conv_inputs()
    fct.max_pool2d(fct.conv2d(x, w, b, padding=1), 2).sum().backward()
    assert x.grad is not None and w.grad is not None and b.grad is not None
    assert not x.grad.requires_grad


def test_backward_computes_only_the_gradients_autograd_wants(monkeypatch):
    """A network's first layer: its input (the images) needs no gradient, and computing one cost
    ResNet-18's conv1 about half of its backward.  Frozen weights likewise."""
    import fastconv.api as api
    asked = []
    real = api.conv2d_grads
    monkeypatch.setattr(api, "conv2d_grads", lambda *a, **k: asked.append(
        (k["grad_input"], k["grad_weight"], k["bias"])) or real(*a, **k))
    x, w, b = _conv_inputs()
    for x_grad, w_grad in [(False, True), (True, False)]:
        xs, ws, bs = (t.detach().requires_grad_(g) for t, g in ((x, x_grad), (w, w_grad), (b, True)))
        fct.conv2d(xs, ws, bs, padding=1).square().sum().backward()
        xn, wn, bn = (t.detach().requires_grad_(g) for t, g in ((x, x_grad), (w, w_grad), (b, True)))
        F.conv2d(xn, wn, bn, padding=1).square().sum().backward()
        for mine, native in ((xs, xn), (ws, wn), (bs, bn)):
            assert (mine.grad is None) == (native.grad is None)
            if native.grad is not None:
                torch.testing.assert_close(mine.grad, native.grad)
    assert asked == [(False, True, True), (True, False, True)]


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "input without grad"])
def test_inference_pools_compute_no_indices(mode, monkeypatch):
    # Where no gradient can flow back, max_pool2d asks fastconv for the values alone (the kernels
    # then neither compute nor store indices) and still matches native torch.
    asked = []
    real = fct.fastconv.max_pool2d
    monkeypatch.setattr(fct.fastconv, "max_pool2d", lambda *a, **k: asked.append(k["return_indices"]) or real(*a, **k))
    x = torch.randn(2, 3, 11, 10, requires_grad=mode != "input without grad")
    scope = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode, contextlib.nullcontext)
    with scope():
        y = fct.max_pool2d(x, 3, 2, 1, ceil_mode=True)
        with_idx = fct.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
        assert not y.requires_grad
        torch.testing.assert_close(y, F.max_pool2d(x, 3, 2, 1, ceil_mode=True), rtol=0, atol=0)
    assert asked == [False, True]  # indices only where the caller asked for them
    torch.testing.assert_close(with_idx[1], F.max_pool2d(x.detach(), 3, 2, 1, ceil_mode=True, return_indices=True)[1])
    # with a graph to record, the indices are kept for the backward
    if mode != "input without grad":
        fct.max_pool2d(x, 3, 2, 1).sum().backward()
        assert asked[-1] is True and x.grad is not None


def test_hessian_vector_product_through_a_patched_model_matches_native():
    def model():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(3, stride=2, padding=1),
                             nn.Conv2d(4, 4, 3, groups=2, bias=False), nn.Tanh(), nn.Flatten(),
                             nn.Linear(4 * 3 * 3, 2)).double()
    torch.manual_seed(0)
    native = model()
    patched = fct.patch(model())
    patched.load_state_dict(native.state_dict())
    assert len(patched.fastconv_patch.swapped) == 3
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    vs = [torch.randn_like(p) for p in native.parameters()]

    def hvp(m):
        params = list(m.parameters())
        grads = torch.autograd.grad(m(x).square().sum(), params, create_graph=True)
        return torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vs)), params)

    for (name, _), got, want in zip(native.named_parameters(), hvp(patched), hvp(native)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=name)


def test_batch_of_zero_forward_and_backward_match_native():
    # needs the core's N = 0 support (API.md: empty outputs, zero weight and bias gradients)
    x, w, b = _conv_inputs(groups=2, n=0)
    results = []
    for f in (fct, F):
        y = f.max_pool2d(f.conv2d(x, w, b, 1, "same", 1, 2), 3, 2, 1)
        grads = torch.autograd.grad(y.square().sum(), (x, w, b), create_graph=True)
        results.append((y, *grads, *torch.autograd.grad(sum(g.square().sum() for g in grads), (x, w, b))))
    for name, got, want in zip(["y", "gx", "gw", "gb", "ggx", "ggw", "ggb"], *results):
        assert got.shape == want.shape, name
        torch.testing.assert_close(got, want, msg=name)


def _model():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False), nn.ReLU(),
                         nn.Conv2d(8, 4, 3, padding=1, padding_mode="reflect"), nn.MaxPool2d(2, ceil_mode=True),
                         nn.Flatten(), nn.Linear(4 * 3 * 3, 5))


def test_patched_model_matches_native_outputs_and_gradients():
    torch.manual_seed(0)
    native = _model()
    patched = fct.patch(_model())
    patched.load_state_dict(native.state_dict())
    report = patched.fastconv_patch
    assert [name for name, _ in report.swapped] == ["0", "2", "3", "6"]
    assert report.skipped == [("5", "padding_mode='reflect' (fastconv pads with zeros only)")]
    assert isinstance(patched[0], fct.Conv2d) and type(patched[5]) is nn.Conv2d
    x = torch.randn(4, 3, 12, 12)
    for model in (native, patched):
        model.zero_grad()
        model(x).square().sum().backward()
    torch.testing.assert_close(patched(x), native(x), rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(native.named_parameters(), patched.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_patched_inference_plans_each_input_shape_and_follows_the_dispatcher(request):
    import copy
    torch.manual_seed(3)
    native = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1, bias=False)).eval()
    patched = fct.patch(copy.deepcopy(native))

    def check(side):
        x = torch.randn(2, 3, side, side)
        with torch.no_grad():
            torch.testing.assert_close(patched(x), native(x), rtol=1e-5, atol=1e-5)
    check(9)
    plan = patched[0]._fastconv_plan
    check(9)
    assert patched[0]._fastconv_plan is plan and plan.x_shape == (2, 3, 9, 9)
    check(7)
    assert patched[0]._fastconv_plan.x_shape == (2, 3, 7, 7)
    ran, uninstall = request.getfixturevalue("spy_forward")
    check(9)
    assert len(ran) == 2 and patched[2]._fastconv_plan.kernel.name == "c.spy"  # both layers on the new list
    uninstall()
    check(9)
    assert len(ran) == 2 and patched[0]._fastconv_plan.kernel.name != "c.spy"
    patched[0].padding = native[0].padding = (2, 0)  # a hyper-parameter changed: planned anew
    check(9)
    x = torch.randn(1, 3, 9, 9, requires_grad=True)  # gradients wanted: autograd's path, as before
    patched(x).sum().backward()
    native_x = x.detach().clone().requires_grad_(True)
    native(native_x).sum().backward()
    torch.testing.assert_close(x.grad, native_x.grad, rtol=1e-5, atol=1e-5)


def test_patch_keeps_parameters_so_optimizers_still_work():
    model = _model()
    params = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = params[0].detach().clone()
    fct.patch(model)
    assert list(model.parameters()) == params  # the very same Parameter objects
    model(torch.randn(2, 3, 12, 12)).sum().backward()
    opt.step()
    assert not torch.equal(params[0], before)


def test_patch_stores_channels_last_weights_contiguously_and_matches_native():
    # fastconv's kernels read OIHW: a channels_last weight would be copied on every call, so patch
    # stores it contiguously once, as model.to(memory_format=torch.contiguous_format) would
    torch.manual_seed(0)
    native = _model().to(memory_format=torch.channels_last)
    model = _model().to(memory_format=torch.channels_last)
    model.load_state_dict(native.state_dict())
    params = list(model.parameters())
    values = [p.detach().clone() for p in params]
    model(torch.randn(1, 3, 12, 12)).sum().backward()  # a grad kept in the old layout
    assert not model[0].weight.grad.is_contiguous()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fct.patch(model)
    report = model.fastconv_patch
    assert report.relaid == [("0", "channels_last"), ("3", "channels_last")]  # "5" stays on torch as it is
    assert "relaid   0: weight was channels_last" in str(report)
    assert list(model.parameters()) == params
    for p, v in zip(params, values):
        assert torch.equal(p, v)
    assert model[0].weight.is_contiguous() and model[0].weight.grad.is_contiguous()
    assert model[5].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    for m in (native, model):
        m.zero_grad()
        m(x).square().sum().backward()
    torch.testing.assert_close(model(x), native(x), rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(native.named_parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)
    opt.step()  # the optimizer built before patch still updates the relaid weights
    assert not torch.equal(params[0], values[0])
    assert fct.patch(model).fastconv_patch.relaid == []  # patching again: nothing left to relay


def test_state_dicts_load_both_ways():
    native = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    ours = fct.Conv2d(3, 5, 3, stride=2, padding=1)
    ours.load_state_dict(native.state_dict())
    x = torch.randn(1, 3, 9, 9)
    torch.testing.assert_close(ours(x), native(x), rtol=1e-5, atol=1e-6)
    again = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    again.load_state_dict(ours.state_dict())
    torch.testing.assert_close(again(x), native(x))
    assert fct.MaxPool2d(3, 2, 1, return_indices=True)(x)[1].dtype == torch.int64


def test_refusals_are_clear():
    with pytest.raises(ValueError, match="dtype torch.float16"):
        fct.conv2d(torch.zeros(1, 1, 3, 3, dtype=torch.float16), torch.zeros(1, 1, 1, 1, dtype=torch.float16))
    with pytest.raises(ValueError, match="padding_mode='circular'"):
        fct.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    half = fct.patch(nn.Sequential(nn.Conv2d(1, 1, 3).half()))
    assert "float16" in half.fastconv_patch.skipped[0][1]


def test_fastconv_never_imports_torch_and_the_adapter_says_what_is_missing(tmp_path):
    code = ("import sys, fastconv\nassert 'torch' not in sys.modules\n"
            "sys.modules['torch'] = None\n"
            "try:\n    import fastconv.torch\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert "pip install fastconv[torch]" in out.stdout, out.stderr


def test_training_calls_tell_the_dispatcher_their_weights_change(monkeypatch):
    # weights that get gradients change every step: fastconv.common.config.WEIGHTS_VARY is set for
    # their forward and backward calls (the dispatcher keeps that case apart), not otherwise
    import fastconv
    from fastconv import api
    from fastconv.common import config
    seen = []
    for module, name, shown in ((fastconv, "conv2d", "conv2d"), (api, "run_plan", "conv2d"),  # planned: no_grad
                                (api, "conv2d_grads", "conv2d_backward")):
        inner = getattr(module, name)

        def record(*args, _inner=inner, _name=shown, **kwargs):
            seen.append((_name, config.WEIGHTS_VARY.get()))
            return _inner(*args, **kwargs)
        monkeypatch.setattr(module, name, record)
    conv = fct.patch(nn.Sequential(nn.Conv2d(2, 3, 3))).double()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    conv(x).sum().backward()
    assert seen == [("conv2d", True), ("conv2d_backward", True)]
    seen.clear()
    with torch.no_grad():
        conv(x)
    conv[0].weight.requires_grad_(False)  # frozen weights (fine-tuning the rest)
    conv(x.requires_grad_(True)).sum().backward()
    assert seen == [("conv2d", False), ("conv2d", False), ("conv2d_backward", False)]
    assert config.WEIGHTS_VARY.get() is False
