"""Whole networks (fastconv.torch_models, torchvision's definitions) on fastconv against native torch:
patched training (outputs, every gradient, BatchNorm's statistics) and optimize() for inference
(BatchNorm folded, activations fused), including what happens when parameters change afterwards."""
import copy

import pytest

torch = pytest.importorskip("torch")
import fastconv.torch as fct  # noqa: E402
from fastconv.torch_models import INPUT_SIZE, MODELS  # noqa: E402

from conftest import rel_err  # noqa: E402

nn, F = torch.nn, torch.nn.functional

# Small inputs keep the suite fast; each net still runs every layer (VGG's 5 pools need 32 pixels,
# GoogLeNet's ceil-mode pools and ResNet's stride 32 are fine at 64).
SIDE = {"resnet18": 64, "resnet50": 48, "mobilenet_v2": 64, "vgg16": 32, "vgg16_bn": 32, "googlenet": 64}
# max |error| / max |value| of float32 nets tens of layers deep, each layer within its kernel's rtol (<= 5e-5)
OUT_TOL = 2e-4


def _model(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return MODELS[name](num_classes=10, **kwargs)


def _warm_statistics(model, side, steps=2):
    """Running statistics that differ from BatchNorm's (0, 1) start, so folding them is tested."""
    model.train()
    with torch.no_grad():
        for i in range(steps):
            model(torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(100 + i)) * 2 + 0.5)


def test_the_models_are_torchvisions():
    # parameter counts of torchvision 0.28's models at 1000 classes (its docs' tables)
    expected = {"resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872,
                "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "googlenet": 6_624_904}
    for name, count in expected.items():
        assert sum(p.numel() for p in MODELS[name]().parameters()) == count, name
        assert INPUT_SIZE[name] == (3, 224, 224)
    assert sum(p.numel() for p in MODELS["googlenet"](aux_logits=True).parameters()) == 13_004_888


@pytest.mark.parametrize("name", sorted(MODELS))
def test_patched_training_step_matches_native(name):
    # float64: whole nets' gradients are compared to tight bounds only there.  In float32 a
    # kernel's rounding (Winograd F4: ~4e-6 of the largest output) flips ReLU masks and max-pool
    # argmaxes of values near a tie, and one flipped unit moves a gradient by its whole value:
    # ResNet-18 at 64x64, batch 2, only layer1.0.conv2 patched, moved the input's gradient by 5%
    # of its largest element while that conv's own gradients were within 4.2e-6 of the reference
    # on the same data.  float32 is compared on outputs (test_patched_float32_outputs_match_native).
    native = _model(name).double()
    patched = fct.patch(copy.deepcopy(native))
    side = SIDE[name]
    x = torch.randn(2, 3, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([3, 7])
    grads, outs = [], []
    for m in (native, patched):
        m.train()
        torch.manual_seed(5)  # the same dropout masks
        xi = x.clone().requires_grad_(True)
        out = m(xi)
        F.cross_entropy(out, target).backward()
        outs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    assert len(patched.fastconv_patch.swapped) > 0 and not patched.fastconv_patch.skipped
    assert rel_err(outs[1].numpy(), outs[0].numpy()) <= 1e-9
    # scaled by the largest gradient of the net: a conv bias before a BatchNorm has a gradient of
    # rounding noise alone (BatchNorm removes any per-channel constant)
    scale = max(float(g.abs().max()) for g in grads[0])
    for (pname, _), g_native, g_patched in zip([("input", None)] + list(native.named_parameters()), *grads):
        assert float((g_patched - g_native).abs().max()) <= 1e-9 * scale, pname
    for (bname, b_native), b_patched in zip(native.named_buffers(), patched.buffers()):
        if b_native.dtype.is_floating_point:  # statistics (a mean may be all rounding noise, ~1e-17)
            assert float((b_patched - b_native).abs().max()) <= 1e-9 * max(1.0, float(b_native.abs().max())), bname


@pytest.mark.parametrize("name", sorted(MODELS))
def test_patched_float32_outputs_match_native(name):
    native = _model(name)
    patched = fct.patch(copy.deepcopy(native))
    x = torch.randn(2, 3, SIDE[name], SIDE[name], generator=torch.Generator().manual_seed(1))
    for train in (True, False):
        outs = []
        for m in (native, patched):
            m.train(train)
            torch.manual_seed(5)
            with torch.no_grad():
                outs.append(m(x))
        # training mode normalizes by the batch's statistics, over as few as 8 values a channel in
        # the last stages here (2 images of 2x2), which amplifies rounding: ResNet-50 2.0e-4
        assert rel_err(outs[1].numpy(), outs[0].numpy()) <= (1e-3 if train else OUT_TOL), f"train={train}"


# ------------------------------------------------------------------------------------ optimize()

# what optimize folds and fuses, counted by hand from the definitions: every conv of these nets is
# followed by a BatchNorm (VGG-16 has none); a ReLU follows it directly except before a residual add
# (ResNet's second/third conv of a block and its downsample, MobileNet's projections)
FOLDED_FUSED = {"resnet18": (20, 9), "resnet50": (53, 33), "mobilenet_v2": (52, 35), "vgg16": (0, 13),
                "vgg16_bn": (13, 13), "googlenet": (57, 57)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_optimize_matches_the_unoptimized_model(name):
    model = _model(name)
    _warm_statistics(model, SIDE[name])
    model.eval()
    x = torch.randn(2, 3, SIDE[name], SIDE[name], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x)
    fast = fct.optimize(copy.deepcopy(model))
    report = fast.fastconv_optimize
    assert (len(report.folded), len(report.fused)) == FOLDED_FUSED[name]
    assert not report.unfused
    for no_grad in (torch.no_grad, torch.inference_mode):
        with no_grad():
            y = fast(x)
        assert rel_err(y.numpy(), expected.numpy()) <= OUT_TOL
    assert "folded" in str(report) and "fused" in str(report)


def _block(act):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), act, nn.Conv2d(8, 4, 1))


class _Functional(nn.Module):
    """Activations as functions and methods, a BN without affine, and a conv whose output has two users."""

    def __init__(self):
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6, affine=False)
        self.b, self.c = nn.Conv2d(6, 6, 1), nn.Conv2d(6, 6, 3, padding=1, bias=False)

    def forward(self, x):
        x = F.relu6(self.bn_a(self.a(x)))
        x = self.b(x).relu()
        y = self.c(x)
        return F.leaky_relu(y, 0.2) + y  # c's output used twice: nothing to fuse


