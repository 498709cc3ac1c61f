"""fastconv inside other programs: forked workers, empty batches, non-finite weights, foreign byte
orders, huge shapes and hyper-parameters, other libraries' thread settings (issue 12).

Whatever could hang (a forked child in libgomp, a pool window of 2^31 taps, a process aborted by
Numba's workqueue layer) runs in a subprocess with a timeout, so a regression fails instead of
hanging the suite."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv as fc
from fastconv import api, dispatch, reference, registry, threads
from fastconv.common import nonfinite
from fastconv.spec import PARAM_LIMIT, ConvSpec, PoolSpec

from conftest import kernel_params, rel_err

CONV_OPS = ("conv2d.fwd", "conv2d.bwd_data", "conv2d.bwd_weight")


def _run(script: str, tmp_path, timeout: float = 600, env=None) -> subprocess.CompletedProcess:
    """script in a fresh interpreter (cwd away from the checkout: the installed package)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=dict(os.environ, **(env or {})))


def _call(kernel, x, w, gy, *, padding=1, groups=1):
    """kernel's op through the public API, with the kernel named (registry.Op: which function).
    A depthwise kernel given a dense problem runs the depthwise one on the same x (its weights and
    gy repeated from the given ones to (C, 1, kH, kW) and C channels: the kind it serves)."""
    if kernel.family == "depthwise" and groups == 1 and w.shape[1] != 1:
        groups = x.shape[1]
        w, gy = np.resize(w, (groups, 1, *w.shape[2:])), np.resize(gy, (gy.shape[0], groups, *gy.shape[2:]))
    spec = ConvSpec.from_args(x, w, padding=padding, groups=groups)
    call = api.op_call(kernel.op, spec, {"x": x, "w": w, "bias": None, "grad_y": gy}, kernel)
    return registry.OPS[kernel.op].output_of(call())


def _same_pattern(got, want):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))


# ----------------------------------------------------------------------------- 1. fork

FORK_SCRIPT = """
    import multiprocessing as mp, numpy as np, fastconv as fc
    from fastconv import threads

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 20, 20)).astype(np.float32)   # large enough for two threads
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    w_depthwise = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 16, 20, 20)).astype(np.float32)

    def every_kernel(_=None):
        out = {}
        for k in fc.kernels():
            if k.backend == "numpy":
                continue
            pick = dict(backend=k.backend)
            # a depthwise kernel on a depthwise problem, every other kernel on a dense one
            wk, pick["groups"] = (w_depthwise, 16) if k.family == "depthwise" else (w, 1)
            if k.op == "conv2d.fwd":
                out[k.op, k.name] = fc.conv2d(x, wk, padding=1, algo=k.algo, **pick)
            elif k.op == "conv2d.bwd_data":
                out[k.op, k.name] = fc.conv2d_backward(gy, x, wk, padding=1, algo=k.algo, **pick)[0]
            elif k.op == "conv2d.bwd_weight":
                out[k.op, k.name] = fc.conv2d_backward(gy, x, wk, padding=1, weight_algo=k.algo, **pick)[1]
            elif k.op == "maxpool2d.fwd":
                out[k.op, k.name] = fc.max_pool2d(x, 3, 2, 1, backend=k.backend)[1]
            else:
                y, idx = fc.max_pool2d(x, 3, 2, 1)
                out[k.op, k.name] = fc.max_pool2d_backward(y, idx, x.shape, backend=k.backend)
        return out, threads.serial_only

    if __name__ == "__main__":
        {parent}
        ctx = mp.get_context("fork")
        with ctx.Pool(2) as pool:
            results = pool.map(every_kernel, range(2))
        mine = every_kernel()[0]
        for theirs, serial in results:
            assert serial is {serial}, serial
            for key, got in theirs.items():
                want = mine[key]
                assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), key
        print("ok", len(mine))
"""


