"""fastconv.torch: autograd functions checked by torch.autograd.gradcheck, modules and patch()
against the native layers, state dicts both ways, and the optional-dependency contract."""
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