@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU6(inplace=True), nn.LeakyReLU(0.3)], ids=str)
def test_optimize_fuses_each_activation_module(act):
    model = _block(act)
    _warm_statistics(model, 9)
    model.eval()
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(4)) * 3
    with torch.no_grad():
        expected = model(x)
        fast = fct.optimize(copy.deepcopy(model))
        assert len(fast.fastconv_optimize.folded) == 1 and len(fast.fastconv_optimize.fused) == 1
        assert rel_err(fast(x).numpy(), expected.numpy()) <= 1e-5


def test_optimize_reads_functions_methods_and_leaves_shared_outputs_alone():
    model = _Functional()
    _warm_statistics(model, 9)
    model.eval()
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(5)) * 3
    with torch.no_grad():
        expected = model(x)
        fast = fct.optimize(copy.deepcopy(model))
        report = fast.fastconv_optimize
        assert [c for c, _ in report.folded] == ["a"]
        assert [(c, a) for c, a in report.fused] == [("a", "relu6"), ("b", "relu")]
        assert rel_err(fast(x).numpy(), expected.numpy()) <= 1e-5


def test_optimize_sees_parameters_changed_afterwards():
    model = _block(nn.ReLU())
    _warm_statistics(model, 9)
    model.eval()
    fast = fct.optimize(model)  # shares the model's parameters: nothing copied
    x = torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(6))

    def check():
        with torch.no_grad():
            reference = F.conv2d(F.relu(F.batch_norm(F.conv2d(x, model[0].weight, model[0].bias, padding=1),
                                                     model[1].running_mean, model[1].running_var, model[1].weight,
                                                     model[1].bias, eps=model[1].eps)), model[3].weight, model[3].bias)
            assert rel_err(fast(x).numpy(), reference.numpy()) <= 1e-5

    check()
    with torch.no_grad():
        model[0].weight.mul_(-2)          # an in-place edit of the conv's weight
    check()
    model[1].running_var.add_(3.0)        # a buffer
    check()
    other = _block(nn.ReLU())
    _warm_statistics(other, 9)
    model.load_state_dict(other.state_dict())  # load_state_dict copies into the same tensors
    check()
    model[1].weight = nn.Parameter(torch.full((8,), 0.5))  # a parameter replaced outright
    check()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)  # an optimizer step
    model.train()
    F.mse_loss(model(x), torch.zeros(1, 4, 9, 9)).backward()
    opt.step()
    model.eval()
    check()