@pytest.mark.parametrize("parent,serial", [
    ("every_kernel()", True),             # every threaded C and Numba kernel ran before the fork
    ("fc.conv2d(x[:1, :1, :3, :3], w[:1, :1], backend='numba')", True),   # even a tiny Numba one
    ("pass", False),                      # nothing ran: the children keep their threads
], ids=["after-every-kernel", "after-a-tiny-numba-call", "before-any-kernel"])
def test_forked_workers_run_every_kernel(parent, serial, tmp_path):
    """multiprocessing.Pool with fork: libgomp hung the children and Numba's OpenMP layer killed
    them ("fork() called from a process already using GNU OpenMP") before fastconv knew forks."""
    out = _run(FORK_SCRIPT.replace("{parent}", parent).replace("{serial}", str(serial)), tmp_path, timeout=900)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:]
    assert "Terminating" not in out.stderr


def test_torch_dataloader_workers_run_a_patched_model(tmp_path):
    pytest.importorskip("torch")
    script = """
        import torch, fastconv.torch as fct
        from torch import nn

        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 8, 3))
        native = [model(torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(i))) for i in range(4)]
        fct.patch(model)
        model(torch.randn(1, 3, 12, 12))  # the parent runs fastconv's kernels before forking

        class Data(torch.utils.data.Dataset):
            def __len__(self):
                return 4
            def __getitem__(self, i):
                with torch.no_grad():
                    return model(torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(i)))[0]

        if __name__ == "__main__":
            loader = torch.utils.data.DataLoader(Data(), batch_size=1, num_workers=2,
                                                 multiprocessing_context="fork", timeout=300)
            got = [b[0] for b in loader]
            for g, n in zip(got, native):
                assert torch.allclose(g, n[0].detach(), rtol=1e-4, atol=1e-5)
            print("ok", len(got))
    """
    out = _run(script, tmp_path, timeout=900)
    assert out.returncode == 0 and out.stdout.startswith("ok 4"), out.stderr[-3000:]


# ----------------------------------------------------------------------------- 2. batch 0

def test_an_empty_batch_gives_empty_outputs_and_zero_parameter_gradients():
    x = np.zeros((0, 3, 7, 6), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    b = np.ones(4, np.float32)
    y = fc.conv2d(x, w, b, stride=2, padding=1)
    assert y.shape == (0, 4, 4, 3) and y.dtype == np.float32
    gx, gw, gb = fc.conv2d_backward(np.zeros((0, 4, 4, 3), np.float32), x, w, stride=2, padding=1)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, np.zeros_like(w))
    np.testing.assert_array_equal(gb, np.zeros(4, np.float32))
    assert fc.conv2d_backward(np.zeros((0, 4, 4, 3), np.float32), x, w, stride=2, padding=1, bias=False)[2] is None
    y, idx = fc.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    assert y.shape == idx.shape == (0, 3, 4, 4) and idx.dtype == np.int64
    assert fc.max_pool2d_backward(y, idx, x.shape).shape == x.shape
    # nothing is timed for it (explain says so), and every kernel may be named
    assert "N = 0" in fc.explain(x.shape, w.shape, padding=1, rigor="measure").detail
    for k in fc.kernels("conv2d.fwd"):
        if k.family == "depthwise":  # on a depthwise problem, the only kind it serves
            assert fc.conv2d(x, w[:3, :1], padding=1, groups=3, algo=k.algo, backend=k.backend).shape == (0, 3, 7, 6)
        else:
            assert fc.conv2d(x, w, padding=1, algo=k.algo, backend=k.backend).shape == (0, 4, 7, 6)


@pytest.mark.parametrize("shape", [(1, 0, 5, 5), (2, 3, 0, 5), (2, 3, 5, 0)])
def test_zero_channels_or_an_empty_plane_stays_an_error(shape):
    with pytest.raises(ValueError, match="empty dimension"):
        fc.conv2d(np.zeros(shape, np.float32), np.zeros((2, max(shape[1], 1), 1, 1), np.float32))
    with pytest.raises(ValueError, match="empty dimension"):
        fc.max_pool2d(np.zeros(shape, np.float32), 1)


def test_torch_agrees_on_an_empty_batch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w = torch.zeros(0, 3, 7, 6, requires_grad=True), torch.ones(4, 3, 3, 3, requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    y.sum().backward()
    assert fc.conv2d(x.detach().numpy(), w.detach().numpy(), padding=1).shape == tuple(y.shape)
    np.testing.assert_array_equal(fc.conv2d_backward(np.zeros(tuple(y.shape), np.float32), x.detach().numpy(),
                                                     w.detach().numpy(), padding=1)[1], w.grad.numpy())
    assert fc.max_pool2d(x.detach().numpy(), 2)[0].shape == tuple(F.max_pool2d(x, 2).shape)


# ----------------------------------------------------------------------------- 3. non-finite weights

@pytest.mark.parametrize("kernel", kernel_params("conv2d.fwd") + kernel_params("conv2d.bwd_data")
                         + kernel_params("conv2d.bwd_weight"))
@pytest.mark.parametrize("bad,tap", [(np.inf, (1, 1)), (-np.inf, (0, 0)), (np.nan, (0, 0)), (np.nan, (2, 1))],
                         ids=["+inf-centre", "-inf-corner", "nan-corner", "nan-edge"])
def test_non_finite_weights_land_where_the_reference_puts_them(kernel, bad, tap):
    """(For the weight gradient, non-finite inputs.)  Winograd mixed an inf weight into NaN across its channel (PyTorch: +inf in the 64 outputs);
    direct and Winograd grad of input multiplied a corner NaN by the padding (36 NaN, PyTorch 25)."""
    rng = np.random.default_rng(7)
    # a depthwise kernel on a depthwise problem with a channel multiplier of 2, the others dense
    groups, c_out, c = (4, 8, 0) if kernel.family == "depthwise" else (1, 5, 1)
    x = np.abs(rng.standard_normal((2, 4, 8, 8))) + 0.1   # positive: an inf weight stays inf
    w = rng.standard_normal((c_out, 4 // groups, 3, 3))
    gy = np.abs(rng.standard_normal((2, c_out, 8, 8))) + 0.1
    # the weight gradient does not read the weights: there the input holds the value
    (x[1, 2] if kernel.op == "conv2d.bwd_weight" else w[2, c])[tap] = bad
    spec = ConvSpec.from_args(x, w, None, 1, 1, groups=groups)
    reason = kernel.refusal(spec)
    assert reason is None, reason
    for dtype in ("float32", "float64"):
        xs, ws, gys = x.astype(dtype), w.astype(dtype), gy.astype(dtype)
        got = _call(kernel, xs, ws, gys, groups=groups)
        want = _call(fc.kernels(kernel.op)[-1], xs, ws, gys, groups=groups)   # the reference
        assert np.isnan(want).any() or np.isinf(want).any()
        _same_pattern(got, want)
        ok = np.isfinite(want)
        assert rel_err(got[ok], want[ok]) <= kernel.rtol[dtype]


@pytest.mark.parametrize("kernel", [k for k in kernel_params("conv2d.bwd_weight") if "depthwise" in k.id])
@pytest.mark.parametrize("bad", [np.inf, np.nan], ids=["inf", "nan"])
@pytest.mark.parametrize("col", [0, 4, 5, 6])
def test_depthwise_weight_gradient_keeps_inputs_past_the_rows_out(kernel, bad, col):
    """The depthwise weight gradient reads each tap's inputs through a flat run of the copy, whose
    columns past out_w hold inputs that other taps read (Numba sums whole runs against gy padded
    with zeros): an inf or NaN there must reach only the taps that read it, as in the reference."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 7))   # unpadded 3x3: out_w 5, the copy's rows 7 wide
    x[1, 2, 3, col] = bad
    w = rng.standard_normal((6, 1, 3, 3))   # multiplier 2
    gy = rng.standard_normal((2, 6, 5, 5))
    for dtype in ("float32", "float64"):
        xs, ws, gys = x.astype(dtype), w.astype(dtype), gy.astype(dtype)
        got = _call(kernel, xs, ws, gys, padding=0, groups=3)
        want = _call(fc.kernels("conv2d.bwd_weight")[-1], xs, ws, gys, padding=0, groups=3)
        assert not np.isfinite(want[4:]).all() and np.isfinite(want[:4]).all()
        _same_pattern(got, want)
        ok = np.isfinite(want)
        assert rel_err(got[ok], want[ok]) <= kernel.rtol[dtype]


@pytest.mark.parametrize("kernel", [k for k in kernel_params("conv2d.bwd_weight") if "winograd" in k.id])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan], ids=["+inf", "-inf", "nan"])
def test_winograd_weight_gradient_reroutes_non_finite_output_gradients(kernel, bad):
    """The Winograd weight gradient checks its result, not its inputs (common/nonfinite.py): an inf
    or NaN in grad_y (the array the test above leaves finite) must still reach grad_w as in the
    reference, through im2col."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, 9, 9))
    w = rng.standard_normal((6, 4, 3, 3))
    gy = rng.standard_normal((1, 6, 9, 9))
    gy[0, 2, 8, 0] = bad   # a corner of the last tile row, where F4's tiles reach past the output
    before = nonfinite.REROUTED[kernel.name]
    for dtype in ("float32", "float64"):
        xs, ws, gys = x.astype(dtype), w.astype(dtype), gy.astype(dtype)
        got = _call(kernel, xs, ws, gys)
        want = _call(fc.kernels("conv2d.bwd_weight")[-1], xs, ws, gys)
        assert not np.isfinite(want[2]).all() and np.isfinite(np.delete(want, 2, axis=0)).all()
        _same_pattern(got, want)
    assert nonfinite.REROUTED[kernel.name] == before + 2


def test_explain_names_where_non_finite_calls_go():
    before = nonfinite.REROUTED["c.winograd_f4k3"] + nonfinite.REROUTED["numba.winograd_f4k3"]
    x = np.ones((1, 64, 8, 8), np.float32)
    w = np.ones((64, 64, 3, 3), np.float32)
    w[0, 0, 1, 1] = np.inf
    for backend in ("c", "numba"):
        y = fc.conv2d(x, w, padding=1, algo="winograd_f4k3", backend=backend)
        assert np.isposinf(y[0, 0]).all() and np.isfinite(y[0, 1:]).all()
    assert nonfinite.REROUTED["c.winograd_f4k3"] + nonfinite.REROUTED["numba.winograd_f4k3"] == before + 2
    plan = fc.explain(x.shape, w.shape, padding=1, algo="winograd_f4k3", backend="c", rigor="estimate")
    assert "inf/NaN calls go to c.im2col" in str(plan)
    assert "so far" in plan.candidate("c.winograd_f4k3").note


def test_torch_agrees_with_non_finite_weights_in_both_passes():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 6, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    w[1, 0, 0, 0] = np.nan
    gy = rng.standard_normal((1, 3, 6, 6))
    xt = torch.from_numpy(x).requires_grad_()
    F.conv2d(xt, torch.from_numpy(w), padding=1).backward(torch.from_numpy(gy))
    assert int(xt.grad.isnan().sum()) == 25
    # (dense kernels: the depthwise ones' patterns are checked against the reference's above)
    dense = lambda op: [k for k in fc.kernels(op) if k.family != "depthwise"]  # noqa: E731
    for k in dense("conv2d.bwd_data"):
        _same_pattern(_call(k, x, w, gy), xt.grad.numpy())
    w[1, 0, 0, 0] = np.inf
    want = F.conv2d(torch.from_numpy(np.abs(x)), torch.from_numpy(w), padding=1).numpy()
    for k in dense("conv2d.fwd"):
        _same_pattern(_call(k, np.abs(x), w, gy), want)


# ----------------------------------------------------------------------------- 4. byte order

@pytest.mark.parametrize("kernel", kernel_params("conv2d.fwd") + kernel_params("conv2d.bwd_data")
                         + kernel_params("conv2d.bwd_weight"))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_foreign_byte_order_is_read_as_numbers(kernel, dtype):
    """'>f4' passes dtype.name == 'float32': the C kernels read its bytes as native (garbage) and
    the Numba ones raised numba's TypingError.  The api converts, as ascontiguousarray does layout."""
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((2, 4, 7, 8)).astype(dtype), rng.standard_normal((3, 4, 3, 3)).astype(dtype)
    gy = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
    want = _call(kernel, x, w, gy)
    swapped = [a.astype(a.dtype.newbyteorder(">")) for a in (x, w, gy)]
    got = _call(kernel, *swapped)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, want)
    for a, s in zip((x, w, gy), swapped):  # inputs untouched
        np.testing.assert_array_equal(a, s)


def test_foreign_byte_order_pool_and_dtype_variants():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    y, idx = fc.max_pool2d(x, 3, 2, 1)
    for backend in ("c", "numba"):
        y2, idx2 = fc.max_pool2d(x.astype(">f4"), 3, 2, 1, backend=backend)
        np.testing.assert_array_equal(y2, y)
        np.testing.assert_array_equal(idx2, idx)
        gx = fc.max_pool2d_backward(y.astype(">f4"), idx.astype(">i8"), x.shape, backend=backend)
        np.testing.assert_array_equal(gx, fc.max_pool2d_backward(y, idx, x.shape, backend=backend))
    # a descriptor with metadata, and an unaligned buffer: both float32 by name
    meta = x.view(np.dtype(np.float32, metadata={"unit": "V"}))
    np.testing.assert_array_equal(fc.max_pool2d(meta, 3, 2, 1)[0], y)
    raw = np.empty(x.nbytes + 1, np.uint8)[1:].view(np.float32).reshape(x.shape)
    raw[...] = x
    assert not raw.flags.aligned
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    for k in fc.kernels("conv2d.fwd"):
        wk, groups = (w[:3, :1], 3) if k.family == "depthwise" else (w, 1)  # the kind it serves
        np.testing.assert_array_equal(fc.conv2d(raw, wk, padding=1, groups=groups, algo=k.algo, backend=k.backend),
                                      fc.conv2d(x, wk, padding=1, groups=groups, algo=k.algo, backend=k.backend))


# ----------------------------------------------------------------------------- 5. huge problems

def test_auto_knows_the_gemm_limits_before_it_chooses():
    """1x1 conv of a 46341x46341 plane: im2col's GEMM has 46341^2 > 2^31 - 1 columns.  The
    heuristic picked c.im2col, which then refused at run time; now eligibility refuses it."""
    spec = ConvSpec.from_shapes((1, 1, 46341, 46341), (1, 1, 1, 1))
    for op in CONV_OPS:
        ok, refused = dispatch.eligible(op, spec, caller="test")
        assert ok and all(k.family != "im2col" for k in ok)
        assert any("im2col" in r and "out_h*out_w=2147488281" in r for r in refused)
        assert dispatch.heuristic(op, spec, ok).family == "direct"


# ----------------------------------------------------------------------------- 7. hyper-parameters

@pytest.mark.parametrize("kwargs,name", [
    (dict(stride=2**63), "stride"), (dict(stride=(1, PARAM_LIMIT + 1)), "stride"),
    (dict(padding=2**40), "padding"), (dict(dilation=2**62), "dilation"), (dict(padding=(2**64, 0)), "padding"),
])
def test_absurd_conv_hyper_parameters_are_refused_at_the_spec(kwargs, name):
    x, w = np.zeros((1, 2, 5, 5), np.float32), np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=name):
        fc.conv2d(x, w, **kwargs)
    with pytest.raises(ValueError, match=name):
        fc.explain(x.shape, w.shape, **kwargs)


@pytest.mark.parametrize("kwargs,name", [
    (dict(kernel_size=2**40, padding=2**39), "kernel_size"), (dict(kernel_size=2, stride=2**63), "stride"),
    (dict(kernel_size=3, dilation=2**31), "dilation"),
])
def test_absurd_pool_hyper_parameters_are_refused_at_the_spec(kwargs, name):
    with pytest.raises(ValueError, match=name):
        fc.max_pool2d(np.zeros((1, 1, 4, 4), np.float32), **kwargs)


@pytest.mark.parametrize("kwargs,name", [(dict(ceil_mode="yes"), "ceil_mode"), (dict(return_indices=1), "return_indices")])
def test_pool_flags_must_be_bools(kwargs, name):
    with pytest.raises(TypeError, match=name):
        fc.max_pool2d(np.zeros((1, 1, 4, 4), np.float32), 2, **kwargs)


def test_the_largest_pool_window_runs_in_time_of_its_inside_taps(tmp_path):
    """A 2^31 - 1 window half in padding on a 1x1 input: the kernels walked every tap (and
    stepped the start through the padding one dilation at a time), about 1.5 hours for a 2^40
    window; the taps inside are computed now.  A subprocess with a timeout, so a regression fails."""
    script = f"""
        import numpy as np, fastconv as fc
        x = np.array([[[[3.0, -1.0, 2.0]]]], np.float32)
        for backend in ("c", "numba"):
            y, idx = fc.max_pool2d(x, ({PARAM_LIMIT}, 2), 1, ({PARAM_LIMIT // 2}, 1), backend=backend)
            assert y.shape == (1, 1, 1, 4), y.shape
            assert y.ravel().tolist() == [3.0, 3.0, 2.0, 2.0] and idx.ravel().tolist() == [0, 0, 2, 2], (y, idx)
            y, idx = fc.max_pool2d(x, ({PARAM_LIMIT}, 1), {PARAM_LIMIT}, ({PARAM_LIMIT // 2}, 0), backend=backend)
            assert y.ravel().tolist() == [3.0] and idx.ravel().tolist() == [0], (y, idx)
        print("ok")
    """
    out = _run(script, tmp_path, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_huge_windows_match_the_reference_where_it_can_run():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 5, 7)).astype(np.float32)
    for args in [((9, 4), 1, (4, 2), 1), ((5, 13), (2, 3), (2, 6), (1, 1)), ((3, 2), 1, 1, (2, 5))]:
        want = reference.max_pool2d(x, *args)
        for backend in ("c", "numba"):
            got = fc.max_pool2d(x, *args, backend=backend)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