def test_fused_layers_plan_each_input_shape_and_follow_the_dispatcher(request):
    # a fused layer decides its call once per input shape (api.Conv2dPlan) and decides again
    # when the dispatcher's choices are void: a new kernel list, thread count or dtype
    import fastconv
    model = _block(nn.ReLU())
    _warm_statistics(model, 9)
    model.eval()
    fast = fct.optimize(copy.deepcopy(model))
    fused = next(m for m in fast.modules() if isinstance(m, fct.FusedConv2d))
    x9, x7 = (torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(s)) for s in (9, 7))

    def check(x):
        with torch.no_grad():
            assert rel_err(fast(x).numpy(), model(x).numpy()) <= 1e-5
    check(x9)
    plan = fused._plan
    check(x9)
    assert fused._plan is plan and plan.x_shape == (1, 3, 9, 9)  # planned once
    check(x7)
    assert fused._plan.x_shape == (1, 3, 7, 7)
    check(x9)
    model[0].padding = fused.conv.padding = (2, 0)  # a hyper-parameter changed: planned anew
    check(x9)
    model[0].padding = fused.conv.padding = (1, 1)
    ran, uninstall = request.getfixturevalue("spy_forward")
    check(x9)
    assert ran and ("relu", 0.0) in ran and fused._plan.kernel.name == "c.spy"  # the new list's kernel ran
    uninstall()
    ran.clear()
    check(x9)
    assert not ran and fused._plan.kernel.name != "c.spy"
    threads = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    try:
        check(x9)
        assert fused._plan.state[1] == 1
    finally:
        fastconv.set_num_threads(threads)
    fast.double()
    model.double()
    check(x9.double())
    assert fused._plan.dtype == "float64"


def test_optimized_model_trains_and_differentiates_as_the_original():
    model = _block(nn.ReLU())
    _warm_statistics(model, 9)
    native = copy.deepcopy(model)
    fast = fct.optimize(model.eval())
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(7), requires_grad=True)
    # eval with gradients wanted (input and parameters): the unfused path, exact gradients
    native.eval()
    for m in (native, fast):
        m.zero_grad()
    xs = [x.detach().clone().requires_grad_(True) for _ in range(2)]
    native(xs[0]).sum().backward()
    fast(xs[1]).sum().backward()
    assert rel_err(xs[1].grad.numpy(), xs[0].grad.numpy()) <= 1e-5
    for a, b in zip(native.parameters(), model.parameters()):
        assert rel_err(b.grad.numpy(), a.grad.numpy()) <= 1e-5
    # training mode: batch statistics and their running updates, as the original
    native.train()
    fast.train()
    with torch.no_grad():
        y_native, y_fast = native(x), fast(x)
    assert rel_err(y_fast.numpy(), y_native.numpy()) <= 1e-5
    assert rel_err(model[1].running_mean.numpy(), native[1].running_mean.numpy()) <= 1e-6


def test_optimize_refuses_training_mode_and_falls_back_when_untraceable():
    with pytest.raises(ValueError, match="model.eval"):
        fct.optimize(_block(nn.ReLU()))

    class Dynamic(nn.Module):  # control flow on a value: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else -self.conv(x)

    model = Dynamic().eval()
    fast = fct.optimize(model)
    assert fast is model and isinstance(model.conv, fct.Conv2d)
    assert "cannot trace" in str(fast.fastconv_optimize)
    x = torch.ones(1, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), F.conv2d(x, model.conv.weight, model.conv.bias))