# ----------------------------------------------------------------------------- 9. threading layer

def test_concurrent_callers_under_the_workqueue_layer(tmp_path):
    """A user's NUMBA_THREADING_LAYER=workqueue aborted the process under concurrent callers;
    fastconv serializes its parallel launches under that layer."""
    script = """
        import threading, numpy as np, numba, fastconv as fc
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 16, 20, 20)).astype(np.float32)
        w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
        want = fc.reference.conv2d(x, w, padding=1)
        errors = []
        def work(algo):
            try:
                for _ in range(10):
                    y = fc.conv2d(x, w, padding=1, algo=algo, backend="numba")
                    assert np.abs(y - want).max() <= 1e-4 * np.abs(want).max()
            except BaseException as exc:
                errors.append(repr(exc))
        for a in ("direct", "im2col"):
            fc.conv2d(x, w, padding=1, algo=a, backend="numba")   # compile first
        ts = [threading.Thread(target=work, args=(a,)) for a in ("direct", "im2col", "direct", "im2col")]
        [t.start() for t in ts]; [t.join() for t in ts]
        print(numba.threading_layer(), len(errors), errors[:1])
    """
    out = _run(script, tmp_path, env={"NUMBA_THREADING_LAYER": "workqueue"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:2] == ["workqueue", "0"], out.stdout


# ----------------------------------------------------------------------------- 11. others' thread limits

def test_another_librarys_blas_limit_does_not_reach_inside_the_kernels(tmp_path):
    """threadpoolctl's limit reaches fastconv's private OpenBLAS too: it then ran 2 threads inside
    each OpenMP task (7x slower) and printed "Detect OpenMP Loop" on every call."""
    pytest.importorskip("threadpoolctl")
    script = """
        import numpy as np, fastconv as fc, threadpoolctl
        from fastconv import threads
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, 64, 14, 14)).astype(np.float32)
        w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
        want = fc.reference.conv2d(x, w, padding=1)
        with threadpoolctl.threadpool_limits(limits=2):
            for backend in ("c", "numba"):
                for _ in range(3):
                    y = fc.conv2d(x, w, padding=1, algo="im2col", backend=backend)
                    assert np.abs(y - want).max() <= 1e-4 * np.abs(want).max()
                assert threads.in_force()["openblas_per_task"] == 1
        print("ok")
    """
    out = _run(script, tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    assert "Detect OpenMP Loop" not in out.stderr + out.stdout


# ----------------------------------------------------------------------------- determinism

# Problems whose tasks split differently at 1 and 2 threads: a batch (the original case), one image
# (im2col and Numba's Winograd then split the GEMMs by output channels or taps), a first layer.
DETERMINISM_PROBLEMS = (((3, 8, 17, 15), (12, 8, 3, 3), 1), ((1, 16, 20, 20), (40, 16, 3, 3), 1),
                        ((1, 32, 14, 14), (128, 32, 3, 3), 1), ((1, 3, 24, 24), (16, 3, 7, 7), 2))
DETERMINISM_KERNELS = [k for op in CONV_OPS + ("maxpool2d.fwd", "maxpool2d.bwd") for k in kernel_params(op)]


def _runs(kernel, counts):
    """kernel's results, run by kernel.run itself, on each of DETERMINISM_PROBLEMS at each thread
    count of counts."""
    rng = np.random.default_rng(9)
    problems = []
    for x_shape, w_shape, stride in DETERMINISM_PROBLEMS:
        if kernel.op.startswith("conv2d"):
            groups = x_shape[1] if kernel.family == "depthwise" else 1  # the kind it serves
            w_shape = (x_shape[1], 1, *w_shape[2:]) if groups > 1 else w_shape
            spec = ConvSpec.from_shapes(x_shape, w_shape, stride, w_shape[2] // 2, 1, groups)
        else:
            spec = PoolSpec.from_shape(x_shape, 3, 1, 1, 1, False, "float32")
            spec = spec.backward_spec() if kernel.op == "maxpool2d.bwd" else spec
        if kernel.why_not(spec) is None:
            problems.append((spec, registry.OPS[kernel.op].arguments(spec, rng)))
    assert problems, f"{kernel.name} serves none of the problems"
    before = fc.get_num_threads()
    results = []
    try:
        for n in counts:
            fc.set_num_threads(n)
            results.append([np.asarray(registry.OPS[kernel.op].output_of(kernel.run(spec, *args)))
                            for spec, args in problems])
    finally:
        fc.set_num_threads(before)
    return results


@pytest.mark.parametrize("kernel", [k for k in DETERMINISM_KERNELS if k.values[0].deterministic])
def test_deterministic_kernels_are_bitwise_reproducible_run_to_run(kernel):
    """At one thread and at the most, twice each (registry: Kernel.deterministic)."""
    counts = sorted({1, threads.max_threads()})
    results = _runs(kernel, counts * 2)
    for first, again in zip(results[:len(counts)], results[len(counts):]):
        for a, b in zip(first, again):
            np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("kernel", [k for k in DETERMINISM_KERNELS if k.values[0].thread_invariant])
def test_thread_invariant_kernels_give_the_same_bits_at_any_thread_count(kernel):
    """registry: Kernel.thread_invariant (im2col and Numba's Winograd GEMMs are split by the thread
    count, and OpenBLAS's entries depend on the shape of the call: they do not promise this)."""
    if threads.max_threads() < 2:
        pytest.skip("one CPU: a single thread count to compare")
    results = _runs(kernel, (1, threads.max_threads(), 1))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(b, a)


# ----------------------------------------------------------------------------- what already held

def test_eight_threads_on_every_kernel_and_op_match_serial_calls(tmp_path):
    """Servers call from many threads: 8 Python threads x every kernel and op, warm and cold, and
    auto while it tunes, give results bitwise equal to serial calls (a subprocess: an abort fails
    the test instead of the session)."""
    script = """
        import threading, numpy as np, fastconv as fc
        fc.set_tuning("measure", budget_s=0.5)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 8, 13, 11)).astype(np.float32)
        w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
        gy = rng.standard_normal((2, 6, 13, 11)).astype(np.float32)
        w_dw, gy_dw = w[:1].reshape(8, 1, 3, 3)[:8], rng.standard_normal((2, 8, 13, 11)).astype(np.float32)
        y, idx = fc.reference.max_pool2d(x, 3, 2, 1)
        calls = {}
        for k in fc.kernels():
            pick = dict(backend=k.backend)
            if k.op.startswith("conv2d"):  # a depthwise kernel on a depthwise problem
                wk, g, pick["groups"] = (w_dw, gy_dw, 8) if k.family == "depthwise" else (w, gy, 1)
            if k.op == "conv2d.fwd":
                calls[k.op, k.name] = lambda a=k.algo, p=pick, wk=wk: fc.conv2d(x, wk, padding=1, algo=a, **p)
            elif k.op == "conv2d.bwd_data":
                calls[k.op, k.name] = lambda a=k.algo, p=pick, wk=wk, g=g: fc.conv2d_backward(g, x, wk, padding=1, algo=a, **p)[0]
            elif k.op == "conv2d.bwd_weight":
                calls[k.op, k.name] = lambda a=k.algo, p=pick, wk=wk, g=g: fc.conv2d_backward(g, x, wk, padding=1, weight_algo=a, **p)[1]
            elif k.op == "maxpool2d.fwd":
                calls[k.op, k.name] = lambda p=pick: np.stack(fc.max_pool2d(x, 3, 2, 1, **p)).astype(np.float64)
            else:
                calls[k.op, k.name] = lambda p=pick: fc.max_pool2d_backward(y, idx, x.shape, **p)
        calls["auto", "conv"] = lambda: fc.conv2d(x[:1], w, padding=1)       # tuned while the others run
        results, errors = {key: [] for key in calls}, []
        def work(seed):
            order = list(calls)
            np.random.default_rng(seed).shuffle(order)
            try:
                for key in order:
                    results[key].append(calls[key]())
            except BaseException as exc:
                errors.append(repr(exc))
        ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
        assert not errors, errors[:2]
        for key, call in calls.items():
            serial = call()
            assert len(results[key]) == 8
            for r in results[key]:
                assert np.array_equal(r, serial, equal_nan=True), key
        print("ok", len(calls))
    """
    out = _run(script, tmp_path, timeout=900, env={"FASTCONV_CACHE_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:]


def test_an_output_too_large_for_memory_fails_fast():
    """Padding 2^19 on a 1x1 input asks for a 4 TiB output: numpy refuses to allocate it."""
    x, w = np.ones((1, 1, 1, 1), np.float32), np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(MemoryError):
        fc.conv2d(x, w, padding=2**19)
    for k in fc.kernels("conv2d.fwd"):
        if k.refusal(ConvSpec.from_args(x, w, None, 1, 2**19)) is None:
            with pytest.raises(MemoryError):
                fc.conv2d(x, w, padding=2**19, algo=k.algo, backend=k.backend)


def test_a_plane_of_more_than_2_to_the_31_elements_is_indexed_in_64_bits():
    """Indices past 2^31 in one (H, W) plane (np.zeros maps untouched pages lazily: the 8.6 GB
    input costs only the pages written; the strided windows read a few taps each)."""
    W = 2**30 + 3
    x = np.zeros((1, 1, 2, W), np.float32)
    far = 1024 * 2**20 + 2
    x[0, 0, 1, far] = 5.0
    for backend in ("c", "numba"):
        y, idx = fc.max_pool2d(x, (2, 3), (2, 2**20), backend=backend)
        assert y.shape == (1, 1, 1, 1025)
        assert y[0, 0, 0, -1] == 5.0 and idx[0, 0, 0, -1] == W + far > 2**31
        assert idx[0, 0, 0, 0] == 0 and (y[0, 0, 0, :-1] == 0).all()
